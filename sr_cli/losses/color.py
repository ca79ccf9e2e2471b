"""Colour / luma consistency with the LQ input, measured in LQ space.

GAN-trained SR models drift in colour (tinted skies, shifted skin tones) while staying sharp.
This term downsamples SR to the LQ size and compares its chroma (``Cb, Cr``) or its luma
(``Y``, ITU-R BT.601 via kornia) with the LQ's, so it constrains the low frequencies of
colour without fighting the detail the other terms add (as in the colour-consistency losses of
e.g. Real-ESRGAN derivatives and Wei et al.'s "Unsupervised Real-world Image Super Resolution
via Domain-distance Aware Training", CVPR 2021, which use low-pass colour terms).

``downsample``: ``area`` (mean of each ``scale x scale`` block: a nearest-upsampled LQ maps
back exactly) or ``bicubic`` (MATLAB ``imresize``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm

MODES = ("chroma", "luma", "both")
DOWNSAMPLES = ("area", "bicubic")


def to_lq_space(sr: Tensor, size: tuple[int, int], downsample: str = "area") -> Tensor:
    """``sr`` resized to the LQ ``size`` (area average or MATLAB bicubic)."""
    if tuple(sr.shape[-2:]) == tuple(size):
        return sr
    if downsample == "area":
        return F.adaptive_avg_pool2d(sr, size)
    from sr_cli.degradations.resize import imresize

    return imresize(sr, size=size)


def color_consistency_loss(
    sr: Tensor, lq: Tensor, mode: str = "chroma", downsample: str = "area"
) -> Tensor:
    """Mean absolute difference of the chroma/luma of ``sr`` (in LQ space) and ``lq``.

    Shape:
        ``sr``: ``(B, 3, sH, sW)``, ``lq``: ``(B, 3, H, W)``, RGB in ``[0, 1]``.

    Example:
        >>> import torch
        >>> lq = torch.rand(1, 3, 4, 4)
        >>> sr = F.interpolate(lq, scale_factor=2, mode="nearest") + 0.1  # grey shift
        >>> float(color_consistency_loss(sr, lq, "chroma")) < 1e-6
        True
    """
    from kornia.color import rgb_to_ycbcr

    if mode not in MODES:
        raise ConfigError(f"loss.color.mode={mode!r} is unknown; choose one of {MODES}")
    if downsample not in DOWNSAMPLES:
        raise ConfigError(f"loss.color.downsample={downsample!r}; choose one of {DOWNSAMPLES}")
    if sr.dim() != 4 or sr.shape[1] != 3 or lq.shape[:2] != sr.shape[:2]:
        raise ValueError(
            f"color_consistency_loss expects RGB (B, 3, H, W) SR and LQ, got "
            f"{tuple(sr.shape)} and {tuple(lq.shape)}"
        )
    a = rgb_to_ycbcr(to_lq_space(sr, tuple(lq.shape[-2:]), downsample))
    b = rgb_to_ycbcr(lq)
    channels = {"chroma": slice(1, 3), "luma": slice(0, 1), "both": slice(0, 3)}[mode]
    return F.l1_loss(a[:, channels], b[:, channels])


class ColorConsistencyLoss(LossTerm):
    """Chroma (or luma) of SR, downsampled to the LQ size, against the LQ's.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        mode: ``chroma`` (Cb, Cr), ``luma`` (Y) or ``both``.
        downsample: ``area`` or ``bicubic``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        mode: str = "chroma",
        downsample: str = "area",
    ) -> None:
        super().__init__(weight, start_step)
        if mode not in MODES:
            raise ConfigError(f"loss.color.mode={mode!r} is unknown; choose one of {MODES}")
        if downsample not in DOWNSAMPLES:
            raise ConfigError(f"loss.color.downsample={downsample!r}; choose one of {DOWNSAMPLES}")
        self.mode, self.downsample = mode, downsample

    def compute(self, inputs: LossInputs) -> Tensor:
        return color_consistency_loss(inputs.sr, inputs.lq, self.mode, self.downsample)
