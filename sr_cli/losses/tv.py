"""Total-variation loss: a smoothness prior on the SR output (Rudin, Osher and Fatemi, 1992).

The anisotropic form sums the mean absolute (``l1``) or squared (``l2``, as in Mahendran and
Vedaldi, CVPR 2015, and Johnson et al., ECCV 2016) differences between vertical and horizontal
neighbours. It needs no target: mix it with a fidelity term (``loss=l1+tv``) and keep its weight
small, or it blurs.
"""

from __future__ import annotations

from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm, reduce_loss

NORMS = ("l1", "l2")


def tv_loss(x: Tensor, norm: str = "l1", reduction: str = "mean") -> Tensor:
    """Anisotropic total variation of a batch of images.

    ``mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|`` for ``l1``; squared differences
    for ``l2``. With ``reduction="sum"`` the differences are summed instead of averaged; with
    ``"none"`` the per-image value ``(B,)`` is returned (means over each image).

    Shape:
        ``x``: ``(B, C, H, W)`` with ``H, W >= 2``.

    Example:
        >>> import torch
        >>> tv_loss(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))
        tensor(3.)
    """
    if x.dim() != 4:
        raise ValueError(f"tv_loss expects (B, C, H, W), got {tuple(x.shape)}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"tv_loss needs images of at least 2x2, got {tuple(x.shape[-2:])}")
    if norm not in NORMS:
        raise ValueError(f"tv_loss norm must be one of {NORMS}, got {norm!r}")
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    dh, dw = (dh.abs(), dw.abs()) if norm == "l1" else (dh**2, dw**2)
    if reduction == "none":
        return dh.flatten(1).mean(1) + dw.flatten(1).mean(1)
    return reduce_loss(dh, reduction) + reduce_loss(dw, reduction)


class TVLoss(LossTerm):
    """Total variation of the SR output.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        norm: ``l1`` (absolute differences) or ``l2`` (squared differences).

    Shape:
        ``inputs.sr``: ``(B, C, H, W)``.
    """

    def __init__(self, weight: float = 1e-4, start_step: int = 0, norm: str = "l1") -> None:
        super().__init__(weight, start_step)
        if norm not in NORMS:
            raise ConfigError(f"tv.norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm

    def compute(self, inputs: LossInputs) -> Tensor:
        return tv_loss(inputs.sr, self.norm)

    def extra_repr(self) -> str:
        return f"norm={self.norm}, " + super().extra_repr()
