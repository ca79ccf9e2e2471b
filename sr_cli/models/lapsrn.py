"""LapSRN: deep Laplacian pyramid network, a progressive (coarse-to-fine) generator.

Lai et al., "Deep Laplacian Pyramid Networks for Fast and Accurate Super-Resolution", CVPR 2017
(arXiv:1704.03915). Each pyramid level upsamples by 2 with two branches: a feature-extraction
branch (``depth`` 3x3 convs with 64 filters and LeakyReLU 0.2, then a 4x4 stride-2 transposed
conv) that predicts a residual image, and an image-reconstruction branch (a 4x4 transposed
conv initialised to bilinear upsampling) to which the residual is added. The features of one
level feed the next, so x4 has two levels and x8 three; the paper uses ``depth = 10``.

``forward`` returns the list of every level's image from coarse to fine (x2, x4, (x8)), so a
loss can supervise the whole pyramid (the paper's Charbonnier loss on every level: set
``levels: all`` on a pixel loss). ``sr_cli.models.common.final_output`` picks the last.

Keys: ``conv_first``, ``levels.{i}.features.*``, ``levels.{i}.to_residual``,
``levels.{i}.upsample_image``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sr_cli.models.common import check_scale, resolve_preset
from sr_cli.models.layers import bilinear_kernel

PRESETS = {
    "paper": dict(num_feat=64, depth=10),
    "small": dict(num_feat=16, depth=2),
}


class PyramidLevel(nn.Module):
    """One x2 level: feature branch -> residual image, plus learned image upsampling."""

    def __init__(self, num_ch: int, num_feat: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.ConvTranspose2d(num_feat, num_feat, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.to_residual = nn.Conv2d(num_feat, num_ch, 3, 1, 1)
        self.upsample_image = nn.ConvTranspose2d(num_ch, num_ch, 4, 2, 1, bias=False)
        with torch.no_grad():
            self.upsample_image.weight.zero_()
            kernel = bilinear_kernel(4)
            for c in range(num_ch):
                self.upsample_image.weight[c, c] = kernel

    def forward(self, feat: Tensor, img: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.features(feat)
        return feat, self.upsample_image(img) + self.to_residual(feat)


class LapSRN(nn.Module):
    """LapSRN generator; returns the pyramid ``[x2, x4, (x8)]`` (up to ``scale``).

    Args:
        scale: 2, 4 or 8 (one, two or three levels).
        num_in_ch: image channels (the paper uses Y, 1); output has the same.
        num_feat: feature channels (64).
        depth: convs per level in the feature branch (10).

    Shape:
        ``(B, C, H, W) -> [(B, C, 2H, 2W), ..., (B, C, H * scale, W * scale)]``.

    Example:
        >>> net = LapSRN(scale=4, num_feat=8, depth=1)
        >>> [o.shape[-1] for o in net(torch.rand(1, 3, 5, 7))]
        [14, 28]
    """

    def __init__(
        self, scale: int = 4, num_in_ch: int = 3, num_feat: int = 64, depth: int = 10
    ) -> None:
        super().__init__()
        self.scale = check_scale("LapSRN", scale, (2, 4, 8))
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        n_levels = int(math.log2(self.scale))
        self.levels = nn.ModuleList(
            [PyramidLevel(num_in_ch, num_feat, depth) for _ in range(n_levels)]
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        feat = self.lrelu(self.conv_first(x))
        img = x
        outs = []
        for level in self.levels:
            feat, img = level(feat, img)
            outs.append(img)
        return outs


def lapsrn(scale: int = 4, preset: str = "paper", **overrides) -> LapSRN:
    """LapSRN from a preset (``paper``: depth 10, 64 features; ``small``: for CPU)."""
    return LapSRN(scale=scale, **resolve_preset("LapSRN", PRESETS, preset, overrides))
