"""Structural-similarity losses: ``1 - SSIM`` and the MS-SSIM + L1 mix.

* SSIM: Wang et al., "Image Quality Assessment: From Error Visibility to Structural
  Similarity", IEEE TIP 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03).
* MS-SSIM + L1: Zhao et al., "Loss Functions for Image Restoration with Neural Networks",
  IEEE TCI 2017: ``alpha * (1 - MS-SSIM) + (1 - alpha) * L1`` with ``alpha = 0.84`` (the paper
  weights the L1 part with the last scale's Gaussian; here it is the plain L1).

SSIM and MS-SSIM come from piq on RGB in ``[0, 1]``. MS-SSIM needs ``(11 - 1) * 2^(n-1) + 1``
pixels for ``n`` scales; training patches are small, so the number of scales is the largest
``n <= 5`` that fits, with Wang et al.'s (2003) scale weights renormalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape

#: MS-SSIM scale weights (Wang, Simoncelli and Bovik, 2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL_SIZE = 11


def _check(pred: Tensor, target: Tensor, name: str) -> None:
    check_same_shape(pred, target, name)
    if pred.dim() != 4:
        raise ValueError(f"{name} expects (B, C, H, W), got {tuple(pred.shape)}")
    if min(pred.shape[-2:]) < KERNEL_SIZE:
        raise ValueError(f"{name} needs images of at least {KERNEL_SIZE}x{KERNEL_SIZE}")


def ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - SSIM(pred, target)`` (mean over the batch), inputs in ``[0, 1]``.

    Example:
        >>> a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
        >>> round(float(ssim_loss(a, b)), 4)  # 1 - (2ab + C1) / (a^2 + b^2 + C1)
        0.3999
    """
    import piq

    _check(pred, target, "ssim_loss")
    return 1.0 - piq.ssim(pred.clamp(0, 1), target.clamp(0, 1), data_range=1.0, downsample=False)


def ms_ssim_scales(size: int) -> int:
    """Largest number of MS-SSIM scales (at most 5) that an image of side ``size`` allows."""
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and (KERNEL_SIZE - 1) * 2**n + 1 <= size:
        n += 1
    return n


def ms_ssim_l1_loss(pred: Tensor, target: Tensor, alpha: float = 0.84) -> Tensor:
    """``alpha * (1 - MS-SSIM) + (1 - alpha) * L1`` (Zhao et al. 2017), inputs in ``[0, 1]``."""
    import piq

    _check(pred, target, "ms_ssim_l1_loss")
    n = ms_ssim_scales(min(pred.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], device=pred.device, dtype=pred.dtype)
    ms = piq.multi_scale_ssim(
        pred.clamp(0, 1), target.clamp(0, 1), data_range=1.0, scale_weights=weights / weights.sum()
    )
    return alpha * (1.0 - ms) + (1.0 - alpha) * F.l1_loss(pred, target)


class SSIMLoss(LossTerm):
    """``1 - SSIM`` between SR and GT (RGB)."""

    def compute(self, inputs: LossInputs) -> Tensor:
        return ssim_loss(inputs.sr, inputs.gt)


class MSSSIML1Loss(LossTerm):
    """Zhao et al.'s MS-SSIM + L1 mix between SR and GT.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        alpha: share of ``1 - MS-SSIM`` (0.84 in the paper).
    """

    def __init__(self, weight: float = 1.0, start_step: int = 0, alpha: float = 0.84) -> None:
        super().__init__(weight, start_step)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"loss.ms_ssim_l1.alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def compute(self, inputs: LossInputs) -> Tensor:
        return ms_ssim_l1_loss(inputs.sr, inputs.gt, self.alpha)
