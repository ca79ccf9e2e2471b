"""Blur kernels and the per-sample convolution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d

from sr_cli.degradations.functional import filter2d_per_sample
from sr_cli.degradations.kernels import (
    delta_kernels,
    gaussian_kernels,
    generalized_gaussian_kernels,
    motion_kernels,
    plateau_kernels,
    sinc_kernels,
)

T = torch.tensor


def test_isotropic_gaussian_is_the_separable_gaussian():
    sig = T([0.8, 2.5], dtype=torch.float64)
    k = gaussian_kernels(21, sig)
    for i, s in enumerate(sig.tolist()):
        g = get_gaussian_kernel1d(21, s).double().flatten()
        torch.testing.assert_close(k[i], torch.outer(g, g))
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2, dtype=torch.float64))


def test_anisotropic_rotation_by_90_degrees_swaps_the_axes():
    sx, sy = T([3.0]), T([0.7])
    rotated = gaussian_kernels(21, sx, sy, T([math.pi / 2]))
    swapped = gaussian_kernels(21, sy, sx, T([0.0]))
    torch.testing.assert_close(rotated, swapped, atol=1e-6, rtol=0)
    flat = gaussian_kernels(21, sx, sy, T([0.0]))[0]
    # Wide along x (columns), narrow along y (rows).
    assert flat[10, 13] > flat[13, 10]


def test_generalized_gaussian_with_beta_one_is_gaussian_and_shapes_differ():
    sx, sy, th = T([1.5]), T([2.0]), T([0.3])
    g = gaussian_kernels(21, sx, sy, th)
    torch.testing.assert_close(generalized_gaussian_kernels(21, sx, sy, th, T([1.0])), g)
    flat_top = generalized_gaussian_kernels(21, sx, sy, th, T([4.0]))
    heavy = generalized_gaussian_kernels(21, sx, sy, th, T([0.5]))

    def tail(k):  # mass farther than 5 pixels from the centre
        return k[0].sum() - k[0, 5:16, 5:16].sum()

    assert tail(heavy) > tail(g) > tail(flat_top)


def test_plateau_kernel():
    k = plateau_kernels(21, T([1.0, 2.0]), T([1.0, 2.0]), T([0.0, 0.0]), T([1.0, 2.0]))
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2))
    assert (k > 0).all()  # heavy tails
    assert k[:, 10, 10].ge(k.amax((-1, -2)) - 1e-9).all()  # peak at the centre


def test_sinc_kernel_is_symmetric_with_negative_lobes():
    k = sinc_kernels(21, T([math.pi / 4, math.pi / 2]))
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2))
    torch.testing.assert_close(k, k.transpose(-1, -2))
    torch.testing.assert_close(k, k.flip(-1))
    assert (k < 0).any()
    # Its spectrum is (nearly) flat below the cutoff and small above it.
    spec = torch.fft.fftshift(torch.fft.fft2(k[0], s=(64, 64))).abs()
    assert spec[32, 32] == pytest.approx(1.0, abs=1e-5)
    # Cutoff pi/4 rad/pixel = 1/8 cycle/pixel = bin 8 of 64 (ripple from the 21-tap truncation).
    assert (spec[32, 32:38] > 0.75).all()
    assert (spec[32, 42:] < 0.15).all()


def test_support_masks_smaller_kernels():
    k = gaussian_kernels(21, T([3.0, 3.0]), support=T([7, 21]))
    assert k[0, :7].abs().sum() == 0 and k[0, :, 14:].abs().sum() == 0
    assert (k[0, 7:14, 7:14] > 0).all()
    assert (k[1] > 0).all()
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2))


def test_motion_kernel_is_a_line():
    k = motion_kernels(21, T([0.0, math.pi / 2]), T([7.0, 9.0]))
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2))
    horizontal, vertical = k[0], k[1]
    assert horizontal[10].sum() == pytest.approx(1.0)  # all mass on the centre row
    assert (horizontal[10, 7:14] > 0).all() and horizontal[10, :6].sum() == 0
    assert vertical[:, 10].sum() == pytest.approx(1.0)


def test_filter2d_per_sample_is_a_true_per_sample_convolution():
    x = torch.rand(3, 2, 16, 20, generator=torch.Generator().manual_seed(0))
    kern = gaussian_kernels(5, T([0.5, 1.0, 2.0]), T([1.5, 1.0, 0.4]), T([0.2, 0.0, 1.0]))
    out = filter2d_per_sample(x, kern)
    for b in range(3):
        xp = F.pad(x[b : b + 1], (2, 2, 2, 2), mode="reflect")
        w = kern[b].flip(-1, -2).expand(2, 1, 5, 5)
        torch.testing.assert_close(out[b : b + 1], F.conv2d(xp, w, groups=2))
    torch.testing.assert_close(filter2d_per_sample(x, delta_kernels(7, 3, x)), x)
    # Convolution, not correlation: a one right of the centre shifts the image right.
    shift = torch.zeros(3, 3, 3)
    shift[:, 1, 2] = 1.0
    torch.testing.assert_close(filter2d_per_sample(x, shift)[..., 1:], x[..., :-1])
    # Images smaller than the kernel fall back to replicated borders.
    tiny = filter2d_per_sample(x[..., :4, :4], gaussian_kernels(21, T([2.0, 2.0, 2.0])))
    assert tiny.shape == (3, 2, 4, 4)
