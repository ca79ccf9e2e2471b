"""Degrade training patches with HR context, so that their LQ is the benchmark's LQ.

A degradation that reads neighbours (blur, bicubic) makes the LQ of a patch cut out alone
differently from the LQ of the same pixels inside the whole image: at the patch edge it mirrors
the patch instead of reading the image. With MATLAB's x4 bicubic, 12.8% of the LQ pixels of a
64 px patch differ from BasicSR's LQ (made from the whole image), all in a ring of 2 LR pixels,
by up to 11 levels.

The datasets therefore cut each patch on the scale grid with ``margin`` HR pixels of context
around it (clipped at the image edge, where the whole-image operator applies its own border
rule), pad the region to a fixed size for batching, and record the valid box
(:func:`sr_cli.data.arrays.crop_with_context`). :func:`degrade_with_context` degrades every
region with the parameters its patch drew and keeps the LR pixels of the patch: they equal the
corresponding pixels of the whole image's LQ, interior and border alike, once the margin covers
the operator's reach (:meth:`~sr_cli.degradations.base.Degradation.context_margin`; 2 LR pixels
for MATLAB bicubic at any scale).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from sr_cli.degradations.base import Degradation
from sr_cli.errors import ConfigError


def degrade_with_context(
    degradation: Degradation,
    regions: Tensor,
    boxes: Tensor,
    patch: int,
    params: Mapping[str, Tensor],
    bits: int | Tensor = 8,
) -> Tensor:
    """The LQ of the centred ``patch`` x ``patch`` HR patch of every region, degraded with its
    context.

    Args:
        degradation: the HR -> LQ operator (``forward(hr, params, bits=...)``).
        regions: ``(B, C, S, S)``, each patch at ``[m, m + patch)`` on both axes,
            ``m = (S - patch) / 2``; outside ``boxes`` the pixels are padding and never read.
        boxes: ``(B, 4)`` integer ``(top, bottom, left, right)`` of the image pixels in each
            region, on the scale grid.
        patch: HR patch side, a multiple of the scale.
        params: the parameters drawn for the batch (first dimension ``B``), sliced per group.
        bits: the LQ's bit depth (an int, or ``(B,)`` per image).

    Returns:
        ``(B, C, patch / s, patch / s)``. Regions with the same box are degraded together (one
        call for every patch away from the image edges).
    """
    s = degradation.scale
    b, c, side, _ = regions.shape
    margin = (side - patch) // 2
    if patch % s or margin % s or side != patch + 2 * margin:
        raise ConfigError(
            f"context regions of {side} px around {patch} px patches are not on the x{s} grid; "
            "data.patch_size must be a multiple of the scale."
        )
    lq_side = patch // s
    out = regions.new_empty((b, c, lq_side, lq_side))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, box in enumerate(boxes.tolist()):
        groups.setdefault(tuple(int(v) for v in box), []).append(i)
    for (top, bottom, left, right), members in groups.items():
        idx = torch.tensor(members, device=regions.device)
        whole = len(members) == b
        sub = (
            regions[:, :, top:bottom, left:right]
            if whole
            else regions[idx, :, top:bottom, left:right]
        )
        sub_params = dict(params) if whole else {k: v[idx] for k, v in params.items()}
        sub_bits = bits if whole or not isinstance(bits, Tensor) else bits[idx]
        lq = degradation(sub, sub_params, bits=sub_bits)
        y, x = (margin - top) // s, (margin - left) // s
        lq = lq[:, :, y : y + lq_side, x : x + lq_side]
        if whole:
            return lq
        out[idx] = lq
    return out
