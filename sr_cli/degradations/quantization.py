"""Bit-depth reduction: round to ``2**bits`` levels, with a straight-through gradient.

:class:`Quantize` is a deterministic pipeline stage that is not replayable: its
:meth:`~Quantize.replay` is the identity (rounding has no useful gradient).
:class:`QuantizedDownsample` is "resize to HR / scale, then reduce to ``bits`` bits"; its
replay is the resize.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sr_cli.degradations.base import Params, Stage
from sr_cli.degradations.functional import quantize
from sr_cli.degradations.pipeline import ResizeDownsample, Size
from sr_cli.degradations.resize import Resize
from sr_cli.errors import ConfigError


class Quantize(Stage):
    """Round to ``2**bits`` evenly spaced levels in ``[0, 1]`` (clamping first)."""

    name = "quantize"
    stochastic = False
    replayable = False

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        if int(bits) != bits or not 1 <= bits <= 16:
            raise ConfigError(f"Quantize.bits must be an integer in [1, 16], got {bits!r}")
        self.bits = int(bits)

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        return {}

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        return quantize(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class QuantizedDownsample(ResizeDownsample):
    """Resize to ``HR / scale``, then reduce the bit depth to ``bits`` (banding artifacts).

    Args:
        scale: integer downscaling factor.
        bits: bits per channel of the LQ.
        mode: interpolation of the resize.
        antialias: antialiased downscaling.
    """

    def __init__(
        self, scale: int, bits: int = 5, mode: str = "bicubic", antialias: bool = True
    ) -> None:
        # The pipeline's own 8-bit rounding is off: the Quantize stage already rounds.
        super().__init__(scale, mode, antialias, quantize=False, bits=bits)

    def stages(self, resize: Resize, bits: int = 5) -> list[Stage]:
        return [resize, Quantize(bits)]
