"""The bicubic reference: what a run has to beat, measured exactly as validation measures SR.

The "SR" of the reference is the LQ upscaled with the MATLAB-style bicubic ``imresize``
(clamped, rounded to 8 bits). It gets the same protocol metrics as a trained generator
(``psnr_y``, ``ssim_y``, ``psnr_rgb``) and the same LR-consistency PSNR: the upscaled image is
degraded again by the run's degradation and compared with the LQ. Bicubic is not an inverse of
the antialiased downsampling, so its LR consistency is finite (about 33-38 dB on natural
images); a generator trained with the downsample-consistency loss should exceed it.

These are plain functions: the degradation and the images come in as arguments.

Example:
    >>> from sr_cli.degradations.pipeline import ResizeDownsample
    >>> d = ResizeDownsample(4, mode="bicubic")
    >>> gt = torch.rand(1, 3, 64, 64)
    >>> sorted(bicubic_metrics(d(gt), gt, 4, d))
    ['lr_consistency_psnr', 'psnr_rgb', 'psnr_y', 'ssim_y']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from sr_cli.degradations.resize import imresize
from sr_cli.metrics.protocol import Protocol
from sr_cli.metrics.registry import MetricInputs, compute_metrics, metric_names
from sr_cli.streams import stream_generator


def bicubic_upscale(lq: Tensor, size: tuple[int, int]) -> Tensor:
    """LQ upscaled to ``size`` with the MATLAB bicubic, clamped to ``[0, 1]``."""
    return imresize(lq, size=(int(size[0]), int(size[1]))).clamp(0.0, 1.0)


def bicubic_metrics(
    lq: Tensor,
    gt: Tensor,
    scale: int,
    degradation=None,
    params=None,
    protocol: Protocol = "paper",
) -> dict[str, Tensor]:
    """Per-image protocol metrics of bicubic upscaling, plus its LR consistency when ``degradation``
    (with its drawn ``params`` if stochastic) is given, computed as validation computes them for SR.

    Shape:
        ``lq``: ``(B, C, H, W)``; ``gt``: ``(B, C, H * scale, W * scale)``; values ``(B,)``.
    """
    up = bicubic_upscale(lq, tuple(gt.shape[-2:]))
    replay = (lambda s: degradation.replay(s, params)) if degradation is not None else None
    names = metric_names(validation=True)
    if replay is None:
        names = tuple(n for n in names if n != "lr_consistency_psnr")
    values = compute_metrics(names, MetricInputs(up, gt, lq, scale, protocol, replay))
    return {name: values[:, k] for k, name in enumerate(names)}


def bicubic_reference(
    items: Iterable[Mapping],
    scale: int,
    degradation,
    seed: int = 0,
    protocol: Protocol = "paper",
) -> dict[str, float]:
    """Mean bicubic metrics over a validation set, with the LQ the training run validates on.

    Args:
        items: validation items ``{"gt": (C, H, W), "index": int}`` (and ``"lq"`` when the set
            brings its own LR images, as benchmark folders do), e.g. an evaluation dataset.
        scale: SR scale (border crop of the protocol).
        degradation: the run's degradation. LQ is made from GT with the draw validation uses
            (the ``val_degradation`` stream of :mod:`sr_cli.streams`), so the figures are those
            of the very LQ the generator is scored on (training also logs them itself, as
            ``val/bicubic_<metric>``).
        seed: the run's seed.
        protocol: ``paper`` or ``matlab``.

    Returns:
        ``{"psnr_y", "ssim_y", "psnr_rgb", "lr_consistency_psnr"}`` averaged over the images.
        ``lr_consistency_psnr`` is left out when LQ came from disk with a stochastic degradation.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for item in items:
        gt = item["gt"].unsqueeze(0).float()
        params = None
        if "lq" in item:
            lq = item["lq"].unsqueeze(0).float()
            deg = None if degradation.stochastic else degradation
        else:
            with torch.no_grad():
                params = degradation.sample(
                    gt, generator=stream_generator(seed, "val_degradation", int(item["index"]))
                )
                lq = degradation(gt, params)
            deg = degradation
        with torch.no_grad():
            values = bicubic_metrics(lq, gt, scale, deg, params, protocol)
        for key, val in values.items():
            sums[key] = sums.get(key, 0.0) + float(val.double().sum())
            counts[key] = counts.get(key, 0) + int(val.numel())
    return {key: sums[key] / counts[key] for key in sums}
