"""The degradation contract: a degradation is a pipeline of stages, with one verb per step.

A degradation maps a batch of HR images in ``[0, 1]`` to LQ images, on the tensor's device, in
two steps so that a loss can replay it:

* ``sample`` draws the random parameters of every image (kernels, resize factors, noise seeds,
  JPEG qualities, ...) from a ``torch.Generator``, as a dict of tensors whose first dimension is
  the batch;
* ``forward`` applies the degradation with those parameters;
* ``replay`` applies only its deterministic, differentiable part with the *same* parameters: the
  downsample-consistency loss compares ``replay(SR, params)`` with the LQ.

A :class:`Stage` is one operator (blur, resize, noise, JPEG, quantization) with these three
verbs. A stage whose ``replayable`` is false (noise, JPEG, quantization: the random or
non-invertible part) replays as the identity, and :meth:`Degradation.not_replayed` names every
such stage of a degradation, so a loss can say what its replay leaves out. Every degradation of
the catalogue is a :class:`~sr_cli.degradations.pipeline.DegradationPipeline` of stages;
plain bicubic downsampling is the one-stage pipeline ``[Resize]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError

Params = dict[str, Tensor]


class DegradationNotInvertible(ConfigError):
    """The degradation has no deterministic part that a consistency loss could reuse."""


class Stage(nn.Module):
    """One operator of a degradation pipeline.

    * ``sample(n, device, generator)`` draws its parameters for ``n`` images (``{}`` when it
      draws none);
    * ``forward(x, params, lq_size)`` applies it;
    * ``replay(x, params, lq_size)`` applies its deterministic, differentiable part: the same
      as ``forward`` for ``replayable`` stages (blur, resize), the identity for the others
      (noise, JPEG, quantization).

    ``lq_size`` is the final LQ size ``(H / scale, W / scale)``; stages that resize relative to
    it read it, the others ignore it.
    """

    #: Prefix of its parameters in a pipeline's dict (``"{index}_{name}.{key}"``).
    name: str = "stage"
    #: True when the stage draws random parameters.
    stochastic: bool = True
    #: False when :meth:`replay` skips the stage (the random, non-invertible part).
    replayable: bool = True

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        return {}

    def forward(self, x: Tensor, params: Params, lq_size: tuple[int, int]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def replay(self, x: Tensor, params: Params, lq_size: tuple[int, int]) -> Tensor:
        """The deterministic part: ``forward`` for replayable stages, else the identity."""
        return self.forward(x, params, lq_size) if self.replayable else x

    def not_replayed(self) -> list[str]:
        """Paths (relative to this stage) of the stages :meth:`replay` skips; ``""`` is itself."""
        return [] if self.replayable else [""]

    def reach(self, rate: float, scale: int, replayed: bool = False) -> tuple[float, float]:
        """How far, in HR pixels, an output pixel of this stage reads beyond the input pixels
        it covers, and the stage's output rate (its pixels per HR pixel), given its input
        ``rate`` (``1`` for HR). An upper bound (worst case over random parameters). Pointwise
        stages (noise, quantization) reach nothing; with ``replayed``, neither do the stages
        :meth:`replay` skips. JPEG's 8x8 blocks follow the crop, not the image: not counted."""
        return 0.0, rate

    def batch_uniform(self, params: Params) -> bool:
        """Whether parameters that must be shared by the whole batch are equal across it."""
        return True

    def param(self, params: Params, key: str) -> Tensor:
        """``params[key]``, or an error that says which dict was expected."""
        try:
            return params[key]
        except KeyError:
            raise KeyError(
                f"{type(self).__name__} needs parameter {key!r}; pass the dict returned by "
                f"sample() for this very batch (got keys {sorted(params)})"
            ) from None


class Degradation(nn.Module):
    """Base class: HR ``(B, C, H, W)`` in ``[0, 1]`` -> LQ ``(B, C, H/scale, W/scale)``.

    Implemented by :class:`~sr_cli.degradations.pipeline.DegradationPipeline`; a subclass
    without a deterministic part keeps the default :meth:`replay`, which refuses with
    :class:`DegradationNotInvertible`.
    """

    #: Integer downscaling factor between HR and LQ.
    scale: int
    #: True when :meth:`sample` draws random parameters.
    stochastic: bool = False

    def __init__(self, scale: int) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ConfigError(
                f"degradation.scale must be a positive integer, got {scale!r}. "
                "Set it with `scale=2`, `scale=3` or `scale=4`."
            )
        self.scale = int(scale)

    def sample(self, hr: Tensor, generator: torch.Generator | None = None) -> Params:
        """Draw the per-sample random parameters for a batch. Deterministic operators return ``{}``."""
        return {}

    def forward(
        self, hr: Tensor, params: Params | None = None, bits: int | Tensor = 8
    ) -> Tensor:  # pragma: no cover
        """The LQ of ``hr``; an LQ that is rounded is rounded to ``bits`` (the source's depth)."""
        raise NotImplementedError

    def replay(self, sr: Tensor, params: Params | None = None) -> Tensor:
        """The deterministic, differentiable part of the degradation, with the given parameters."""
        raise DegradationNotInvertible(
            f"{type(self).__name__} has no deterministic part to compare SR with LQ in LQ space; "
            "the downsample-consistency loss cannot be used with this degradation."
        )

    def not_replayed(self) -> list[str]:
        """The stages :meth:`replay` skips, by their parameter prefix (e.g. ``"2_noise"``)."""
        return []

    def context_margin(self, replayed: bool = False) -> int:
        """LR pixels of HR context a patch needs on each side so that degrading the patch with
        this context gives the LQ that degrading the whole image gives (an upper bound; the
        pixels beyond the image edge are the operator's own border rule). ``replayed``: only
        what :meth:`replay` applies. ``0`` for an operator that reads nothing around a pixel."""
        return 0

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
