"""Pixel losses: L1, L2 (MSE), Charbonnier and smooth L1.

Every loss has a functional form (``l1_loss``) and an ``nn.Module`` term (``L1Loss``). With
``levels="all"`` a term supervises every output of a progressive model (e.g. LapSRN's pyramid),
each level against GT resized to its size; the default ``"last"`` uses the final output only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape, pyramid_targets, reduce_loss


def l1_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error.

    Shape:
        ``pred``, ``target``: any shape, equal.

    Example:
        >>> l1_loss(torch.zeros(2), torch.tensor([1.0, 3.0]))
        tensor(2.)
    """
    check_same_shape(pred, target, "l1_loss")
    return reduce_loss((pred - target).abs(), reduction)


class PixelLossTerm(LossTerm):
    """A pixel loss between SR and GT, optionally on every pyramid level."""

    def __init__(self, weight: float = 1.0, start_step: int = 0, levels: str = "last") -> None:
        super().__init__(weight, start_step)
        if levels not in ("last", "all"):
            raise ValueError(f"levels must be 'last' or 'all', got {levels!r}")
        self.levels = levels

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, inputs: LossInputs) -> Tensor:
        if self.levels == "last":
            return self.distance(inputs.sr, inputs.gt)
        pairs = pyramid_targets(inputs)
        return torch.stack([self.distance(p, t) for p, t in pairs]).sum()


class L1Loss(PixelLossTerm):
    """L1 between SR and GT (EDSR, RCAN, ESRGAN's pre-training)."""

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return l1_loss(pred, target)


def mse_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error (SRCNN, VDSR, ESPCN)."""
    check_same_shape(pred, target, "mse_loss")
    return reduce_loss((pred - target) ** 2, reduction)


class MSELoss(PixelLossTerm):
    """L2 / MSE between SR and GT."""

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return mse_loss(pred, target)


def charbonnier_loss(
    pred: Tensor, target: Tensor, eps: float = 1e-3, reduction: str = "mean"
) -> Tensor:
    """Charbonnier penalty ``sqrt((pred - target)^2 + eps^2)``, a differentiable L1 (LapSRN uses eps=1e-3)."""
    check_same_shape(pred, target, "charbonnier_loss")
    return reduce_loss(torch.sqrt((pred - target) ** 2 + eps * eps), reduction)


class CharbonnierLoss(PixelLossTerm):
    """Charbonnier loss between SR and GT.

    Args:
        eps: smoothing constant (1e-3 in LapSRN).
    """

    def __init__(
        self, weight: float = 1.0, start_step: int = 0, levels: str = "last", eps: float = 1e-3
    ):
        super().__init__(weight, start_step, levels)
        self.eps = eps

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return charbonnier_loss(pred, target, self.eps)


def smooth_l1_loss(
    pred: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Huber-style smooth L1: quadratic below ``beta``, linear above."""
    check_same_shape(pred, target, "smooth_l1_loss")
    return F.smooth_l1_loss(pred, target, beta=beta, reduction=reduction)


class SmoothL1Loss(PixelLossTerm):
    """Smooth L1 between SR and GT.

    Args:
        beta: transition point between the quadratic and linear regimes.
    """

    def __init__(
        self, weight: float = 1.0, start_step: int = 0, levels: str = "last", beta: float = 0.01
    ):
        super().__init__(weight, start_step, levels)
        self.beta = beta

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(pred, target, self.beta)


#: Elementwise distances that feature- and LQ-space terms can be configured with.
DISTANCES = {"l1": l1_loss, "l2": mse_loss}


def check_distance(distance: str, owner: str) -> str:
    """Validate a ``distance`` option (``l1`` or ``l2``) of term ``owner``."""
    if distance not in DISTANCES:
        raise ConfigError(f"{owner}.distance must be one of {sorted(DISTANCES)}, got {distance!r}")
    return distance
