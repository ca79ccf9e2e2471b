"""D-DBPN: dense deep back-projection networks (iterative up- and down-sampling).

Haris et al., "Deep Back-Projection Networks for Super-Resolution", CVPR 2018
(arXiv:1803.02735). After two feature-extraction convs (3x3 to ``feat`` channels, 1x1 to
``base`` channels), the network alternates up-projection and down-projection units. An
up-projection maps LR features to HR (``H0 = deconv(L)``), maps back (``L0 = conv(H0)``),
and corrects with the back-projected residual (``H = deconv(L0 - L) + H0``); down-projection
is the mirror image. In the dense variant every unit sees the concatenation of all previous
units' outputs of the opposite kind (compressed by a 1x1 conv), and the reconstruction conv
reads all HR outputs. Projections use kernel/stride/padding 6/2/2 (x2), 8/4/2 (x4) and
12/8/2 (x8); all activations are PReLU. The paper's D-DBPN has 7 up-projection stages,
``base = 64``, ``feat = 256`` (10.4M parameters at x4).

State-dict keys follow the authors' release (``feat0.conv``, ``feat1.conv``,
``up{k}.up_conv{1,2,3}.deconv/conv``, ``down{k}.down_conv{1,2,3}.conv/deconv``,
``up{k}.conv`` / ``down{k}.conv`` for the dense 1x1 compressions, ``*.act.weight`` for PReLU,
``output_conv.conv``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import check_scale, resolve_preset

PRESETS = {
    "paper": dict(base_filter=64, feat=256, num_stages=7),
    "small": dict(base_filter=16, feat=32, num_stages=3),
}

#: (kernel, stride, padding) of the projection convs per scale.
PROJECTION = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}


class ConvBlock(nn.Module):
    """Conv + optional PReLU (keys ``conv``, ``act``)."""

    def __init__(self, c_in: int, c_out: int, k: int, s: int, p: int, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, p)
        self.act = nn.PReLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class DeconvBlock(nn.Module):
    """Transposed conv + PReLU (keys ``deconv``, ``act``)."""

    def __init__(self, c_in: int, c_out: int, k: int, s: int, p: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, k, s, p)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.deconv(x))


class UpProjection(nn.Module):
    """Up-projection unit; with ``num_inputs > 1`` a 1x1 conv first fuses the dense input."""

    def __init__(self, nf: int, k: int, s: int, p: int, num_inputs: int = 1) -> None:
        super().__init__()
        if num_inputs > 1:
            self.conv = ConvBlock(nf * num_inputs, nf, 1, 1, 0)
        self.up_conv1 = DeconvBlock(nf, nf, k, s, p)
        self.up_conv2 = ConvBlock(nf, nf, k, s, p)
        self.up_conv3 = DeconvBlock(nf, nf, k, s, p)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv"):
            x = self.conv(x)
        h0 = self.up_conv1(x)
        return h0 + self.up_conv3(self.up_conv2(h0) - x)


class DownProjection(nn.Module):
    """Down-projection unit; with ``num_inputs > 1`` a 1x1 conv first fuses the dense input."""

    def __init__(self, nf: int, k: int, s: int, p: int, num_inputs: int = 1) -> None:
        super().__init__()
        if num_inputs > 1:
            self.conv = ConvBlock(nf * num_inputs, nf, 1, 1, 0)
        self.down_conv1 = ConvBlock(nf, nf, k, s, p)
        self.down_conv2 = DeconvBlock(nf, nf, k, s, p)
        self.down_conv3 = ConvBlock(nf, nf, k, s, p)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv"):
            x = self.conv(x)
        l0 = self.down_conv1(x)
        return l0 + self.down_conv3(self.down_conv2(l0) - x)


class DBPN(nn.Module):
    """D-DBPN generator.

    Args:
        scale: 2, 4 or 8.
        num_in_ch, num_out_ch: image channels.
        base_filter: channels of the projection units (64).
        feat: channels of the first feature conv (256).
        num_stages: number of up-projection units (7; ``num_stages - 1`` down-projections).

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = DBPN(scale=2, base_filter=8, feat=8, num_stages=2)
        >>> net(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 3, 10, 14])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        base_filter: int = 64,
        feat: int = 256,
        num_stages: int = 7,
    ) -> None:
        super().__init__()
        self.scale = check_scale("DBPN", scale, (2, 4, 8))
        if num_stages < 2:
            raise ConfigError(f"DBPN needs num_stages >= 2, got {num_stages}.")
        self.num_stages = num_stages
        k, s, p = PROJECTION[self.scale]
        self.feat0 = ConvBlock(num_in_ch, feat, 3, 1, 1)
        self.feat1 = ConvBlock(feat, base_filter, 1, 1, 0)
        self.up1 = UpProjection(base_filter, k, s, p)
        self.down1 = DownProjection(base_filter, k, s, p)
        self.up2 = UpProjection(base_filter, k, s, p)
        for i in range(2, num_stages):
            self.add_module(f"down{i}", DownProjection(base_filter, k, s, p, num_inputs=i))
            self.add_module(f"up{i + 1}", UpProjection(base_filter, k, s, p, num_inputs=i))
        self.output_conv = ConvBlock(num_stages * base_filter, num_out_ch, 3, 1, 1, act=False)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.feat1(self.feat0(x))
        h1 = self.up1(x)
        l1 = self.down1(h1)
        h2 = self.up2(l1)
        hs, ls = [h2, h1], [l1]
        for i in range(2, self.num_stages):
            ls.insert(0, getattr(self, f"down{i}")(torch.cat(hs, 1)))
            hs.insert(0, getattr(self, f"up{i + 1}")(torch.cat(ls, 1)))
        return self.output_conv(torch.cat(hs, 1))


def dbpn(scale: int = 4, preset: str = "paper", **overrides) -> DBPN:
    """D-DBPN from a preset (``paper``: 7 stages, 64/256 filters; ``small``: for CPU)."""
    return DBPN(scale=scale, **resolve_preset("DBPN", PRESETS, preset, overrides))
