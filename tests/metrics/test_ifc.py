"""IFC (Sheikh, Bovik and de Veciana 2005): its properties on a natural image, and the registry
entry on the protocol's Y planes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.images import read_image
from sr_cli.metrics.ifc import ifc
from sr_cli.metrics.registry import MetricInputs, get_metric


@pytest.fixture(scope="module")
def luma() -> np.ndarray:
    """BT.601 Y (8-bit scale) of a bundled photograph, 192 x 256."""
    rgb = read_image(SAMPLES_DIR / "val" / "chelsea.png")[:192, :256].astype(np.float64)
    return 16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255


def test_identical_images_score_the_maximum(luma):
    rng = np.random.default_rng(0)
    best = ifc(luma, luma)
    distorted = [
        gaussian_filter(luma, 1.0),
        luma + rng.normal(0, 5, luma.shape),
        np.round(luma / 16) * 16,  # coarse quantization
        0.5 * luma + 0.5 * gaussian_filter(luma, 3.0),
    ]
    for d in distorted:
        assert ifc(luma, d) < best
    assert np.isfinite(best) and best > 0


def test_decreases_with_blur_and_with_noise(luma):
    blurred = [ifc(luma, gaussian_filter(luma, s)) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(blurred, blurred[1:])), blurred
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, luma.shape)
    noisy = [ifc(luma, luma + s * noise) for s in (1.0, 3.0, 10.0, 30.0)]
    assert all(a > b for a, b in zip(noisy, noisy[1:])), noisy
    assert noisy[-1] > 0  # not bounded below 0; information only shrinks towards 0


def test_invariant_to_scaling_the_reference_and_the_distorted_image(luma):
    """The channel D = g C + V absorbs a gain: scaling the distorted image changes g and
    sigma_v by the same factor, scaling the reference changes lambda and 1/g^2 by the same
    factor (s^2 = u^T C_U^-1 u is scale-free), scaling both changes nothing."""
    d = gaussian_filter(luma, 1.0) + np.random.default_rng(2).normal(0, 2, luma.shape)
    base = ifc(luma, d)
    for a in (0.25, 3.0):
        assert ifc(a * luma, a * d) == pytest.approx(base, rel=1e-6)
        assert ifc(luma, a * d) == pytest.approx(base, rel=1e-6)
        assert ifc(a * luma, d) == pytest.approx(base, rel=1e-6)


def test_depends_on_the_reference_and_the_order(luma):
    """Not symmetric and not bounded: a flat reference carries no information."""
    d = gaussian_filter(luma, 2.0)
    assert ifc(luma, d) != pytest.approx(ifc(d, luma))
    assert ifc(np.full_like(luma, 128.0), luma) == 0.0


def test_registry_entry_scores_y_with_the_border_cropped(luma):
    spec = get_metric("ifc")
    assert spec.higher_is_better and spec.group == "extra"
    rgb = read_image(SAMPLES_DIR / "val" / "chelsea.png")[:192, :256]
    gt = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    sr = torch.from_numpy(gaussian_filter(rgb.astype(np.float64), (1, 1, 0)) / 255)
    sr = sr.permute(2, 0, 1)[None].float()
    value = spec(MetricInputs(sr, gt.float(), gt, scale=4))

    def y(im):
        return (
            16
            + np.round(im.permute(0, 2, 3, 1)[0].numpy() * 255)
            @ np.array([65.481, 128.553, 24.966])
            / 255
        )

    expected = ifc(y(gt)[4:-4, 4:-4], y(sr.clamp(0, 1).double())[4:-4, 4:-4])
    assert value.item() == pytest.approx(expected, rel=1e-9)
