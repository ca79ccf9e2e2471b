"""MSRResNet: SRResNet without batch norm (the BasicSR "modified SRResNet").

Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017 (arXiv:1609.04802) introduced SRResNet: residual blocks, a global skip and
pixel-shuffle upsampling. Following Lim et al. (EDSR, 2017) and Wang et al. (ESRGAN, 2018),
this variant drops batch norm, uses 3x3 convs everywhere, LeakyReLU 0.1 and adds a bilinear
upsampling of the input to the output. The paper configuration is 16 blocks with 64 features
(1.52M parameters at x4).

State-dict keys follow the BasicSR ``MSRResNet`` layout of the published checkpoints
(``conv_first``, ``body.{i}.conv1/conv2``, ``upconv1``, ``upconv2`` (x4 only), ``conv_hr``,
``conv_last``). ``upsampler`` picks ``pixelshuffle`` (paper), ``nearest+conv`` or
``transposed`` for the up-steps; the key names stay the same.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import UPSAMPLERS, check_scale, resolve_preset, scaled_kaiming_init

PRESETS = {
    "paper": dict(num_feat=64, num_block=16),
    "small": dict(num_feat=32, num_block=2),
}


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with an identity skip, no batch norm."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        scaled_kaiming_init(self, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def _up_step(num_feat: int, r: int, mode: str) -> nn.Module:
    """One up-step as a single module, so the key stays ``upconvN.*``."""
    if mode == "pixelshuffle":
        return nn.Conv2d(num_feat, num_feat * r * r, 3, 1, 1)
    if mode == "nearest+conv":
        return nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    return nn.ConvTranspose2d(num_feat, num_feat, 2 * r, r, r // 2 + r % 2, output_padding=r % 2)


class MSRResNet(nn.Module):
    """Modified SRResNet generator.

    Args:
        scale: 2, 3 or 4.
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (64).
        num_block: residual blocks (16).
        upsampler: ``pixelshuffle`` (paper), ``nearest+conv`` or ``transposed``.

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = MSRResNet(scale=4, num_feat=8, num_block=1)
        >>> net(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 3, 20, 28])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        upsampler: str = "pixelshuffle",
    ) -> None:
        super().__init__()
        self.scale = check_scale("MSRResNet", scale, (2, 3, 4))
        if upsampler not in UPSAMPLERS:
            raise ConfigError(
                f"unknown upsampler {upsampler!r}; choose one of {', '.join(UPSAMPLERS)}."
            )
        self.upsampler = upsampler
        self.steps = [2, 2] if self.scale == 4 else [self.scale]
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        self.upconv1 = _up_step(num_feat, self.steps[0], upsampler)
        if len(self.steps) == 2:
            self.upconv2 = _up_step(num_feat, self.steps[1], upsampler)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        for m in (
            self.conv_first,
            self.conv_hr,
            self.conv_last,
            self.upconv1,
            getattr(self, "upconv2", None),
        ):
            if m is not None:
                scaled_kaiming_init(m, 0.1)

    def _up(self, conv: nn.Module, feat: Tensor, r: int) -> Tensor:
        if self.upsampler == "pixelshuffle":
            return self.lrelu(F.pixel_shuffle(conv(feat), r))
        if self.upsampler == "nearest+conv":
            return self.lrelu(conv(F.interpolate(feat, scale_factor=r, mode="nearest")))
        return self.lrelu(conv(feat))

    def forward(self, x: Tensor) -> Tensor:
        feat = self.lrelu(self.conv_first(x))
        out = self.body(feat)
        out = self._up(self.upconv1, out, self.steps[0])
        if len(self.steps) == 2:
            out = self._up(self.upconv2, out, self.steps[1])
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


def msrresnet(scale: int = 4, preset: str = "paper", **overrides) -> MSRResNet:
    """MSRResNet from a preset (``paper``: 16 blocks, 64 features; ``small``: for CPU)."""
    return MSRResNet(scale=scale, **resolve_preset("MSRResNet", PRESETS, preset, overrides))
