"""MATLAB ``imresize(x, 1/s, 'bicubic')`` checked against an independent, literal reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_cli.degradations.resize import imresize


def ref_cubic(x: float) -> float:
    """Keys (1981) cubic convolution kernel, a = -0.5."""
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1.0
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0
    return 0.0


def ref_mirror(j: int, n: int) -> int:
    """Symmetric border (1-based): ... 3 2 1 | 1 2 ... n | n n-1 ..."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def ref_resize_1d(row: list[float], scale: float) -> list[float]:
    """One output pixel at a time, straight from MATLAB's definition (downscaling)."""
    n = len(row)
    out = []
    for i in range(1, math.ceil(n * scale) + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)  # output pixel i sits at input coordinate u
        half_width = 2.0 / scale  # the kernel widened by 1/scale (antialiasing)
        taps = range(math.floor(u - half_width), math.ceil(u + half_width) + 1)
        weights = [scale * ref_cubic(scale * (u - j)) for j in taps]
        total = sum(weights)
        out.append(sum(w * row[ref_mirror(j, n) - 1] for w, j in zip(weights, taps)) / total)
    return out


def ref_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """2-D: columns (height) first, then rows, as MATLAB does for equal scales."""
    cols = np.stack([ref_resize_1d(list(img[:, c]), scale) for c in range(img.shape[1])], 1)
    return np.stack([ref_resize_1d(list(cols[r]), scale) for r in range(cols.shape[0])], 0)


def test_hand_worked_row_x2():
    # Downscaling x2: output pixel i sits at u = 2 i - 0.5; taps at distance 3.5, 2.5, 1.5, 0.5
    # weigh cubic(d / 2) / 2 = -3/256, -9/256, 29/256, 111/256 (they sum to 1/2 per side).
    w = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
    v = np.array([10, 20, 40, 80, 160, 200, 220, 230], dtype=np.float64)
    # Taps (1-based) after symmetric mirroring: index 0 -> 1, -1 -> 2, 9 -> 8, 10 -> 7.
    taps = [[3, 2, 1, 1, 2, 3, 4, 5], [1, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7, 8, 8]]
    taps.append([4, 5, 6, 7, 8, 8, 7, 6])
    by_hand = [float(w @ v[np.array(t) - 1]) for t in taps]
    expected = [205 / 16, 1995 / 32, 5685 / 32, 3635 / 16]  # 12.8125 62.34375 177.65625 227.1875
    assert by_hand == pytest.approx(expected, abs=1e-12)
    out = imresize(torch.tensor(v).view(1, 1, 8), scale=0.5)
    assert out.shape == (1, 1, 4)
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-9)
    assert ref_resize_1d(list(v), 0.5) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_reference_on_random_uint8_images(scale):
    rng = np.random.default_rng(scale)
    img = rng.integers(0, 256, size=(24, 36)).astype(np.float64)
    ref = ref_imresize(img, 1 / scale)
    ours = imresize(torch.from_numpy(img)[None, None], scale=1 / scale)[0, 0].numpy()
    assert ours.shape == (24 // scale, 36 // scale) == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    ours8 = np.clip(np.round(ours), 0, 255)
    ref8 = np.clip(np.round(ref), 0, 255)
    assert np.abs(ours8 - ref8).max() <= 1
    # float32, batched, on three channels: within 1/255 after rounding too.
    x32 = torch.from_numpy(img / 255).float().expand(2, 3, -1, -1)
    out32 = imresize(x32, scale=1 / scale)
    assert torch.all((out32 * 255).round().clamp(0, 255) - torch.from_numpy(ref8).float() <= 1)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_torch_antialiased_bicubic_agrees_in_interior(scale):
    # F.interpolate(bicubic, antialias=True) uses the same widened a=-0.5 kernel; only the border
    # handling differs (it renormalises truncated weights instead of mirroring).
    x = torch.rand(2, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = imresize(x, scale=1 / scale)
    theirs = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True)
    b = 3  # LQ pixels whose kernel reaches the border (support 4 * scale HR pixels)
    torch.testing.assert_close(ours[..., b:-b, b:-b], theirs[..., b:-b, b:-b], atol=1e-9, rtol=0)
    assert (ours - theirs).abs().max() > 1e-3  # but not at the border
