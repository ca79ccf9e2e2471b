"""The loss-composition contract.

A training objective is a mix of *terms*. Each term is an ``nn.Module`` built from one
``conf/loss/<name>.yaml`` and carries its own ``weight`` and ``start_step``. The trainer keeps
the terms in an ``nn.ModuleDict`` keyed by the config name, calls every active term with one
:class:`LossInputs`, and sums ``weight * value``. It never looks at what a term is, so adding a
loss means one ``.py`` and one ``.yaml``.

A term reads what it needs from :class:`LossInputs` (the SR pyramid, GT, LQ, the degradation
and its drawn parameters, the generator, every discriminator, the step) and returns a scalar or a
:class:`LossOutput`. Two things a term may need beyond that are declared, never sniffed:

* **A discriminator.** An :class:`AdversarialTerm` owns its ``discriminator`` network and
  declares its objective (:meth:`AdversarialTerm.discriminator_loss`) and when it is trained
  (:meth:`AdversarialTerm.discriminator_active`). The trainer switches to GAN training with one
  optimizer (and schedule) per term's discriminator; every term sees every discriminator
  (``inputs.discriminators``, by term name).
* **Extra generator passes.** A term that runs the generator again (e.g. on a second crop) puts
  them in :attr:`LossOutput.extra_passes`; the trainer scores each pass with the terms it names,
  with their own weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor, nn

from sr_cli.errors import ConfigError


@dataclass
class LossOutput:
    """A term's value, diagnostics to log (e.g. ``lr_consistency_psnr``, detached), and the
    extra generator passes it asks other terms to score."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    extra_passes: list[ExtraPass] = field(default_factory=list)


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
        discriminators: the discriminator of every adversarial term, keyed by term name.
        ema_generator: the EMA of the generator when ``ema.enabled=true`` (no gradient), for
            terms that compare with it (LDL's refinement).
        lq_border: LR pixels along each edge of ``lq`` that were made with HR context around
            the patch (``data.lr_context``), which ``sr`` does not cover: a term that replays the
            degradation on ``sr`` compares inside them (``0``: the LQ was made from the patch).
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
    discriminators: dict[str, nn.Module] = field(default_factory=dict)
    ema_generator: Callable[[Tensor], Any] | None = None
    lq_border: int = 0

    @property
    def discriminator(self) -> nn.Module | None:
        """The first adversarial term's discriminator (``None`` without one)."""
        return next(iter(self.discriminators.values()), None)

    def detached(self) -> LossInputs:
        """A copy whose SR outputs carry no gradient (what the discriminator step sees)."""
        return replace(self, sr=self.sr.detach(), sr_levels=[s.detach() for s in self.sr_levels])


@dataclass
class ExtraPass:
    """A second generator pass (its own :class:`LossInputs`) to be scored by the named terms."""

    inputs: LossInputs
    terms: list[str]


class LossTerm(nn.Module):
    """Base class of every loss term.

    Args:
        weight: multiplier of the term in the generator objective.
        start_step: first iteration at which the term is computed; before it the term costs
            nothing.

    Subclasses implement :meth:`compute` returning a scalar tensor or a :class:`LossOutput`.
    """

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

    @property
    def needs_discriminator(self) -> bool:
        """Whether the term trains a discriminator (is an :class:`AdversarialTerm`)."""
        return isinstance(self, AdversarialTerm)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, start_step={self.start_step}"


class AdversarialTerm(LossTerm):
    """A term that trains its own discriminator.

    Args:
        discriminator: the network, owned by the term (its weights live under
            ``losses.<name>.discriminator.`` in checkpoints).
        weight, start_step: the generator-side term, as for every :class:`LossTerm`.
        d_start_step: first iteration at which the discriminator is trained.

    Subclasses implement :meth:`compute` (the generator's adversarial loss) and
    :meth:`discriminator_loss` (the discriminator's objective on detached SR).
    """

    def __init__(
        self,
        discriminator: nn.Module,
        weight: float = 1.0,
        start_step: int = 0,
        d_start_step: int = 0,
    ) -> None:
        super().__init__(weight, start_step)
        if not isinstance(discriminator, nn.Module):
            raise ConfigError(
                f"{type(self).__name__}: discriminator must be a network (nn.Module), got "
                f"{type(discriminator).__name__}"
            )
        if d_start_step < 0:
            raise ConfigError(f"d_start_step must be >= 0, got {d_start_step}")
        self.discriminator = discriminator
        self.d_start_step = int(d_start_step)

    def discriminator_active(self, step: int) -> bool:
        """Whether the discriminator is trained at iteration ``step``."""
        return step >= self.d_start_step

    def discriminator_loss(self, inputs: LossInputs) -> Tensor:  # pragma: no cover - abstract
        """The discriminator's objective on ``inputs`` (whose SR is already detached)."""
        raise NotImplementedError


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
