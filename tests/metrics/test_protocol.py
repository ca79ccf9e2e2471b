"""PSNR/SSIM under the paper protocol, against an independent implementation of the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from sr_cli.metrics.protocol import protocol_metrics, psnr, psnr_rgb, psnr_y, rgb_to_y, ssim_y


# ----------------------------------------------------------------- independent reference
def ref_y(img_uint8: np.ndarray, round_y: bool = False) -> np.ndarray:
    """BT.601 studio-swing luma of an (H, W, 3) 8-bit RGB image, in [16, 235]."""
    img = img_uint8.astype(np.float64)
    y = 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0
    return np.floor(y + 0.5) if round_y else y  # MATLAB: halves away from zero


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, valid region, L=255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ax = np.arange(11) - 5
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(x):
        return correlate(x, g, mode="constant")[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    )
    return float(ssim_map.mean())


def _pair(seed=0, h=40, w=36):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    noise = rng.normal(0, 12, size=gt.shape)
    sr = np.clip(gt + noise, 0, 255) / 255.0  # float SR, not yet rounded
    return gt, sr


def _t(img01: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img01.transpose(2, 0, 1)))[None].float()


# ----------------------------------------------------------------- known values
def test_known_value_one_level_offset():
    """SR = GT + 1/255 on every channel: Y differs by 219/255, PSNR = 10 log10(255^2 / (219/255)^2)."""
    gt = torch.full((1, 3, 16, 16), 128 / 255)
    sr = gt + 1 / 255
    expected = 10 * math.log10(255**2 / (219 / 255) ** 2)
    assert psnr_y(sr, gt, crop=2).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(49.4527, abs=1e-4)
    assert psnr_rgb(sr, gt, crop=2).item() == pytest.approx(10 * math.log10(255**2), abs=1e-9)


def test_y_of_white_and_black():
    white = torch.full((1, 3, 2, 2), 255.0)
    black = torch.zeros((1, 3, 2, 2))
    assert rgb_to_y(white).flatten()[0].item() == pytest.approx(235.0, abs=1e-9)
    assert rgb_to_y(black).flatten()[0].item() == pytest.approx(16.0)


# ----------------------------------------------------------------- against the reference
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("protocol", ["paper", "matlab"])
def test_psnr_ssim_match_reference(scale, protocol):
    gt, sr = _pair(seed=scale)
    sr8 = np.round(np.clip(sr, 0, 1) * 255).astype(np.uint8)  # protocol: SR rounded to 8 bits first
    round_y = protocol == "matlab"
    a = ref_y(sr8, round_y)[scale:-scale, scale:-scale]
    b = ref_y(gt, round_y)[scale:-scale, scale:-scale]
    got_psnr = psnr_y(_t(sr), _t(gt / 255.0), crop=scale, protocol=protocol).item()
    got_ssim = ssim_y(_t(sr), _t(gt / 255.0), crop=scale, protocol=protocol).item()
    assert got_psnr == pytest.approx(ref_psnr(a, b), abs=1e-9)
    assert got_ssim == pytest.approx(ref_ssim(a, b), abs=1e-5)


def test_protocols_differ_by_hundredths_of_a_db():
    gt, sr = _pair(seed=7, h=64, w=64)
    paper = psnr_y(_t(sr), _t(gt / 255.0), crop=4, protocol="paper").item()
    matlab = psnr_y(_t(sr), _t(gt / 255.0), crop=4, protocol="matlab").item()
    assert paper != matlab
    assert abs(paper - matlab) < 0.1


def test_border_crop_and_rounding_matter():
    gt = torch.full((1, 3, 20, 20), 0.5)
    sr = gt.clone()
    sr[..., :2, :] = 0.0  # damage only the 2-pixel border
    assert psnr_y(sr, gt, crop=2).item() == math.inf  # cropped away: identical, as in BasicSR
    assert psnr_y(sr, gt, crop=1).item() < 40
    # Sub-quantum differences vanish once SR is rounded to 8 bits.
    tiny = gt + 0.4 / 255
    assert psnr_y(tiny, gt, crop=2).item() == psnr_y(gt, gt, crop=2).item()


def test_ssim_is_not_downsampled():
    """piq.ssim downsamples large images by default; the protocol must not."""
    import piq

    from sr_cli.data import SAMPLES_DIR
    from sr_cli.data.images import read_image
    from sr_cli.degradations.resize import imresize

    gt = _t(
        read_image(SAMPLES_DIR / "train" / "rocket.png") / 255.0
    )  # 420x636: piq would pool by 2
    sr = imresize(imresize(gt, scale=1 / 4), scale=4).clamp(0, 1)  # bicubic x4 baseline
    ours = ssim_y(sr, gt, crop=4).item()
    y_sr = rgb_to_y(torch.round(sr.double() * 255))[..., 4:-4, 4:-4]
    y_gt = rgb_to_y(torch.round(gt.double() * 255))[..., 4:-4, 4:-4]
    assert ours == pytest.approx(ref_ssim(y_sr[0, 0].numpy(), y_gt[0, 0].numpy()), abs=1e-6)
    downsampled = piq.ssim(y_sr, y_gt, data_range=255.0, downsample=True).item()
    assert downsampled - ours > 0.05


def test_protocol_metrics_per_image_and_plain_psnr():
    gt = torch.rand(3, 3, 24, 24)
    sr = (gt + 0.02 * torch.randn_like(gt)).clamp(0, 1)
    m = protocol_metrics(sr, gt, scale=2)
    assert set(m) == {"psnr_y", "ssim_y", "psnr_rgb"}
    assert all(v.shape == (3,) for v in m.values())
    assert psnr(gt, gt + 0.1).mean().item() == pytest.approx(20.0, abs=1e-4)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same shape"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 10), crop=1)


def test_ssim_equals_piq_without_downsampling():
    import piq

    from sr_cli.metrics.protocol import ssim

    x = torch.rand(2, 1, 70, 90, dtype=torch.float64) * 219 + 16
    y = (x + 4 * torch.randn_like(x)).clamp(16, 235)
    ref = piq.ssim(x, y, data_range=255.0, reduction="none", downsample=False)
    assert torch.allclose(ssim(x, y), ref, atol=1e-12, rtol=0)
    rgb = torch.rand(1, 3, 40, 40, dtype=torch.float64) * 255
    ref3 = piq.ssim(rgb, rgb.flip(-1), data_range=255.0, downsample=False)
    assert ssim(rgb, rgb.flip(-1)).item() == pytest.approx(ref3.item(), abs=1e-12)


def test_matlab_protocol_rounds_halves_away_from_zero():
    # R = G = B = v gives Y = 16 + 219 v / 255; v = 85 gives exactly 89.0, and
    # v with Y = x.5 exists: 219 v / 255 = k + 0.5 -> pick v so the fraction is .5 within float.
    rgb = torch.full((1, 3, 1, 1), 0.0)
    y = rgb_to_y(rgb + 255 * (0.5 / 219), round_y=True)  # Y = 16.5 -> 17 (round-half-even: 16)
    assert y.item() == 17.0
