"""LDL: locally discriminative learning of GAN artifacts (Liang, Zeng and Zhang, "Details or
Artifacts: A Locally Discriminative Learning Approach to Realistic Image Super-Resolution",
CVPR 2022).

The residual ``r = sum_c |GT - SR|`` (one channel) gives an artifact map

    M = var(r over the image) ** (1/5) * var(r over a k x k window around each pixel)

(unbiased variances; reflect padding), which is large where the residual is noisy, as GAN
artifacts are, and small on flat regions and on consistent texture. The loss is
``L1(M * SR, M * GT)`` with ``M`` detached. The paper refines ``M`` with the EMA generator's
output: pixels where the EMA is *further* from GT than the current model are zeroed. With
``ema.enabled=true`` the trainer passes the EMA generator (``inputs.ema_generator``) and the map
is refined; otherwise it is unrefined (the paper's ablation "w/o refinement").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape
from sr_cli.models.common import as_levels


def local_variance(x: Tensor, kernel_size: int = 7) -> Tensor:
    """Unbiased variance of each pixel's ``kernel_size`` window (reflect padding).

    Shape: ``(B, 1, H, W) -> (B, 1, H, W)``.
    """
    pad = (kernel_size - 1) // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel_size)
    return patches.var(dim=1, unbiased=True).view_as(x)


def artifact_map(
    sr: Tensor, gt: Tensor, kernel_size: int = 7, sr_ema: Tensor | None = None
) -> Tensor:
    """The LDL artifact map ``M`` ``(B, 1, H, W)`` (no gradient)."""
    with torch.no_grad():
        residual = (gt - sr).abs().sum(1, keepdim=True)
        patch_level = residual.var(dim=(1, 2, 3), unbiased=True, keepdim=True) ** 0.2
        m = patch_level * local_variance(residual, kernel_size)
        if sr_ema is not None:
            residual_ema = (gt - sr_ema).abs().sum(1, keepdim=True)
            m = m.masked_fill(residual < residual_ema, 0.0)
    return m


def ldl_loss(sr: Tensor, gt: Tensor, kernel_size: int = 7, sr_ema: Tensor | None = None) -> Tensor:
    """``L1(M * SR, M * GT)`` with the artifact map ``M`` of :func:`artifact_map`."""
    check_same_shape(sr, gt, "ldl_loss")
    m = artifact_map(sr, gt, kernel_size, sr_ema)
    return F.l1_loss(m * sr, m * gt)


class LDLLoss(LossTerm):
    """Liang et al.'s artifact-map loss; mix it with a GAN term (``loss=l1+perceptual+gan+ldl``).

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm` (the paper uses 1.0).
        kernel_size: odd window of the local variance (7 in the paper).
    """

    def __init__(self, weight: float = 1.0, start_step: int = 0, kernel_size: int = 7) -> None:
        super().__init__(weight, start_step)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(f"loss.ldl.kernel_size must be odd and >= 3, got {kernel_size}")
        self.kernel_size = int(kernel_size)

    def compute(self, inputs: LossInputs) -> Tensor:
        sr_ema = None
        if inputs.ema_generator is not None:
            with torch.no_grad():
                sr_ema = as_levels(inputs.ema_generator(inputs.lq))[-1]
        return ldl_loss(inputs.sr, inputs.gt, self.kernel_size, sr_ema)
