"""Translational consistency: exact alignment, known values, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.losses.base import LossInputs
from sr_cli.losses.translational import (
    TranslationalConsistencyLoss,
    crop_offsets,
    shared_regions,
    translational_consistency_loss,
)


class Nearest(nn.Module):
    """Translation-equivariant: nearest upsampling, optionally plus a row ramp (position-dependent)."""

    def __init__(self, scale: int, ramp: float = 0.0) -> None:
        super().__init__()
        self.scale = scale
        self.ramp = ramp
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        rows = torch.arange(up.shape[-2], dtype=up.dtype).view(1, 1, -1, 1)
        return self.w * (up + self.ramp * rows)


def _inputs(gen, lq, scale, step=0):
    gt = F.interpolate(lq, scale_factor=scale, mode="nearest")
    return LossInputs(sr=gt, gt=gt, lq=lq, sr_levels=[gt], step=step, scale=scale, generator=gen)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("mode", ["corner", "random"])
def test_equivariant_generator_gives_exactly_zero(scale, mode):
    lq = torch.rand(2, 3, 12, 12)
    term = TranslationalConsistencyLoss(start_step=0, mode=mode, crop_fraction=0.75)
    for step in range(3):  # several random offsets
        assert term(_inputs(Nearest(scale), lq, scale, step)).loss.item() == 0.0


def test_position_dependent_generator_gives_known_value():
    """Row ramp r*alpha: the crops are dy LQ rows = dy*s HR rows apart, so |diff| = dy*s*alpha."""
    scale, alpha = 3, 0.01
    lq = torch.rand(1, 3, 12, 12)
    term = TranslationalConsistencyLoss(start_step=0, mode="corner", crop_fraction=0.75)
    loss = term(_inputs(Nearest(scale, ramp=alpha), lq, scale)).loss.item()
    dy = 12 - 9  # corner crops of side 9 in a 12x12 patch
    assert loss == pytest.approx(dy * scale * alpha, rel=1e-5)


def test_hr_offset_is_lq_offset_times_scale():
    hr = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16)
    # Two HR crops of side 12 at (0, 0) and (2*2, 1*2): LQ offset (2, 1) at scale 2.
    a, b = hr[..., 0:12, 0:12], hr[..., 4:16, 2:14]
    ra, rb = shared_regions(a, b, (2, 1), scale=2)
    assert torch.equal(ra, rb)
    assert translational_consistency_loss(a, b, (2, 1), 2).item() == 0.0
    # One LQ pixel off is not aligned.
    assert translational_consistency_loss(a, b, (1, 1), 2).item() > 0


def test_crop_offsets_stay_inside_and_overlap():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        (ya, xa), (yb, xb) = crop_offsets((16, 20), 12, "random", g)
        assert 0 <= ya and 0 <= xa and yb + 12 <= 16 and xb + 12 <= 20
        assert 1 <= yb - ya < 12 and 1 <= xb - xa < 12
    assert crop_offsets((16, 20), 12, "corner") == ((0, 0), (4, 8))
    with pytest.raises(ValueError):
        crop_offsets((16, 16), 16, "corner")


def test_detach_second_changes_the_gradient():
    scale, alpha = 2, 0.1
    lq = torch.rand(1, 3, 8, 8)
    grads = {}
    for detach in (False, True):
        gen = Nearest(scale, ramp=alpha)
        term = TranslationalConsistencyLoss(
            start_step=0, mode="corner", crop_fraction=0.75, detach_second=detach
        )
        term(_inputs(gen, lq, scale)).loss.backward()
        grads[detach] = gen.w.grad.item()
    dy = 8 - 6
    assert grads[False] == pytest.approx(dy * scale * alpha, rel=1e-5)  # d/dw of w * const
    assert grads[True] > grads[False]  # now also the image term of the first crop


def test_second_pass_is_published_for_other_terms():
    lq = torch.rand(1, 3, 8, 8)
    term = TranslationalConsistencyLoss(start_step=0, second_pass_losses=["l1"])
    inputs = _inputs(Nearest(2), lq, 2)
    (extra,) = term(inputs).extra_passes
    aux, names = extra.inputs, extra.terms
    assert names == ["l1"]
    assert aux.sr.shape == aux.gt.shape == (1, 3, 12, 12)
    assert torch.equal(aux.sr, aux.gt)  # nearest SR of the crop equals the matching GT crop


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode"):
        TranslationalConsistencyLoss(mode="diagonal")
    with pytest.raises(ValueError, match="crop_fraction"):
        TranslationalConsistencyLoss(crop_fraction=1.0)


def test_trains_with_second_pass_l1(tiny_cfg, val_subset):
    from sr_cli.train.training import train

    metrics, _ = train(
        tiny_cfg(
            "loss=[l1,translational]",
            "loss.translational.start_step=1",
            "loss.translational.second_pass_losses=[l1]",
            f"data.val_dir={val_subset}",
            "trainer.max_steps=2",
        )
    )
    assert metrics["train/loss_translational"] > 0
    assert "train/loss_l1_aux" in metrics
