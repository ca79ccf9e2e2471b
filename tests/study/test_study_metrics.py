"""The studies' metrics (hf_ratio, checkerboard, translation_inconsistency) against values
known from the construction of synthetic images, not from the implementation."""

from __future__ import annotations

import math

import pytest
import torch

from sr_cli.metrics.registry import MetricInputs, MetricNotApplicable, get_metric


def gray(img: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> ``(1, 3, H, W)`` with R = G = B, rounded to the 8-bit grid."""
    return (torch.round(img.clamp(0, 1) * 255) / 255).expand(3, -1, -1)[None].double()


def grid(n: int):
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return y.double(), x.double()


def value(name: str, sr, gt, scale=4, lq=None, upscale=None) -> float:
    lq = lq if lq is not None else torch.zeros(1, 3, gt.shape[-2] // scale, gt.shape[-1] // scale)
    return float(get_metric(name)(MetricInputs(sr, gt, lq, scale, upscale=upscale))[0])


# 72 px with the 4-px border cropped: 64 px, so every frequency k/64 is an exact FFT bin.
N, S = 72, 4


def test_hf_ratio_is_the_power_ratio_of_a_high_frequency_sinusoid():
    # Low frequency 2/64 (below the LQ Nyquist 1/8) plus a high one 24/64 = 0.375 cycles/pixel.
    # The power of a sinusoid is proportional to its amplitude squared, so doubling the high
    # one's amplitude multiplies the high-band energy by 4, the low one does not count.
    y, x = grid(N)
    low = 0.15 * torch.cos(2 * math.pi * 2 * (x - S) / 64)
    high = torch.cos(2 * math.pi * 24 * (y - S) / 64)
    gt = gray(0.5 + low + 0.08 * high)
    sr = gray(0.5 + 0.5 * low + 0.16 * high)  # the low band changes too: it must not count
    assert value("hf_ratio", gt, gt) == pytest.approx(1.0)
    assert value("hf_ratio", sr, gt) == pytest.approx(4.0, rel=0.02)  # 8-bit rounding noise
    blurry = gray(0.5 + low)
    assert value("hf_ratio", blurry, gt) < 0.01


def test_hf_ratio_of_white_noise_over_a_smooth_image():
    # White noise of variance v has the same expected power N*v in every bin; the share of bins
    # above 1/8 cycles/pixel is 1 - pi * (1/8)^2 / 1 (a disc of radius 1/8 in the unit square
    # of frequencies), so added noise of variance v adds N^2 * v * that share.
    torch.manual_seed(0)
    y, x = grid(N)
    smooth = 0.5 + 0.2 * torch.cos(2 * math.pi * 24 * (x - S) / 64)
    noise = torch.randn(N, N) * 0.05
    gt, sr = gray(smooth), gray(smooth + noise)
    share = 1 - math.pi / 64
    y_gain = (65.481 + 128.553 + 24.966) / 255  # BT.601 luma of a gray pixel, per level
    gt_energy = 2 * (0.2 * 255 * y_gain * 64 * 64 / 2) ** 2  # two bins, |F| = A N^2 / 2
    noise_energy = (64 * 64) ** 2 * (0.05 * 255 * y_gain) ** 2 * share  # bins x N^2 v
    expected = 1 + noise_energy / gt_energy
    assert expected == pytest.approx(1.119, abs=1e-3)
    assert value("hf_ratio", sr, gt) == pytest.approx(expected, rel=0.03)


def test_checkerboard_counts_power_at_the_scale_lattice():
    # GT carries a cosine of period 4 on x (lattice frequency (0, 1/4)) plus one off the
    # lattice. SR adds a pixel checkerboard (-1)^(x+y), frequency (1/2, 1/2), also on the
    # lattice for scale 4. Energies: cosine of amplitude A: 2 bins of (A N^2 / 2)^2;
    # checkerboard of amplitude A: 1 bin of (A N^2)^2. With A = 0.1 for both, SR/GT = 3.
    y, x = grid(N)
    base = (
        0.5 + 0.1 * torch.cos(2 * math.pi * (x - S) / 4) + 0.1 * torch.cos(2 * math.pi * 5 * y / 64)
    )
    checker = 0.1 * (-1.0) ** (x + y)
    gt, sr = gray(base), gray(base + checker)
    assert value("checkerboard", gt, gt) == pytest.approx(1.0)
    assert value("checkerboard", sr, gt) == pytest.approx(3.0, rel=0.02)
    # Power off the lattice does not count.
    off = gray(base + 0.1 * torch.cos(2 * math.pi * 7 * (x - S) / 64))
    assert value("checkerboard", off, gt) == pytest.approx(1.0, rel=0.02)


def test_ratios_are_not_applicable_against_a_constant_gt():
    flat = gray(torch.full((N, N), 0.5))
    with pytest.raises(MetricNotApplicable, match="GT has no"):
        get_metric("checkerboard")(MetricInputs(flat, flat, flat[..., ::4, ::4], 4))


def test_translation_inconsistency():
    torch.manual_seed(1)
    lq = torch.rand(1, 3, 20, 20).double()
    nearest = lambda t: t.repeat_interleave(4, -2).repeat_interleave(4, -1)  # noqa: E731
    gt = nearest(lq)
    # A shift-equivariant upscaler agrees with itself on the shared region.
    assert value("translation_inconsistency", gt, gt, lq=lq, upscale=nearest) == 0.0

    # An upscaler that paints each crop with its mean: the two crops differ by the difference
    # of their means, in 8-bit levels, everywhere.
    def mean_fill(t):
        return t.mean(dim=(-3, -2, -1), keepdim=True).expand(
            -1, 3, t.shape[-2] * 4, t.shape[-1] * 4
        )

    a, b = lq[..., :16, :16].mean(), lq[..., 4:, 4:].mean()
    expected = abs(round(float(a) * 255) - round(float(b) * 255))
    assert value("translation_inconsistency", gt, gt, lq=lq, upscale=mean_fill) == expected
    with pytest.raises(MetricNotApplicable, match="no generator"):
        get_metric("translation_inconsistency")(MetricInputs(gt, gt, lq, 4))


def test_db_forms_are_ten_log10_of_the_ratios():
    # The sinusoid of test_hf_ratio_is_the_power_ratio_of_a_high_frequency_sinusoid: ratio 4.
    y, x = grid(N)
    low = 0.15 * torch.cos(2 * math.pi * 2 * (x - S) / 64)
    high = torch.cos(2 * math.pi * 24 * (y - S) / 64)
    gt = gray(0.5 + low + 0.08 * high)
    sr = gray(0.5 + 0.5 * low + 0.16 * high)
    assert value("hf_db", gt, gt) == pytest.approx(0.0, abs=1e-9)
    assert value("hf_db", sr, gt) == pytest.approx(10 * math.log10(4.0), abs=0.1)
    base = (
        0.5 + 0.1 * torch.cos(2 * math.pi * (x - S) / 4) + 0.1 * torch.cos(2 * math.pi * 5 * y / 64)
    )
    checker = 0.1 * (-1.0) ** (x + y)
    assert value("lattice_db", gray(base + checker), gray(base)) == pytest.approx(
        10 * math.log10(3.0), abs=0.1
    )


def test_l1_rgb_and_haarpsi_on_known_pairs():
    y, x = grid(N)
    gt = gray(0.3 + 0.2 * torch.cos(2 * math.pi * 3 * x / 64))
    shifted = gt + 10 / 255  # every pixel 10 levels brighter, still inside [0, 1]
    assert value("l1_rgb", shifted, gt) == pytest.approx(10 / 255, abs=1e-7)  # float32 rounding
    assert value("haarpsi", gt, gt) == pytest.approx(1.0, abs=1e-5)  # piq computes in float32
    torch.manual_seed(0)
    noisy = gray(0.3 + 0.2 * torch.cos(2 * math.pi * 3 * x / 64) + 0.05 * torch.randn(N, N))
    assert value("haarpsi", noisy, gt) < value("haarpsi", gt, gt)
