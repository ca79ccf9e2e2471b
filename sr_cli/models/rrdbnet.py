"""RRDBNet, the ESRGAN generator.

Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks", ECCV
Workshops 2018 (arXiv:1809.00219). Residual-in-residual dense blocks (RRDB) without batch
norm, residual scaling 0.2, and nearest-neighbour + conv upsampling. The paper configuration
is 23 RRDBs, 64 features and growth 32 (16.7M parameters at x4).

State-dict keys follow the BasicSR layout used by the published checkpoints (``conv_first``,
``body.{i}.rdb{j}.conv{k}``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``). Scale 2 and 1 fold the input with pixel-unshuffle first, as Real-ESRGAN x2 does;
scale 3 upsamples once by 3 (``conv_up2`` then refines at full resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import check_scale, resolve_preset, scaled_kaiming_init

PRESETS = {
    "paper": dict(num_feat=64, num_block=23, num_grow_ch=32),
    # The CPU preset pads with the edge pixels (the symmetric padding of MATLAB's imresize for
    # a 3x3 conv): with zero padding the convs see black beyond the LQ edge, and a briefly trained
    # generator draws a frame along the border (issue 9). The paper preset keeps zero padding,
    # so published weights reproduce their published outputs.
    "small": dict(num_feat=32, num_block=2, num_grow_ch=16, padding_mode="replicate"),
}

PADDING_MODES = ("zeros", "replicate", "reflect")
UPSAMPLERS = ("nearest+conv", "pixelshuffle")


def _set_padding(module: nn.Module, padding_mode: str) -> None:
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.padding_mode = padding_mode


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(
        self, num_feat: int = 64, num_grow_ch: int = 32, padding_mode: str = "zeros"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        _set_padding(self, padding_mode)
        scaled_kaiming_init(self, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs and an outer residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, padding_mode)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, padding_mode)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """The ESRGAN generator.

    Args:
        scale: 1, 2, 3 or 4.
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (64 in the paper).
        num_block: number of RRDBs (23 in the paper).
        num_grow_ch: dense growth channels (32 in the paper).
        padding_mode: padding of every 3x3 conv: ``zeros`` (the paper), ``replicate`` or
            ``reflect``. Only the border pixels of the output depend on it.
        upsampler: ``nearest+conv`` (the paper: nearest-neighbour x2, then ``conv_up``) or
            ``pixelshuffle`` (``conv_up`` makes ``r^2`` times the features, then a pixel
            shuffle by ``r``: the same body with a sub-pixel upsampler, for studies of
            upsampler artifacts; its ``conv_up*`` weights are ``r^2`` times larger).

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = RRDBNet(scale=4, num_feat=16, num_block=1, num_grow_ch=8)
        >>> net(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        padding_mode: str = "zeros",
        upsampler: str = "nearest+conv",
    ) -> None:
        super().__init__()
        self.scale = check_scale("RRDBNet", scale, (1, 2, 3, 4))
        if upsampler not in UPSAMPLERS:
            raise ConfigError(
                f"RRDBNet upsampler={upsampler!r} is not supported; choose one of "
                + ", ".join(UPSAMPLERS)
            )
        self.upsampler = upsampler
        if padding_mode not in PADDING_MODES:
            raise ConfigError(
                f"RRDBNet padding_mode={padding_mode!r} is not supported; choose one of "
                + ", ".join(PADDING_MODES)
            )
        self.unshuffle = {1: 4, 2: 2}.get(self.scale, 1)
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(
            *[RRDB(num_feat, num_grow_ch, padding_mode) for _ in range(num_block)]
        )
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        # The first step upsamples by 3 at scale 3 (then conv_up2 refines), else by 2 twice.
        steps = (3, 1) if self.scale == 3 else (2, 2)
        shuffle = upsampler == "pixelshuffle"
        self.conv_up1 = nn.Conv2d(num_feat, num_feat * (steps[0] ** 2 if shuffle else 1), 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat * (steps[1] ** 2 if shuffle else 1), 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        _set_padding(self, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            h, w = x.shape[-2:]
            r = self.unshuffle
            ph, pw = (-h) % r, (-w) % r
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            out = self._forward(F.pixel_unshuffle(x, r))
            return out[..., : h * self.scale, : w * self.scale]
        return self._forward(x)

    def _up(self, conv: nn.Conv2d, feat: Tensor, factor: int) -> Tensor:
        if factor == 1:
            return self.lrelu(conv(feat))
        if self.upsampler == "pixelshuffle":
            return self.lrelu(F.pixel_shuffle(conv(feat), factor))
        return self.lrelu(conv(F.interpolate(feat, scale_factor=factor, mode="nearest")))

    def _forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        first, second = (3, 1) if self.scale == 3 else (2, 2)
        feat = self._up(self.conv_up2, self._up(self.conv_up1, feat, first), second)
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def rrdbnet(scale: int = 4, preset: str = "paper", **overrides) -> RRDBNet:
    """RRDBNet from a preset (``paper``: 23 blocks, 64 features, growth 32; ``small``: for CPU)."""
    return RRDBNet(scale=scale, **resolve_preset("RRDBNet", PRESETS, preset, overrides))
