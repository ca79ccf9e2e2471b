"""EDSR: enhanced deep residual networks for single-image super-resolution.

Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPR
Workshops 2017 (arXiv:1707.02921). Residual blocks without batch norm, a global skip, and a
pixel-shuffle upsampler. The baseline has 16 blocks and 64 features (1.5M parameters at x4);
the full model has 32 blocks, 256 features and residual scaling 0.1 (43M at x4).

Inputs are shifted by the DIV2K RGB mean before the head and back after the tail, as in the
paper. State-dict keys follow the BasicSR layout (``conv_first``, ``body.{i}.conv1``,
``conv_after_body``, ``upsample.{j}``, ``conv_last``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.models.common import Upsample, check_scale, resolve_preset

#: DIV2K RGB mean, as used by EDSR.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

PRESETS = {
    "baseline": dict(num_feat=64, num_block=16, res_scale=1.0),
    "paper": dict(num_feat=256, num_block=32, res_scale=0.1),
    "small": dict(num_feat=32, num_block=2, res_scale=1.0),
}


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip, no batch norm."""

    def __init__(self, num_feat: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(self.relu(self.conv1(x)))


class EDSR(nn.Module):
    """EDSR generator.

    Args:
        scale: 2, 3 or 4.
        num_feat: feature channels (64 baseline, 256 full).
        num_block: residual blocks (16 baseline, 32 full).
        res_scale: residual scaling (1.0 baseline, 0.1 full).
        upsampler: ``pixelshuffle`` (paper), ``nearest+conv`` or ``transposed``.

    Shape:
        ``(B, 3, H, W) -> (B, 3, H * scale, W * scale)``.
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        res_scale: float = 1.0,
        upsampler: str = "pixelshuffle",
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = check_scale("EDSR", scale, (2, 3, 4))
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResBlock(num_feat, res_scale) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(self.scale, num_feat, upsampler)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.body(feat))
        out = self.conv_last(self.upsample(feat))
        return out / self.img_range + self.mean


def edsr(scale: int = 4, preset: str = "baseline", **overrides) -> EDSR:
    """EDSR from a preset: ``baseline`` (16x64), ``paper`` (32x256, res_scale 0.1) or ``small``."""
    return EDSR(scale=scale, **resolve_preset("EDSR", PRESETS, preset, overrides))
