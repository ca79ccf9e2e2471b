"""Paired augmentation: dihedral transforms, mixup and CutBlur."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sr_cli.data.augment import PairedAugment, sample_beta
from sr_cli.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pair(b=16, size=16, seed=0):
    gt = torch.rand(b, 3, size, size, generator=gen(seed))
    return F.avg_pool2d(gt, 2), gt  # area downsampling commutes with flips and transposes


def test_dihedral_transforms_are_applied_identically_to_lq_and_gt():
    lq, gt = pair()
    lq2, gt2 = PairedAugment()(lq, gt, gen(1))
    torch.testing.assert_close(lq2, F.avg_pool2d(gt2, 2))
    assert not torch.equal(gt2, gt)


def test_all_eight_dihedral_transforms_occur():
    gt = torch.arange(16.0).view(1, 1, 4, 4).expand(64, 3, 4, 4)
    _, out = PairedAugment()(gt[..., ::2, ::2], gt, gen(0))
    seen = {tuple(o[0].flatten().tolist()) for o in out}
    assert len(seen) == 8


def test_non_square_uses_flips_only_and_seeds_reproduce():
    lq, gt = pair()
    lq, gt = lq[..., :4], gt[..., :8]
    a = PairedAugment()(lq, gt, gen(3))
    b = PairedAugment()(lq, gt, gen(3))
    assert a[1].shape == gt.shape
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = PairedAugment()(lq, gt, gen(4))
    assert not torch.equal(a[1], c[1])


def test_beta_sampler_statistics():
    lam = sample_beta(1.2, 4000, gen(0), "cpu")
    assert lam.min() > 0 and lam.max() < 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lam.var().item() == pytest.approx(1 / (4 * (2 * 1.2 + 1)), rel=0.1)


def test_mixup_blends_pairs_with_the_same_weights():
    lq, gt = pair()
    aug = PairedAugment(hflip=False, vflip=False, rot90=False, mixup_prob=1.0)
    p = aug.sample(16, "cpu", gen(0))
    lq2, gt2 = aug(lq, gt, params=p)
    lam = p["mixup_lam"].view(-1, 1, 1, 1)
    torch.testing.assert_close(gt2, lam * gt + (1 - lam) * gt[p["mixup_perm"]])
    torch.testing.assert_close(lq2, F.avg_pool2d(gt2, 2))  # the pair stays consistent


def test_cutblur_pastes_a_box_of_the_other_resolution():
    gt = torch.rand(8, 3, 32, 32, generator=gen(0))
    lq_up = torch.rand(8, 3, 32, 32, generator=gen(1))
    aug = PairedAugment(hflip=False, vflip=False, rot90=False, cutblur_prob=1.0)
    p = aug.sample(8, "cpu", gen(2))
    out, gt2 = aug(lq_up, gt, params=p)
    assert torch.equal(gt2, gt)
    from_gt = (out == gt).all(1)
    from_lq = (out == lq_up).all(1)
    assert (from_gt | from_lq).all()
    frac = from_gt.float().mean((-1, -2))
    hr_into_lr = p["cutblur_hr_into_lr"]
    box = torch.where(hr_into_lr, frac, 1 - frac)  # fraction of the image inside the box
    assert torch.allclose(box, torch.full_like(box, 0.7**2), atol=0.06)


def test_cutblur_needs_same_resolution_or_upsampling():
    lq, gt = pair(4)
    with pytest.raises(ConfigError, match="same resolution"):
        PairedAugment(cutblur_prob=1.0)(lq, gt, gen(0))
    out, _ = PairedAugment(cutblur_prob=1.0, cutblur_upsample=True)(lq, gt, gen(0))
    assert out.shape == gt.shape


def test_context_regions_and_their_boxes_turn_with_the_patch():
    """dihedral_regions: the valid box follows the pixels (NaN padding stays outside it), and
    the centre of the turned region is the turned patch."""
    b, side, patch = 64, 12, 4
    regions = torch.rand(b, 1, side, side, generator=gen(2))
    boxes = torch.tensor([[0, 8, 2, 12]] * b)  # image pixels in rows 0..8, columns 2..12
    padded = regions.clone()
    padded[:, :, 8:, :] = float("nan")
    padded[:, :, :, :2] = float("nan")
    augment = PairedAugment()
    p = augment.sample(b, "cpu", gen(3))
    turned, new_boxes = augment.dihedral_regions(padded, boxes, p)
    for i in range(b):
        t, bt, lf, rt = new_boxes[i].tolist()
        valid = ~torch.isnan(turned[i, 0])
        assert valid[t:bt, lf:rt].all() and int(valid.sum()) == (bt - t) * (rt - lf)
    m = (side - patch) // 2
    centre = turned[:, :, m : m + patch, m : m + patch]
    assert torch.equal(centre, augment.dihedral(padded[:, :, m : m + patch, m : m + patch], p))
    assert len({tuple(x) for x in new_boxes.tolist()}) == 8  # every dihedral transform occurred
    rest = augment.without_dihedral(p)
    assert not any(rest[k].any() for k in ("hflip", "vflip", "transpose"))
