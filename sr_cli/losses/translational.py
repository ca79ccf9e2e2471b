"""Translational-consistency loss: SR of two overlapping crops must agree where they overlap.

Two LQ crops of side ``c`` are cut from the same LQ patch with a known offset ``(dy, dx)``
(in LQ pixels): the top-left and bottom-right corners (``mode="corner"``, the original
recipe) or a random pair (``mode="random"``). Both go through the generator. In HR space the
offset is ``(dy * scale, dx * scale)``, so the shared region is
``SR_a[dy*s:, dx*s:]`` and ``SR_b[:(c-dy)*s, :(c-dx)*s]``; the loss is their L1 distance.

A translation-equivariant generator gives zero; one that depends on the absolute position
(border effects, positional artefacts, GAN hallucinations that move with the crop) does not.
Applied from the first step the constraint stalls training, so the term is meant to start
late: its config sets ``start_step`` well after warm-up.

Options:
    ``detach_second``: stop the gradient through the second crop's SR (it then acts as a
    moving target, like a teacher).
    ``second_pass_losses``: names of other terms (e.g. ``[l1]``) also applied to the second
    crop's SR against the matching GT crop; the trainer adds them as ``train/loss_<name>_aux``.
    Meant for GT-based terms (pixel, perceptual; GAN only with a fully convolutional
    discriminator, since the crop is smaller than the patch); LQ-space terms would see a crop
    border. With ``detach_second`` these extra terms give no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from sr_cli.losses.base import ExtraPass, LossInputs, LossOutput, LossTerm
from sr_cli.losses.pixel import l1_loss
from sr_cli.models.common import as_levels
from sr_cli.streams import stream_generator

MODES = ("corner", "random")


def crop_offsets(
    size: tuple[int, int], crop: int, mode: str, generator: torch.Generator | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left corners ``(ya, xa), (yb, xb)`` of the two LQ crops of side ``crop`` in ``size``."""
    h, w = size
    if not 0 < crop < min(h, w):
        raise ValueError(f"crop side {crop} must be in (0, {min(h, w)}) for a {h}x{w} LQ patch")
    if mode == "corner":
        return (0, 0), (h - crop, w - crop)
    if mode != "random":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    # Offset in [1, max] on each axis, then a random placement that keeps both crops inside.
    dy = int(torch.randint(1, h - crop + 1, (1,), generator=generator))
    dx = int(torch.randint(1, w - crop + 1, (1,), generator=generator))
    ya = int(torch.randint(0, h - crop - dy + 1, (1,), generator=generator))
    xa = int(torch.randint(0, w - crop - dx + 1, (1,), generator=generator))
    return (ya, xa), (ya + dy, xa + dx)


def shared_regions(
    sr_a: Tensor, sr_b: Tensor, offset: tuple[int, int], scale: int
) -> tuple[Tensor, Tensor]:
    """The parts of two SR crops that show the same HR pixels, for an LQ offset ``(dy, dx)`` of b vs a."""
    dy, dx = offset[0] * scale, offset[1] * scale
    h, w = sr_a.shape[-2:]
    if dy >= h or dx >= w or dy < 0 or dx < 0:
        raise ValueError(f"crops with HR offset ({dy}, {dx}) do not overlap on {h}x{w}")
    return sr_a[..., dy:, dx:], sr_b[..., : h - dy, : w - dx]


def translational_consistency_loss(
    sr_a: Tensor, sr_b: Tensor, offset: tuple[int, int], scale: int
) -> Tensor:
    """L1 between two SR crops on the region they share.

    Args:
        sr_a, sr_b: SR of two equally sized LQ crops, ``(B, C, c*s, c*s)``.
        offset: ``(dy, dx)`` of crop b relative to crop a, in LQ pixels (non-negative).
        scale: SR scale.

    Example:
        >>> x = torch.rand(1, 3, 8, 8)
        >>> translational_consistency_loss(x[..., :6, :6], x[..., 2:, 2:], (1, 1), 2)
        tensor(0.)
    """
    if sr_a.shape != sr_b.shape:
        raise ValueError(
            f"crops must have the same shape, got {tuple(sr_a.shape)} and {tuple(sr_b.shape)}"
        )
    a, b = shared_regions(sr_a, sr_b, offset, scale)
    return l1_loss(a, b)


class TranslationalConsistencyLoss(LossTerm):
    """Agreement of the SR of two overlapping LQ crops (see module docstring).

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm` (start late).
        mode: ``corner`` or ``random``.
        crop_fraction: crop side as a fraction of the LQ patch side (0 < f < 1).
        detach_second: no gradient through the second crop.
        second_pass_losses: other terms to apply to the second crop as well.
        seed: seeds the random offsets (the ``translational_crop`` stream of
            :mod:`sr_cli.streams`, keyed on the step, so resumes are exact).
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 10000,
        mode: str = "corner",
        crop_fraction: float = 0.75,
        detach_second: bool = False,
        second_pass_losses: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(weight, start_step)
        if mode not in MODES:
            raise ValueError(f"translational.mode must be one of {MODES}, got {mode!r}")
        if not 0 < crop_fraction < 1:
            raise ValueError(f"translational.crop_fraction must be in (0, 1), got {crop_fraction}")
        self.mode = mode
        self.crop_fraction = crop_fraction
        self.detach_second = detach_second
        self.second_pass_losses = list(second_pass_losses)
        self.seed = seed

    def compute(self, inputs: LossInputs) -> LossOutput:
        if inputs.generator is None:
            raise ValueError("the translational-consistency loss needs the generator in LossInputs")
        lq, s = inputs.lq, inputs.scale
        h, w = lq.shape[-2:]
        crop = max(1, min(h - 1, w - 1, round(min(h, w) * self.crop_fraction)))
        rng = stream_generator(self.seed, "translational_crop", inputs.step)
        (ya, xa), (yb, xb) = crop_offsets((h, w), crop, self.mode, rng)
        lq_a = lq[..., ya : ya + crop, xa : xa + crop]
        lq_b = lq[..., yb : yb + crop, xb : xb + crop]
        levels_a = as_levels(inputs.generator(lq_a))
        levels_b = as_levels(inputs.generator(lq_b))
        sr_a, sr_b = levels_a[-1], levels_b[-1]
        if self.detach_second:
            sr_b = sr_b.detach()
            levels_b = [lv.detach() for lv in levels_b]
        loss = translational_consistency_loss(sr_a, sr_b, (yb - ya, xb - xa), s)
        if self.second_pass_losses:
            gt_b = inputs.gt[..., yb * s : (yb + crop) * s, xb * s : (xb + crop) * s]
            second = replace(inputs, sr=sr_b, sr_levels=levels_b, gt=gt_b, lq=lq_b)
            return LossOutput(loss, extra_passes=[ExtraPass(second, list(self.second_pass_losses))])
        return LossOutput(loss)
