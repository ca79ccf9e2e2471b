"""Today's efficient and transformer SR architectures, built from spandrel's implementations.

`spandrel <https://github.com/chaiNNer-org/spandrel>`_ (MIT) keeps maintained implementations
of the architectures the SR community publishes checkpoints for, and detects them from a state
dict. The factories below build spandrel's classes with the hyperparameters of each paper
(``preset="paper"``) or a tiny CPU configuration (``preset="small"``), so a model trained here
has exactly the state-dict layout of the published checkpoints of its family: spandrel (and
chaiNNer, and every tool built on it) loads what ``sr-export --format pth`` writes.

Hyperparameters that spandrel cannot read back from a state dict (``img_range``, ``img_size``,
``conv_scale``, ...) are left at spandrel's values, so detection rebuilds the same network.

Families (paper configuration, x4 parameter count in :mod:`tests.models.test_community`):

* ``span``: SPAN, Wan et al., "Swift Parameter-free Attention Network for Efficient
  Super-Resolution", CVPR Workshops 2024 (NTIRE 2024 ESR winner): 48 channels.
* ``realplksr``: RealPLKSR, the real-world variant of PLKSR (Lee et al., "Partial Large Kernel
  CNNs for Efficient Super-Resolution", arXiv:2404.11848): 64 channels, 28 blocks, kernel 17.
* ``compact``: SRVGGNetCompact (Wang et al., Real-ESRGAN, ICCVW 2021), the
  ``realesr-general-x4v3`` configuration: 64 features, 32 convolutions.
* ``omnisr``: Omni-SR, Wang et al., "Omni Aggregation Networks for Lightweight Image
  Super-Resolution", CVPR 2023: 64 features, 5 OSAGs, window 8.
* ``hat``: HAT, Chen et al., "Activating More Pixels in Image Super-Resolution Transformer",
  CVPR 2023: embed 180, 6 RHAGs x 6 blocks, window 16 (also ``s`` and ``l`` presets).
* ``dat``: DAT, Chen et al., "Dual Aggregation Transformer for Image Super-Resolution",
  ICCV 2023: embed 180, 6 groups x 6 blocks, split 8x32 (also ``s`` and ``light``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.models.common import check_scale, resolve_preset

SCALES = (1, 2, 3, 4)
PIXELSHUFFLE_SCALES = (2, 3, 4)


def _finish(net: nn.Module, scale: int) -> nn.Module:
    """Give the spandrel network the ``scale`` attribute every sr-cli generator has."""
    net.scale = int(scale)
    return net


SPAN_PRESETS = {
    "paper": dict(feature_channels=48),
    "small": dict(feature_channels=8),
}


def span(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """SPAN (spandrel's ``SPAN``): ``paper`` (48 channels) or ``small`` (8)."""
    from spandrel.architectures.SPAN import SPAN

    scale = check_scale("SPAN", scale, PIXELSHUFFLE_SCALES)
    args = resolve_preset("SPAN", SPAN_PRESETS, preset, overrides)
    net = SPAN(num_in_ch=3, num_out_ch=3, upscale=scale, **args)
    # ``eval_conv`` holds the re-parameterised (fused) kernel, recomputed from the training
    # branches in eval mode: it is derived, not trained.
    for name, p in net.named_parameters():
        if ".eval_conv." in f".{name}":
            p.requires_grad_(False)
    return _finish(net, scale)


REALPLKSR_PRESETS = {
    "paper": dict(dim=64, n_blocks=28, kernel_size=17, split_ratio=0.25, use_ea=True),
    "small": dict(dim=16, n_blocks=2, kernel_size=7, split_ratio=0.25, use_ea=True),
}


def realplksr(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """RealPLKSR (spandrel's ``RealPLKSR``): ``paper`` (64x28, kernel 17) or ``small``."""
    from spandrel.architectures.PLKSR import RealPLKSR

    scale = check_scale("RealPLKSR", scale, SCALES)
    args = resolve_preset("RealPLKSR", REALPLKSR_PRESETS, preset, overrides)
    return _finish(RealPLKSR(upscaling_factor=scale, **args), scale)


COMPACT_PRESETS = {
    "paper": dict(num_feat=64, num_conv=32),
    "animevideo": dict(num_feat=64, num_conv=16),
    "small": dict(num_feat=16, num_conv=2),
}


def compact(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """SRVGGNetCompact (spandrel's ``Compact``): ``paper`` (realesr-general-x4v3, 64x32),
    ``animevideo`` (realesr-animevideov3, 64x16) or ``small``."""
    from spandrel.architectures.Compact import Compact

    scale = check_scale("Compact", scale, SCALES)
    args = resolve_preset("Compact", COMPACT_PRESETS, preset, overrides)
    return _finish(Compact(num_in_ch=3, num_out_ch=3, upscale=scale, **args), scale)


OMNISR_PRESETS = {
    "paper": dict(num_feat=64, block_num=1, res_num=5, window_size=8, pe=True),
    "small": dict(num_feat=16, block_num=1, res_num=1, window_size=4, pe=True),
}


#: Omni-SR's pooling needs inputs of at least 16 pixels a side.
OMNISR_MIN_SIZE = 16


def omnisr(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """Omni-SR (spandrel's ``OmniSR``): ``paper`` (64 features, 5 OSAGs, window 8) or ``small``.

    Inputs smaller than 16 pixels are padded (replicate) and the output cropped; the state dict
    is spandrel's ``OmniSR`` one."""
    PaddedOmniSR = _padded_omnisr_class()
    scale = check_scale("OmniSR", scale, SCALES)
    args = resolve_preset("OmniSR", OMNISR_PRESETS, preset, overrides)
    return _finish(PaddedOmniSR(num_in_ch=3, num_out_ch=3, up_scale=scale, **args), scale)


@functools.cache
def _padded_omnisr_class() -> type:
    """spandrel's OmniSR, padding inputs below its minimum size (one class, made on first use so
    that importing this module does not import spandrel)."""
    from spandrel.architectures.OmniSR import OmniSR

    class PaddedOmniSR(OmniSR):
        def forward(self, x: Tensor) -> Tensor:
            h, w = x.shape[-2:]
            ph, pw = max(0, OMNISR_MIN_SIZE - h), max(0, OMNISR_MIN_SIZE - w)
            if not (ph or pw):
                return super().forward(x)
            out = super().forward(F.pad(x, (0, pw, 0, ph), mode="replicate"))
            return out[..., : h * self.up_scale, : w * self.up_scale]

    return PaddedOmniSR


_HAT_COMMON = dict(window_size=16, overlap_ratio=0.5, mlp_ratio=2.0, num_feat=64)
HAT_PRESETS = {
    "paper": dict(
        _HAT_COMMON,
        embed_dim=180,
        depths=[6] * 6,
        num_heads=[6] * 6,
        compress_ratio=3,
        squeeze_factor=30,
    ),
    "s": dict(
        _HAT_COMMON,
        embed_dim=144,
        depths=[6] * 6,
        num_heads=[6] * 6,
        compress_ratio=24,
        squeeze_factor=24,
    ),
    "l": dict(
        _HAT_COMMON,
        embed_dim=180,
        depths=[6] * 12,
        num_heads=[6] * 12,
        compress_ratio=3,
        squeeze_factor=30,
    ),
    "small": dict(
        window_size=4,
        overlap_ratio=0.5,
        mlp_ratio=2.0,
        num_feat=16,
        embed_dim=24,
        depths=[2],
        num_heads=[2],
        compress_ratio=3,
        squeeze_factor=8,
    ),
}


def hat(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """HAT (spandrel's ``HAT``): ``paper`` (HAT), ``s`` (HAT-S), ``l`` (HAT-L) or ``small``."""
    from spandrel.architectures.HAT import HAT

    scale = check_scale("HAT", scale, PIXELSHUFFLE_SCALES)
    args = resolve_preset("HAT", HAT_PRESETS, preset, overrides)
    return _finish(HAT(upscale=scale, upsampler="pixelshuffle", **args), scale)


DAT_PRESETS = {
    "paper": dict(
        embed_dim=180,
        depth=[6] * 6,
        num_heads=[6] * 6,
        split_size=[8, 32],
        expansion_factor=4.0,
        upsampler="pixelshuffle",
    ),
    "s": dict(
        embed_dim=180,
        depth=[6] * 6,
        num_heads=[6] * 6,
        split_size=[8, 16],
        expansion_factor=2.0,
        upsampler="pixelshuffle",
    ),
    "light": dict(
        embed_dim=60,
        depth=[18],
        num_heads=[6],
        split_size=[8, 32],
        expansion_factor=2.0,
        upsampler="pixelshuffledirect",
        resi_connection="3conv",
    ),
    "small": dict(
        embed_dim=16,
        depth=[2],
        num_heads=[2],
        split_size=[4, 8],
        expansion_factor=2.0,
        upsampler="pixelshuffle",
    ),
}


def dat(scale: int = 4, preset: str = "paper", **overrides: Any) -> nn.Module:
    """DAT (spandrel's ``DAT``): ``paper`` (DAT), ``s`` (DAT-S), ``light`` (DAT-light) or
    ``small``."""
    from spandrel.architectures.DAT import DAT

    scale = check_scale("DAT", scale, PIXELSHUFFLE_SCALES)
    args = resolve_preset("DAT", DAT_PRESETS, preset, overrides)
    return _finish(DAT(upscale=scale, **args), scale)


#: Factory per config name, with the spandrel architecture id its checkpoints are detected as.
FAMILIES = {
    "span": (span, "SPAN"),
    "realplksr": (realplksr, "PLKSR"),  # spandrel tags it "Real"
    "compact": (compact, "Compact"),
    "omnisr": (omnisr, "OmniSR"),
    "hat": (hat, "HAT"),
    "dat": (dat, "DAT"),
}
