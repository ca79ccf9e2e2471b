"""NIQE and RMSE_Y (the perception-distortion plane's axes) against independently known values.

Reference values: BasicSR 1.4.2's ``calculate_niqe`` core (``basicsr/metrics/niqe.py`` of its
PyPI sdist, run unchanged on the same rounded, cropped Y planes), which reproduces the MATLAB
release on its test image (5.72957338 in MATLAB R2021a, 5.7295763 in BasicSR, for
``tests/data/baboon.png``). That image is not in the sdist (only ``niqe.py`` and
``niqe_pris_params.npz`` are), so the published 5.7296 cannot be re-checked here; the bundled
sample images stand in. Only images without flat regions are used: there the MSCN coefficients
do not depend on how a filter rounds (see :func:`sr_cli.metrics.niqe.mscn`), and implementations
agree to 3e-5 (BasicSR computes the second scale in float32; with a float64 resize the two agree
to 1e-12).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.data import sample_dir
from sr_cli.metrics.niqe import (
    NIQEError,
    aggd_fit,
    gaussian_window,
    niqe,
    niqe_y,
    pristine_model,
)
from sr_cli.metrics.registry import MetricInputs, compute_metrics, get_metric

#: ``(set, image, border crop): BasicSR 1.4.2's NIQE`` on MATLAB's rounded Y.
BASICSR_NIQE = {
    ("val", "grace_hopper", 4): 4.5105178,
    ("train", "gravel", 0): 4.8512145,
    ("train", "hubble_deep_field", 0): 7.7231310,
}
# Also checked when this was written (not run, to keep the suite fast): coffee 4.8194577,
# grass 5.3582297, brick 13.3708947 (ours: 4.8194833, 5.3582306, 13.3711384).
#: The tolerance a faithful reimplementation meets against the MATLAB release.
TOLERANCE = 1e-3


def rgb(split: str, name: str) -> torch.Tensor:
    arr = np.asarray(Image.open(Path(sample_dir(split)) / f"{name}.png").convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].double() / 255.0


@functools.cache
def niqe_of(split: str, name: str, crop: int) -> float:
    return float(niqe_y(rgb(split, name), crop)[0])


def test_pristine_model_is_the_release_model_as_basicsr_ships_it():
    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    digest = hashlib.sha256(mu.numpy().tobytes() + cov.numpy().tobytes()).hexdigest()
    assert digest == "f6284a2b53fd40bbc960472b76ec55b67a299a0270294b804c847e99b8cc1e30"
    assert torch.equal(cov, cov.T)
    assert float(mu[0]) == pytest.approx(2.60131368, abs=1e-8)  # MSCN shape of pristine patches


def test_gaussian_window_is_matlab_fspecial_7_by_7_sigma_7_over_6():
    w = gaussian_window()
    assert w.shape == (7, 7)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-15)
    # fspecial('gaussian', 7, 7/6)(4, 4) (BasicSR stores the same window)
    assert float(w[3, 3]) == pytest.approx(0.11739635539001349, abs=1e-15)


@pytest.mark.parametrize(
    ("sampler", "alpha"),
    [(lambda g, n: torch.randn(n, generator=g), 2.0), (lambda g, n: _laplace(g, n), 1.0)],
)
def test_aggd_fit_recovers_the_shape_of_known_distributions(sampler, alpha):
    g = torch.Generator().manual_seed(0)
    x = sampler(g, 400_000).double()[None]
    a, bl, br = aggd_fit(x)
    assert float(a) == pytest.approx(alpha, abs=0.03)
    # symmetric: equal left and right scales
    assert float(bl) == pytest.approx(float(br), rel=0.02)
    if alpha == 2.0:  # a Gaussian of std 1 has AGGD scale sqrt(2)
        assert float(bl) == pytest.approx(2**0.5, rel=0.02)


def _laplace(g: torch.Generator, n: int) -> torch.Tensor:
    u = torch.rand(n, generator=g) - 0.5
    return -u.sign() * torch.log1p(-2 * u.abs())


@pytest.mark.parametrize(("key", "expected"), list(BASICSR_NIQE.items()), ids=lambda v: str(v))
def test_niqe_matches_the_reference_implementation(key, expected):
    split, name, crop = key
    value = niqe_of(split, name, crop)
    assert value == pytest.approx(expected, abs=TOLERANCE)


def test_niqe_of_this_implementation_is_stable():
    """Our own values (to 1e-6), so that any change of the computation shows."""
    assert niqe_of("val", "grace_hopper", 4) == pytest.approx(4.5105113, abs=1e-6)
    assert niqe_of("train", "gravel", 0) == pytest.approx(4.8512139, abs=1e-6)


def test_niqe_ranks_a_blurred_image_as_less_natural():
    from sr_cli.degradations.resize import imresize

    img = rgb("train", "gravel")[..., :192, :192]
    blurred = imresize(imresize(img, scale=0.25), size=img.shape[-2:]).clamp(0, 1)
    assert float(niqe_y(blurred, 0)[0]) > float(niqe_y(img, 0)[0]) + 1.0


def test_flat_regions_do_not_depend_on_rounding():
    """MSCN is invariant to an offset; with flat regions (retina's black surround) the value
    must not move when every level is raised by 7 (a filter's rounding noise would)."""
    y = rgb("train", "retina")[0, :, :192, :].mean(0) * 200
    y = torch.floor(y)
    assert float((y == y[0, 0]).double().mean()) > 0.1  # really has flat regions
    assert niqe(y + 7) == pytest.approx(niqe(y), abs=1e-9)


def test_too_small_image_is_not_applicable_and_gives_n_a():
    with pytest.raises(NIQEError, match="two 96x96 blocks"):
        niqe(torch.zeros(100, 150))
    sr = torch.rand(1, 3, 100, 100)
    notes = {}
    values = compute_metrics(
        ["niqe"],
        MetricInputs(sr, sr, sr[..., ::4, ::4], 4),
        on_skip=lambda n, e: notes.update({n: e}),
    )
    assert torch.isnan(values).all() and "96x96" in str(notes["niqe"])


def test_rmse_y_in_levels_and_its_psnr():
    gt = torch.full((1, 3, 32, 32), 100 / 255)
    sr = gt + 1 / 255  # every channel one level up: Y moves by (65.481+128.553+24.966)/255
    x = MetricInputs(sr, gt, gt[..., ::4, ::4], 4)
    values = compute_metrics(["rmse_y", "psnr_y"], x)
    assert float(values[0, 0]) == pytest.approx(219.0 / 255.0, abs=1e-9)
    assert float(values[0, 1]) == pytest.approx(20 * np.log10(255 / (219.0 / 255.0)), abs=1e-9)
    assert get_metric("rmse_y").higher_is_better is False
    assert get_metric("niqe").higher_is_better is False
