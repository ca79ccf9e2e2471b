"""The one rounding rule from ``[0, 1]`` floats to integer pixel levels.

A value ``x`` becomes level ``round(clamp(x, 0, 1) * peak)`` with ``peak = 2**bits - 1``, rounded
half to even (``torch.round`` and ``np.round`` both do). Saving an image, quantizing the LQ in a
degradation and putting SR/GT on the 8-bit grid before a metric all use this, so they agree to
the bit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def peak(bits: int) -> float:
    """The top level of ``bits``-bit pixels: 255 for 8 bits, 65535 for 16."""
    return float(2**bits - 1)


def to_levels(x: Tensor, bits: int = 8) -> Tensor:
    """``[0, 1]`` floats -> the nearest of the ``2**bits`` levels, as floats in ``[0, peak]``."""
    return torch.round(x.clamp(0.0, 1.0) * peak(bits))


def to_uint8(img: Tensor) -> np.ndarray:
    """``(3, H, W)`` (or ``(1, 3, H, W)``) float in ``[0, 1]`` -> ``(H, W, 3)`` uint8."""
    img = img[0] if img.dim() == 4 else img
    return to_levels(img.detach()).byte().permute(1, 2, 0).cpu().numpy()


def quantize_array(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float ``[0, 1]`` array -> ``uint8`` (``bits=8``) or ``uint16`` (``bits=16``)."""
    top = peak(bits)
    return np.round(np.clip(x, 0.0, 1.0) * top).astype(np.uint16 if bits == 16 else np.uint8)
