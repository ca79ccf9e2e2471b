"""The loss-composition contract.

A training objective is a mix of *terms*. Each term is an ``nn.Module`` built from one
``conf/loss/<name>.yaml`` and carries its own ``weight`` and ``start_step``. The trainer keeps
the terms in an ``nn.ModuleDict`` keyed by the config name, calls every active term with one
:class:`LossInputs`, and sums ``weight * value``. It never looks at what a term is, so adding a
loss means one ``.py`` and one ``.yaml``.

A term reads what it needs from :class:`LossInputs` (the SR pyramid, GT, LQ, the degradation
and its drawn parameters, the generator, the discriminator, the step). A term that needs a
discriminator sets ``needs_discriminator = True``, owns the discriminator network as its
``discriminator`` attribute and implements :meth:`LossTerm.discriminator_loss`; the trainer then
switches to GAN training with a second optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError


@dataclass
class LossOutput:
    """A term's value plus diagnostics to log (e.g. ``lr_consistency_psnr``), all detached."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class LossInputs:
    """Everything a term may look at for one training step.

    Attributes:
        sr: final SR output ``(B, C, sH, sW)``.
        gt: ground truth HR ``(B, C, sH, sW)``.
        lq: degraded input ``(B, C, H, W)``.
        sr_levels: every output of the generator, coarse to fine (``[sr]`` for one-scale models).
        step: training iteration (generator updates so far).
        scale: SR scale.
        degradation: the operator that made ``lq`` from ``gt``.
        degradation_params: the per-sample random parameters it drew for this batch (``None``
            when the LQ was read from disk, e.g. paired data).
        generator: callable ``lq -> sr`` (the network being trained), for terms that run it again.
        discriminator: the discriminator of the adversarial term, when there is one.
        extra: free-form values a term may publish for others within the step.
    """

    sr: Tensor
    gt: Tensor
    lq: Tensor
    sr_levels: list[Tensor]
    step: int = 0
    scale: int = 1
    degradation: nn.Module | None = None
    degradation_params: dict[str, Tensor] | None = None
    generator: Callable[[Tensor], Any] | None = None
    discriminator: nn.Module | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def detached(self) -> LossInputs:
        """A copy whose SR outputs carry no gradient (what the discriminator step sees)."""
        return replace(self, sr=self.sr.detach(), sr_levels=[s.detach() for s in self.sr_levels])


class LossTerm(nn.Module):
    """Base class of every loss term.

    Args:
        weight: multiplier of the term in the generator objective.
        start_step: first iteration at which the term is computed; before it the term costs
            nothing.

    Subclasses implement :meth:`compute` returning a scalar tensor or a :class:`LossOutput`.
    """

    #: True for terms that train a discriminator (the trainer then uses manual GAN optimization).
    needs_discriminator: bool = False

    def __init__(self, weight: float = 1.0, start_step: int = 0) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or weight != weight:
            raise ConfigError(f"loss weight must be a number, got {weight!r}")
        if start_step < 0:
            raise ConfigError(f"loss start_step must be >= 0, got {start_step}")
        self.weight = float(weight)
        self.start_step = int(start_step)

    def is_active(self, step: int) -> bool:
        return step >= self.start_step and self.weight != 0.0

    def compute(self, inputs: LossInputs) -> Tensor | LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, inputs: LossInputs) -> LossOutput:
        out = self.compute(inputs)
        return out if isinstance(out, LossOutput) else LossOutput(out)

    def discriminator_loss(self, inputs: LossInputs) -> Tensor:
        """The discriminator's objective on detached SR (only for ``needs_discriminator`` terms)."""
        raise NotImplementedError(f"{type(self).__name__} does not train a discriminator")

    def extra_repr(self) -> str:
        return f"weight={self.weight}, start_step={self.start_step}"


def reduce_loss(value: Tensor, reduction: str) -> Tensor:
    """Apply ``mean``/``sum``/``none`` to an elementwise loss."""
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    if reduction == "none":
        return value
    raise ValueError(f"unknown reduction {reduction!r}; choose mean, sum or none")


def check_same_shape(pred: Tensor, target: Tensor, name: str) -> None:
    """Inputs first: a clear error instead of silent broadcasting."""
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )


def downsample_to(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a target to a pyramid level's size with the MATLAB bicubic (for multi-scale supervision)."""
    from sr_cli.degradations.resize import imresize

    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return imresize(img, size=size)


def pyramid_targets(inputs: LossInputs) -> list[tuple[Tensor, Tensor]]:
    """``(prediction, target)`` pairs for every output level, the target resized to each level."""
    return [
        (level, downsample_to(inputs.gt, tuple(level.shape[-2:]))) for level in inputs.sr_levels
    ]


def zero_like(t: Tensor) -> Tensor:
    return torch.zeros((), device=t.device, dtype=t.dtype)
