"""Training LR equal to benchmark LR: a patch cut with HR context (data.lr_context) and degraded
with it gives exactly the LR pixels of the whole image's LR, interior and border alike; a patch
degraded alone does not. Random degradations keep their per-patch parameters, and the
downsample-consistency loss still replays exactly the degradation that made the LQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.arrays import patch_item, to_tensor
from sr_cli.data.images import read_image
from sr_cli.degradations import BlurDownsample, ResizeDownsample
from sr_cli.degradations.context import degrade_with_context
from sr_cli.losses.base import LossInputs
from sr_cli.losses.downsample import DownsampleConsistencyLoss

NO_FLIPS = (False, False, False)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # Sides not multiples of 3 or 4: the mod-crop matters.
    return read_image(SAMPLES_DIR / "train" / "coffee.png")[:203, :150]


def locate(img: np.ndarray, patch: np.ndarray, scale: int) -> tuple[int, int]:
    """Where ``patch`` sits in ``img``, searched over every position on the scale grid."""
    p = patch.shape[0]
    hits = [
        (t, left)
        for t in range(0, img.shape[0] - p + 1, scale)
        for left in range(0, img.shape[1] - p + 1, scale)
        if np.array_equal(img[t : t + p, left : left + p], patch)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def items(img, n, patch, scale, margin, flags=NO_FLIPS):
    return [
        patch_item(img, np.random.default_rng(i), patch, scale, margin, flags, i) for i in range(n)
    ]


def batch_of(its):
    return (
        torch.stack([it["gt"] for it in its]),
        torch.stack([it["gt_context"] for it in its]),
        torch.stack([it["context_box"] for it in its]),
    )


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return np.round(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_lr_of_a_patch_equals_the_crop_of_the_whole_image_lr(image, scale):
    d = ResizeDownsample(scale)
    assert d.context_margin() == 2  # MATLAB bicubic: 4 * scale taps, 2 LR pixels either side
    patch, margin = 16 * scale, 2 * scale
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    whole = d(to_tensor(image[:h, :w])[None])[0]  # the benchmark LR (8-bit)
    its = items(image, 60, patch, scale, margin)
    gt, ctx, boxes = batch_of(its)
    lq = degrade_with_context(d, ctx, boxes, patch, {}, 8)
    alone = d(gt)
    edges, differing = 0, 0
    for i, it in enumerate(its):
        top, left = locate(image, as_uint8(it["gt"]), scale)
        assert top % scale == 0 and left % scale == 0
        edges += it["context_box"].tolist() != [0, patch + 2 * margin] * 2  # clipped context
        s = scale
        ref = whole[:, top // s : (top + patch) // s, left // s : (left + patch) // s]
        assert torch.equal(lq[i], ref), f"patch {i} at ({top}, {left})"
        differing += int(((alone[i] - ref).abs() * 255 > 0.5).sum())
    assert edges >= 3  # patches whose context the image edge clips were checked too
    # Degraded alone, the patch mirrors itself at its edges: a ring of LR pixels differs.
    share = differing / alone.numel()
    assert 0.05 < share < 0.2, share


def test_a_margin_below_the_kernel_reach_is_not_exact(image):
    d = ResizeDownsample(4)
    whole = d(to_tensor(image[:200, :148])[None])[0]
    its = items(image, 10, 64, 4, 4)  # 1 LR pixel of context: the x4 kernel reads 6.5 HR px
    gt, ctx, boxes = batch_of(its)
    lq = degrade_with_context(d, ctx, boxes, 64, {}, 8)
    mismatches = 0
    for i, it in enumerate(its):
        top, left = locate(image, as_uint8(it["gt"]), 4)
        mismatches += not torch.equal(
            lq[i], whole[:, top // 4 : top // 4 + 16, left // 4 : left // 4 + 16]
        )
    assert mismatches > 0


def test_flips_move_patch_and_context_together(image):
    """With flips and transposition, the patch's LR is the flipped LR of the unflipped patch."""
    d = ResizeDownsample(4, quantize=False)
    its = items(image, 24, 64, 4, 8, flags=(True, True, True))
    plain = items(image, 24, 64, 4, 8)  # same seeds: same positions, no flips
    gt, ctx, boxes = batch_of(its)
    lq = degrade_with_context(d, ctx, boxes, 64, {}, 8)
    _, ctx0, boxes0 = batch_of(plain)
    lq0 = degrade_with_context(d, ctx0, boxes0, 64, {}, 8)
    flipped = 0
    for i, (a, b) in enumerate(zip(its, plain)):
        ga, gb = a["gt"], b["gt"]
        for hflip in (False, True):
            for vflip in (False, True):
                for rot in (False, True):
                    g, ref = gb, lq0[i]
                    if hflip:
                        g, ref = g.flip(-1), ref.flip(-1)
                    if vflip:
                        g, ref = g.flip(-2), ref.flip(-2)
                    if rot:
                        g, ref = g.transpose(-1, -2), ref.transpose(-1, -2)
                    if torch.equal(g, ga):
                        torch.testing.assert_close(lq[i], ref, atol=1e-6, rtol=0)
                        flipped += hflip or vflip or rot
                        break
                else:
                    continue
                break
    assert flipped >= 10


def test_random_degradations_keep_their_parameters_per_patch(image):
    """blur: every patch its own kernel, and the LR of each equals the whole image blurred with
    that patch's kernel and downsampled, cropped (margin = the kernel's reach + bicubic's)."""
    d = BlurDownsample(4, kernel_size=9, kernel_list=["iso", "aniso"], sigma=[0.5, 2.0])
    margin = d.context_margin()
    assert margin == 3  # (9 // 2 + 8) HR px over 4, rounded up
    its = items(image, 6, 64, 4, margin * 4)
    gt, ctx, boxes = batch_of(its)
    params = d.sample(gt, torch.Generator().manual_seed(3))
    kernels = params["0_blur.kernel"]
    assert not torch.allclose(kernels[0], kernels[1])
    lq = degrade_with_context(d, ctx, boxes, 64, params, 8)
    whole = to_tensor(image[:200, :148])[None]
    for i, it in enumerate(its):
        top, left = locate(image, as_uint8(it["gt"]), 4)
        ref = d(whole, {"0_blur.kernel": kernels[i : i + 1]})[0]
        assert torch.equal(lq[i], ref[:, top // 4 : top // 4 + 16, left // 4 : left // 4 + 16])


def test_downsample_loss_replays_exactly_inside_the_context_ring(image):
    """D(SR = GT) equals the context-made LQ inside the ring (before rounding); on the ring it
    cannot (it lacks the context), which is why the loss leaves it out."""
    d = ResizeDownsample(4, quantize=False)
    its = items(image, 8, 64, 4, 8)
    gt, ctx, boxes = batch_of(its)
    params = d.sample(gt)
    lq = degrade_with_context(d, ctx, boxes, 64, params, 8)
    replay = d.replay(gt, params)
    inner = (replay - lq)[..., 2:-2, 2:-2]
    overshoot = (replay[..., 2:-2, 2:-2] < 0) | (replay[..., 2:-2, 2:-2] > 1)  # LQ is clamped
    assert inner[~overshoot].abs().max() < 1e-5
    assert (replay - lq).abs().max() > 1e-2  # the ring differs
    term = DownsampleConsistencyLoss()
    ring = LossInputs(sr=gt, gt=gt, lq=lq, sr_levels=[gt], scale=4, degradation=d,
                      degradation_params=params, lq_border=2)  # fmt: skip
    whole = LossInputs(sr=gt, gt=gt, lq=lq, sr_levels=[gt], scale=4, degradation=d,
                       degradation_params=params)  # fmt: skip
    inside = term(ring).loss.item()
    assert inside == pytest.approx(inner.abs().mean().item(), abs=1e-7)
    assert inside < 1e-5 and term(whole).loss.item() > 20 * inside, (inside, term(whole).loss)


def test_training_batches_carry_context_and_the_ring(tiny_cfg):
    from sr_cli.train.build import build_datamodule

    cfg = tiny_cfg("data.patch_size=32")
    dm = build_datamodule(cfg)
    assert dm.lr_context == 2  # auto: bicubic's 2 LR px (a quarter of the 8 px LR patch)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["gt_context"].shape[-1] == 32 + 2 * 8
    assert tuple(batch["bits"].tolist()) == (8, 8)
    assert build_datamodule(tiny_cfg("data.lr_context=0")).lr_context == 0


def test_a_bad_lr_context_is_one_line(tiny_cfg):
    from sr_cli.errors import ConfigError
    from sr_cli.train.build import build_datamodule

    with pytest.raises(ConfigError, match="data.lr_context=-1"):
        build_datamodule(tiny_cfg("data.lr_context=-1"))
