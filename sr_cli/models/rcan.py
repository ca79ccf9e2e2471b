"""RCAN: residual channel attention networks.

Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention Networks",
ECCV 2018 (arXiv:1807.02758). A residual-in-residual structure: residual groups (RG) with long
skips, each a stack of residual channel-attention blocks (RCAB: conv-ReLU-conv followed by
squeeze-and-excitation channel attention with reduction ``r``) and a closing conv. The paper
uses 10 groups of 20 RCABs, 64 features and ``r = 16`` (15.6M parameters at x4), and a
pixel-shuffle upsampler.

Inputs are shifted by the DIV2K RGB mean, as in the paper. State-dict keys follow the BasicSR
``RCAN`` layout (``conv_first``, ``body.{g}.residual_group.{b}.rcab.{0,2}``,
``body.{g}.residual_group.{b}.rcab.3.attention.{1,3}``, ``body.{g}.conv``,
``conv_after_body``, ``upsample.{j}``, ``conv_last``). Published BasicSR weights were trained
with ``img_range=255``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.models.common import Upsample, check_scale, resolve_preset

#: DIV2K RGB mean.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

PRESETS = {
    "paper": dict(num_feat=64, num_group=10, num_block=20, reduction=16),
    "small": dict(num_feat=32, num_group=2, num_block=2, reduction=8),
}


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, bottleneck 1x1 convs, sigmoid gate."""

    def __init__(self, num_feat: int, reduction: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // reduction, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel-attention block."""

    def __init__(self, num_feat: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.rcab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.rcab(x)


class ResidualGroup(nn.Module):
    """``num_block`` RCABs, a conv, and a short skip over the group."""

    def __init__(
        self, num_feat: int, num_block: int, reduction: int, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(
            *[RCAB(num_feat, reduction, res_scale) for _ in range(num_block)]
        )
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.residual_group(x))


class RCAN(nn.Module):
    """RCAN generator.

    Args:
        scale: 2, 3, 4 or 8.
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (64).
        num_group: residual groups (10).
        num_block: RCABs per group (20).
        reduction: channel-attention reduction ratio (16).
        res_scale: scaling of each RCAB's residual (1.0).
        upsampler: ``pixelshuffle`` (paper), ``nearest+conv`` or ``transposed``.
        img_range: multiplier applied after the mean shift (BasicSR weights use 255).

    Shape:
        ``(B, 3, H, W) -> (B, 3, H * scale, W * scale)``.
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_group: int = 10,
        num_block: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
        upsampler: str = "pixelshuffle",
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = check_scale("RCAN", scale, (2, 3, 4, 8))
        self.img_range = img_range
        mean = torch.tensor(DIV2K_MEAN if num_in_ch == 3 else (0.0,) * num_in_ch)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(
            *[ResidualGroup(num_feat, num_block, reduction, res_scale) for _ in range(num_group)]
        )
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(self.scale, num_feat, upsampler)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.body(feat))
        out = self.conv_last(self.upsample(feat))
        return out / self.img_range + self.mean


def rcan(scale: int = 4, preset: str = "paper", **overrides) -> RCAN:
    """RCAN from a preset (``paper``: 10 groups x 20 RCABs, 64 features; ``small``: for CPU)."""
    return RCAN(scale=scale, **resolve_preset("RCAN", PRESETS, preset, overrides))
