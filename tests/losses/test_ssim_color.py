"""SSIM, MS-SSIM + L1 and colour-consistency terms: known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sr_cli.errors import ConfigError
from sr_cli.losses.color import ColorConsistencyLoss, color_consistency_loss
from sr_cli.losses.ssim import MS_SSIM_WEIGHTS, ms_ssim_l1_loss, ms_ssim_scales, ssim_loss

C1 = 0.01**2


def constants(a, b, size=48):
    return torch.full((1, 3, size, size), a), torch.full((1, 3, size, size), b)


def test_ssim_of_constant_images_is_the_luminance_term():
    # flat images: contrast/structure term is C2/C2 = 1; SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    x, y = constants(0.2, 0.6)
    expected = 1 - (2 * 0.2 * 0.6 + C1) / (0.2**2 + 0.6**2 + C1)
    assert ssim_loss(x, y).item() == pytest.approx(expected, abs=1e-4)
    z = torch.rand(2, 3, 32, 32)
    assert ssim_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)


def test_ms_ssim_l1_known_value_and_scale_count():
    assert [ms_ssim_scales(s) for s in (11, 20, 21, 41, 81, 161, 500)] == [1, 1, 2, 3, 4, 5, 5]
    x, y = constants(0.2, 0.6)  # 48 px: 3 scales; only the coarsest luminance term is < 1
    lum = (2 * 0.2 * 0.6 + C1) / (0.2**2 + 0.6**2 + C1)
    w = MS_SSIM_WEIGHTS[2] / sum(MS_SSIM_WEIGHTS[:3])
    expected = 0.84 * (1 - lum**w) + 0.16 * 0.4
    assert ms_ssim_l1_loss(x, y).item() == pytest.approx(expected, abs=2e-4)
    assert ms_ssim_l1_loss(x, y, alpha=0.0).item() == pytest.approx(0.4, abs=1e-6)


def test_color_consistency_known_values():
    torch.manual_seed(0)
    lq = torch.rand(2, 3, 6, 5) * 0.8
    sr = F.interpolate(lq, scale_factor=3, mode="nearest")
    assert color_consistency_loss(sr, lq, "chroma").item() == pytest.approx(0.0, abs=1e-6)
    grey = sr + 0.1  # equal shift of R, G, B: luma moves by 0.1, chroma does not
    assert color_consistency_loss(grey, lq, "chroma").item() == pytest.approx(0.0, abs=1e-6)
    assert color_consistency_loss(grey, lq, "luma").item() == pytest.approx(0.1, abs=1e-6)
    blue = sr.clone()
    blue[:, 2] += 0.2  # BT.601: Cb = 0.564 (B - Y), Y = 0.114 B -> dCb = 0.564 * 0.886 * 0.2
    d_cb = 0.564 * (1 - 0.114) * 0.2
    d_cr = 0.713 * (0 - 0.114) * 0.2
    expected = (abs(d_cb) + abs(d_cr)) / 2
    assert color_consistency_loss(blue, lq, "chroma").item() == pytest.approx(expected, rel=2e-3)
    assert math.isfinite(color_consistency_loss(blue, lq, "both", "bicubic").item())


def test_color_options_are_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        ColorConsistencyLoss(mode="hue")
    with pytest.raises(ConfigError, match="downsample"):
        ColorConsistencyLoss(downsample="lanczos")
