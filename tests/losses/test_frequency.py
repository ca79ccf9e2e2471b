"""FFT-amplitude L1 and focal frequency loss: known values from the orthonormal DFT."""

from __future__ import annotations

import math

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.losses.frequency import FFTLoss, FocalFrequencyLoss, fft_loss, focal_frequency_loss

H, W = 8, 16


def cosine(amplitude: float, k: int) -> torch.Tensor:
    """``A cos(2 pi k x / W)``, constant along rows: two DFT bins of magnitude A sqrt(HW) / 2."""
    x = torch.arange(W, dtype=torch.float64)
    row = amplitude * torch.cos(2 * math.pi * k * x / W)
    return row.expand(1, 1, H, W).clone()


def test_fft_identical_is_zero() -> None:
    img = torch.rand(2, 3, H, W)
    assert fft_loss(img, img).item() == 0.0


def test_fft_single_frequency_analytic() -> None:
    amplitude = 0.7
    # Bins (0, k) and (0, W - k) each have |F| = A sqrt(HW) / 2; the mean over HW bins is
    # 2 * A sqrt(HW) / 2 / HW = A / sqrt(HW).
    value = fft_loss(cosine(amplitude, 3), torch.zeros(1, 1, H, W, dtype=torch.float64))
    assert value.item() == pytest.approx(amplitude / math.sqrt(H * W), rel=1e-5)


def test_fft_ignores_translation() -> None:
    img = torch.rand(1, 3, H, W)
    assert fft_loss(torch.roll(img, shifts=(2, 5), dims=(-2, -1)), img).item() < 1e-5


def test_ffl_identical_is_zero() -> None:
    img = torch.rand(2, 3, H, W)
    assert focal_frequency_loss(img, img).item() == 0.0


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_ffl_single_frequency_analytic(alpha: float) -> None:
    # Both non-zero bins have the same |dF| = m = A sqrt(HW) / 2, so both weights are 1 after
    # normalization and every other bin has weight 0: loss = 2 m^2 / HW = A^2 / 2, any alpha.
    amplitude = 0.4
    pred = cosine(amplitude, 2).float()
    target = torch.zeros_like(pred)
    assert focal_frequency_loss(pred, target, alpha=alpha).item() == pytest.approx(
        amplitude**2 / 2, rel=1e-5
    )


def test_ffl_weights_hard_frequencies_more() -> None:
    # Two frequencies with amplitudes 1 and 0.5: weights 1 and 0.5 (alpha=1), so
    # loss = (2 * 1 * m1^2 + 2 * 0.5 * m2^2) / HW with m = A sqrt(HW) / 2.
    pred = (cosine(1.0, 1) + cosine(0.5, 4)).float()
    expected = (2 * 1.0 * 1.0**2 / 4) + (2 * 0.5 * 0.5**2 / 4)
    value = focal_frequency_loss(pred, torch.zeros_like(pred), alpha=1.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # With alpha=0 every bin has weight 1: the mean squared spectrum distance = MSE (Parseval).
    plain = focal_frequency_loss(pred, torch.zeros_like(pred), alpha=0.0)
    assert plain.item() == pytest.approx(pred.pow(2).mean().item(), rel=1e-5)


def test_ffl_options_run_and_batch_matrix_normalizes_globally() -> None:
    pred = torch.cat([cosine(1.0, 1), cosine(0.5, 1)]).float()  # two images, one bin pair each
    target = torch.zeros_like(pred)
    # Per-spectrum normalization: both images have weight 1 at their bins.
    per_image = focal_frequency_loss(pred, target)
    assert per_image.item() == pytest.approx((1.0 / 2 + 0.25 / 2) / 2, rel=1e-5)
    # Batch normalization: the second image's bins get weight 0.5.
    batch = focal_frequency_loss(pred, target, batch_matrix=True)
    assert batch.item() == pytest.approx((1.0 / 2 + 0.5 * 0.25 / 2) / 2, rel=1e-5)
    for kwargs in ({"patch_factor": 2}, {"ave_spectrum": True}, {"log_matrix": True}):
        assert torch.isfinite(focal_frequency_loss(pred, target, **kwargs))


def test_ffl_patch_factor_one_patch_equals_tiles() -> None:
    # With patch_factor=2 the loss is the mean of the losses of the four tiles.
    img, ref = torch.rand(1, 2, H, W), torch.rand(1, 2, H, W)
    tiles = [
        focal_frequency_loss(
            img[..., i : i + H // 2, j : j + W // 2], ref[..., i : i + H // 2, j : j + W // 2]
        )
        for i in (0, H // 2)
        for j in (0, W // 2)
    ]
    value = focal_frequency_loss(img, ref, patch_factor=2)
    assert value.item() == pytest.approx(torch.stack(tiles).mean().item(), rel=1e-5)


@pytest.mark.parametrize("term", [FFTLoss(), FocalFrequencyLoss()], ids=["fft", "ffl"])
def test_terms_have_gradient(term, make_inputs) -> None:
    sr = torch.rand(2, 3, H, W, requires_grad=True)
    out = term(make_inputs(sr, torch.rand(2, 3, H, W)))
    out.loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="patch_factor"):
        focal_frequency_loss(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6), patch_factor=4)
    with pytest.raises(ValueError, match="differ in shape"):
        fft_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 2))
    with pytest.raises(ConfigError):
        FocalFrequencyLoss(patch_factor=0)
