"""Resize-only degradations: bicubic (MATLAB), bilinear, area and nearest downsampling.

:class:`ResizeDownsample` generalises :class:`~sr_cli.degradations.resize.BicubicDownsample` to
the other interpolation modes of :func:`~sr_cli.degradations.functional.resize`. It is
deterministic, so :meth:`~ResizeDownsample.consistency` is the very same resize (without the
8-bit rounding, to stay differentiable).
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the docstring example)
from torch import Tensor

from sr_cli.degradations.base import Degradation, Params
from sr_cli.degradations.functional import check_mode, resize
from sr_cli.degradations.resize import quantize as quantize_8bit
from sr_cli.errors import ConfigError


def check_divisible(hr: Tensor, scale: int) -> tuple[int, int]:
    """The LQ size ``(H / scale, W / scale)``; raises when HR is not a multiple of the scale."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(
            f"HR size {h}x{w} is not divisible by degradation scale {scale}; "
            "crop HR images to a multiple of the scale (the datasets do this for you)."
        )
    return h // scale, w // scale


class ResizeDownsample(Degradation):
    """Downsample by an integer ``scale`` with one interpolation mode.

    Args:
        scale: integer downscaling factor.
        mode: ``bicubic`` (MATLAB ``imresize``), ``bilinear``, ``area`` or ``nearest``.
        antialias: widen the bicubic/bilinear kernel when downscaling (MATLAB's default).
        quantize: round the LQ to 8 bits (not in :meth:`consistency`).

    Example:
        >>> d = ResizeDownsample(2, mode="area")
        >>> d(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """

    def __init__(
        self, scale: int, mode: str = "bicubic", antialias: bool = True, quantize: bool = True
    ) -> None:
        super().__init__(scale)
        self.mode = check_mode(mode)
        self.antialias = bool(antialias)
        self.quantize = bool(quantize)

    def consistency(self, sr: Tensor, params: Params | None = None) -> Tensor:
        return resize(sr, check_divisible(sr, self.scale), self.mode, self.antialias)

    def forward(self, hr: Tensor, params: Params | None = None) -> Tensor:
        lq = self.consistency(hr, params)
        return quantize_8bit(lq) if self.quantize else lq.clamp(0, 1)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, mode={self.mode!r}, antialias={self.antialias}, "
            f"quantize={self.quantize}"
        )
