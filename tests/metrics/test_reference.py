"""The bicubic reference figures (what `make train` has to beat)."""

from __future__ import annotations

import pytest
import torch

from sr_cli.data import sample_dir
from sr_cli.data.datasets import open_eval_dataset
from sr_cli.degradations.pipeline import ResizeDownsample
from sr_cli.metrics.reference import bicubic_metrics, bicubic_reference


def test_bicubic_reference_on_bundled_val_images():
    """26.14 dB PSNR_Y is the bicubic figure of the 3 bundled validation images (issue 9)."""
    ref = bicubic_reference(
        open_eval_dataset(sample_dir("val"), 4), 4, ResizeDownsample(4, mode="bicubic")
    )
    assert ref["psnr_y"] == pytest.approx(26.14, abs=0.005)
    # Bicubic is not the inverse of the antialiased downsampling: finite LR consistency.
    assert 30.0 < ref["lr_consistency_psnr"] < 45.0
    assert set(ref) == {"psnr_y", "ssim_y", "psnr_rgb", "lr_consistency_psnr"}


def test_bicubic_of_a_constant_image_is_exact():
    d = ResizeDownsample(4, mode="bicubic")
    gt = torch.full((1, 3, 32, 32), 100 / 255)
    out = bicubic_metrics(d(gt), gt, 4, d)
    assert torch.isinf(out["psnr_y"]).all()
    assert out["lr_consistency_psnr"].item() > 100  # D(up(LQ)) == LQ up to float rounding


def test_items_with_their_own_lq_are_used_as_is():
    d = ResizeDownsample(4, mode="bicubic")
    gt = torch.rand(3, 32, 32)
    lq = d(gt[None])[0]
    made = bicubic_reference([{"gt": gt, "index": 0}], 4, d)
    given = bicubic_reference([{"gt": gt, "lq": lq, "index": 0}], 4, d)
    assert made == pytest.approx(given)
