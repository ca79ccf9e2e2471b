"""Downsample-consistency loss: compare SR with LQ in LQ space, ``d(LQ, D(SR))``.

``D`` is the very degradation that produced the LQ in this batch, applied through its
deterministic part (:meth:`~sr_cli.degradations.base.Degradation.replay`) with the parameters
each sample drew. For bicubic downsampling, ``D`` is the same MATLAB-style operator object. A
degradation without a separable deterministic part is refused with a clear message; one whose
replay skips stages (noise, JPEG, quantization, e.g. ``degradation=realesrgan``) is used, and
the term logs once, at its first step, which stages the LQ went through that ``D`` does not
reproduce.

When the LQ was made with HR context around the patch (``data.lr_context``, the default),
its outer ``lq_border`` LR pixels read HR pixels outside the SR patch, which ``D(SR)`` cannot:
the loss compares the two inside that ring, where ``D(SR = GT)`` equals the LQ exactly (before
rounding), as it does everywhere for a patch degraded alone.

On its own the loss is under-determined (many SR images share one ``D(SR)``) and the generator
learns to hide noise in the null space of ``D``; mix it with an adversarial term.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossOutput, LossTerm
from sr_cli.losses.pixel import DISTANCES, check_distance
from sr_cli.metrics.protocol import psnr

log = logging.getLogger(__name__)


def not_replayed_message(degradation: nn.Module) -> str | None:
    """What ``degradation.replay`` leaves out, as one warning line, or ``None`` when nothing."""
    skipped = list(getattr(degradation, "not_replayed", lambda: [])())
    if not skipped:
        return None
    kinds = ", ".join(dict.fromkeys(path.rsplit(".", 1)[-1].split("_", 1)[-1] for path in skipped))
    return (
        f"loss=downsample: D(SR) replays only the blur and resize stages of "
        f"{type(degradation).__name__}, not {', '.join(skipped)} ({kinds}); the LQ went through "
        "them, so d(LQ, D(SR)) stays above zero even for a perfect SR (weight the term accordingly)"
    )


def downsample_consistency_loss(lq: Tensor, sr_degraded: Tensor, distance: str = "l1") -> Tensor:
    """``d(LQ, D(SR))`` given ``D(SR)`` already computed.

    Shape:
        ``lq``, ``sr_degraded``: ``(B, C, H, W)``.
    """
    return DISTANCES[check_distance(distance, "downsample")](sr_degraded, lq)


class DownsampleConsistencyLoss(LossTerm):
    """``d(LQ, D(SR))`` with ``D`` the batch's own degradation.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        distance: ``l1`` or ``l2``.

    Logs ``lr_consistency_psnr``: the PSNR between ``D(SR)`` and LQ. At its first step, warns
    once (logger ``sr_cli.losses.downsample``) when ``D`` skips stages of the degradation.
    """

    def __init__(self, weight: float = 1.0, start_step: int = 0, distance: str = "l1") -> None:
        super().__init__(weight, start_step)
        self.distance = check_distance(distance, "downsample")
        self._warned = False

    def compute(self, inputs: LossInputs) -> LossOutput:
        if inputs.degradation is None:
            raise ValueError(
                "the downsample-consistency loss needs the batch's degradation operator"
            )
        if inputs.degradation_params is None and inputs.degradation.stochastic:
            raise ConfigError(
                "the downsample-consistency loss needs the parameters the degradation drew for each "
                "sample, but this batch's LQ was read from disk (paired data). Use a deterministic "
                "degradation (degradation=bicubic) that matches how the LR files were made."
            )
        if not self._warned:
            self._warned = True
            message = not_replayed_message(inputs.degradation)
            if message:
                log.warning(message)
        sr_degraded = inputs.degradation.replay(inputs.sr, inputs.degradation_params)
        lq = inputs.lq
        b = int(inputs.lq_border)
        if b:  # LQ made with HR context the SR patch lacks: compare where D(SR) is complete
            if 2 * b >= min(lq.shape[-2:]):
                raise ConfigError(
                    f"loss=downsample: the {lq.shape[-2]}x{lq.shape[-1]} LQ patch has no pixel "
                    f"inside its {b}-pixel context ring (data.lr_context); raise data.patch_size "
                    "or set data.lr_context=0."
                )
            lq, sr_degraded = lq[..., b:-b, b:-b], sr_degraded[..., b:-b, b:-b]
        loss = downsample_consistency_loss(lq, sr_degraded, self.distance)
        metric = psnr(sr_degraded.detach().clamp(0, 1), lq.detach()).mean()
        return LossOutput(loss, {"lr_consistency_psnr": metric})
