"""Small layers shared by several generators of the model zoo.

:func:`image_upsampler` maps features straight to an image at ``scale`` in one step: the
sub-pixel convolution of ESPCN (Shi et al., CVPR 2016), the deconvolution of FSRCNN (Dong et
al., ECCV 2016) or a nearest-neighbour resize followed by a convolution (Odena et al., Distill
2016). :class:`DropPath` is stochastic depth (Huang et al., ECCV 2016) as used by SwinIR.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import UPSAMPLERS


def image_upsampler(
    in_ch: int, out_ch: int, scale: int, mode: str = "pixelshuffle", kernel_size: int = 3
) -> nn.Sequential:
    """One-step upsampler from ``in_ch`` features to an ``out_ch`` image ``scale`` times larger.

    Args:
        in_ch: feature channels.
        out_ch: image channels.
        scale: integer factor.
        mode: ``pixelshuffle`` (conv to ``out_ch * scale^2`` + pixel shuffle),
            ``nearest+conv`` or ``transposed`` (a stride-``scale`` transposed conv).
        kernel_size: odd kernel of the conv (or transposed conv).

    Shape:
        ``(B, in_ch, H, W) -> (B, out_ch, H * scale, W * scale)`` for any ``H``, ``W``.
    """
    if mode not in UPSAMPLERS:
        raise ConfigError(f"unknown upsampler {mode!r}; choose one of {', '.join(UPSAMPLERS)}.")
    if kernel_size % 2 == 0:
        raise ConfigError(f"image_upsampler needs an odd kernel size, got {kernel_size}.")
    pad = kernel_size // 2
    if mode == "pixelshuffle":
        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch * scale * scale, kernel_size, 1, pad), nn.PixelShuffle(scale)
        )
    if mode == "nearest+conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="nearest"),
            nn.Conv2d(in_ch, out_ch, kernel_size, 1, pad),
        )
    # (H - 1) * s - 2 * pad + k + (s - 1) = H * s for k = 2 * pad + 1.
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, kernel_size, scale, pad, output_padding=scale - 1)
    )


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def bilinear_kernel(size: int) -> Tensor:
    """The ``size x size`` bilinear interpolation kernel (initialises learned upsampling)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    r = torch.arange(size, dtype=torch.float32)
    k1 = 1 - (r - center).abs() / factor
    return k1[:, None] * k1[None, :]
