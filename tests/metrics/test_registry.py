"""The metric registry: one complete entry per metric, weight files that match piq's."""

from __future__ import annotations

import os

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.metrics.protocol import protocol_metrics
from sr_cli.metrics.registry import (
    MetricInputs,
    MetricSpec,
    compute_metrics,
    get_metric,
    header,
    metric_names,
    registered,
    select_metrics,
)


def test_every_entry_is_complete():
    names = metric_names()
    assert set(metric_names("default")) == {
        "psnr_y",
        "ssim_y",
        "psnr_rgb",
        "lpips",
        "dists",
        "lr_consistency_psnr",
    }
    assert set(metric_names(validation=True)) == {
        "psnr_y",
        "ssim_y",
        "psnr_rgb",
        "lr_consistency_psnr",
    }
    for name in names:
        spec = get_metric(name)
        assert spec.label and spec.decimals in (2, 3, 4) and callable(spec.fn)
    assert header("psnr_y") == "PSNR_Y ↑" and header("lpips") == "LPIPS ↓"
    # A ratio whose GT value is 1 has a target, not a direction.
    assert header("hf_ratio") == "HF ratio (GT=1) →1" and header("lattice_db").endswith("→0")
    assert get_metric("ssim_y").format(0.123456) == "0.1235"
    assert get_metric("ssim_y").format(float("nan")) == "n/a"


def test_declared_weight_files_are_those_piq_loads():
    import piq
    from torchvision.models import VGG16_Weights

    vgg = os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    assert get_metric("lpips").weight_files == (vgg, os.path.basename(piq.LPIPS._weights_url))
    assert get_metric("dists").weight_files == (vgg, os.path.basename(piq.DISTS._weights_url))


def test_protocol_entries_equal_the_protocol_module():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 24, 20, generator=g)
    sr = (gt + 0.05 * torch.randn(2, 3, 24, 20, generator=g)).clamp(0, 1)
    x = MetricInputs(sr, gt, gt[..., ::2, ::2], scale=2, protocol="matlab")
    table = compute_metrics(["psnr_y", "ssim_y", "psnr_rgb", "lr_consistency_psnr"], x)
    ref = protocol_metrics(sr, gt, 2, "matlab")
    assert torch.equal(table[:, 0], ref["psnr_y"])
    assert torch.equal(table[:, 1], ref["ssim_y"])
    assert torch.equal(table[:, 2], ref["psnr_rgb"])
    assert torch.isnan(table[:, 3]).all()  # no replay given: not applicable


def test_register_select_and_errors():
    spec = MetricSpec("zero", "Zero", 1, False, lambda x: torch.zeros(x.gt.shape[0]))
    with registered(spec):
        assert "zero" in metric_names("extra")
        assert select_metrics(["psnr_y"], ["zero"]).metrics == ["psnr_y", "zero"]
        with pytest.raises(ConfigError, match="already registered"):
            from sr_cli.metrics.registry import register_metric

            register_metric(spec)
    assert "zero" not in metric_names()
    with pytest.raises(ConfigError, match="unknown metric 'zero' in extra_metrics"):
        select_metrics(["psnr_y"], ["zero"])
    with pytest.raises(ConfigError, match="unknown metric 'vif' in metrics"):
        select_metrics(["vif"])
