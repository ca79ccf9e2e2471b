"""NIQE, the "completely blind" naturalness measure (Mittal, Soundararajan and Bovik, IEEE Signal
Processing Letters 2013), as the authors' MATLAB release (``computequality.m``) computes it.

1. The image is a gray plane in ``[0, 255]``; PIRM 2018 and BasicSR give it the Y channel of
   MATLAB's ``rgb2ycbcr`` (rounded to integers), border cropped by the scale
   (:func:`niqe_y`). It is cut to whole 96x96 blocks from the top left.
2. MSCN coefficients: ``(I - mu) / (sigma + 1)`` with ``mu`` and ``sigma`` the local mean and
   standard deviation under a 7x7 Gaussian window (sigma 7/6, normalised), borders replicated.
3. Per block: an asymmetric generalized Gaussian (AGGD) fit of the MSCN coefficients (moment
   matching over the shape grid 0.2:0.001:10) gives the shape and the mean of the two scales;
   the products of each coefficient with its neighbour (shifts [0 1], [1 0], [1 1], [1 -1],
   circular within the block) give four more fits of shape, mean, left and right scale:
   18 features.
4. The same on the image downscaled by 2 with MATLAB's bicubic ``imresize`` (48x48 blocks): 36
   features per block.
5. A multivariate Gaussian fitted to the blocks' features (mean ignoring NaN, covariance over
   the blocks without NaN) is compared with the pristine model:
   ``NIQE = sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d))``. Lower is more natural.

The release computes a sharpness per block (the mean of ``sigma``) but uses every block when it
scores an image; the selection of sharp blocks (above 0.75 of the sharpest) only shapes the
pristine model, which was estimated once by the authors. The same here: every block counts.

The pristine model (``mu_prisparam``, ``cov_prisparam`` of the release's ``modelparameters.mat``)
ships as ``sr_cli/metrics/data/niqe_pris_params.json``; its provenance and license are in
``NOTICE.md`` beside it. Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.degradations.resize import imresize

#: The pristine model's file (JSON: ``mu_pris_param`` (36), ``cov_pris_param`` (36 x 36)).
PARAMS_FILE = Path(__file__).resolve().parent / "data" / "niqe_pris_params.json"
#: Block size of the release (and of the pristine model).
BLOCK = 96
#: Shifts of the pairwise products, as ``circshift`` takes them (rows, columns).
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
#: ``|I - mu|`` below this (in levels) is rounding noise of a flat region, and is taken as 0.
FLAT = 1e-8
#: The AGGD shape grid of ``estimateaggdparam.m``: 0.2:0.001:10 (9801 values).
_GRID_SIZE = 9801


class NIQEError(ValueError):
    """The image cannot be scored (too small for two blocks, or no block without NaN)."""


@lru_cache(maxsize=1)
def pristine_model() -> tuple[Tensor, Tensor]:
    """``(mu (36,), cov (36, 36))`` float64 of the pristine model, read once."""
    data = json.loads(PARAMS_FILE.read_text())
    mu = torch.tensor(data["mu_pris_param"], dtype=torch.float64)
    cov = torch.tensor(data["cov_pris_param"], dtype=torch.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{PARAMS_FILE}: expected 36 means and a 36x36 covariance")
    return mu, cov


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)``, normalised to sum 1: ``(size, size)``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _offsets(window: Tensor):
    """``(dy, dx, weight)`` of every tap of a square window, centred."""
    r = window.shape[-1] // 2
    return [
        (dy - r, dx - r, window[dy, dx])
        for dy in range(window.shape[0])
        for dx in range(window.shape[1])
    ]


def mscn(img: Tensor) -> tuple[Tensor, Tensor]:
    """MSCN coefficients ``(I - mu) / (sigma + 1)`` and the local ``sigma`` of a gray plane
    ``(H, W)`` (float64), the window's borders replicated (``imfilter(..., 'replicate')``).

    ``I - mu`` is summed as ``sum_i w_i (I - I_i)`` and ``sigma^2`` as
    ``sum_i w_i (I_i - mu)^2``: the same values as ``imfilter``'s up to rounding, and exactly 0
    on flat regions, where the rounding of a filter (MATLAB's, scipy's, torch's differ) would
    otherwise decide the sign of coefficients that are 0 and so which block samples the AGGD fit
    counts as left or right. On the downscaled image, whose flat regions are flat only up to the
    resize's rounding, ``|I - mu|`` below :data:`FLAT` levels is taken as 0 for the same reason.
    """
    window = gaussian_window().to(img.device)
    r = window.shape[-1] // 2
    x = img.double()
    padded = F.pad(x[None, None], (r, r, r, r), mode="replicate")[0, 0]
    h, w = x.shape
    taps = _offsets(window)

    def shifted(dy: int, dx: int) -> Tensor:
        return padded[r + dy : r + dy + h, r + dx : r + dx + w]

    centred = torch.zeros_like(x)
    for dy, dx, weight in taps:
        centred += weight * (x - shifted(dy, dx))
    centred = torch.where(centred.abs() < FLAT, 0.0, centred)
    mu = x - centred
    var = torch.zeros_like(x)
    for dy, dx, weight in taps:
        var += weight * (shifted(dy, dx) - mu) ** 2
    sigma = var.sqrt()
    return centred / (sigma + 1), sigma


@lru_cache(maxsize=4)
def _shape_grid(device: str) -> tuple[Tensor, Tensor]:
    """The shape grid and its moment ratio ``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))``."""
    gam = 0.2 + 0.001 * torch.arange(_GRID_SIZE, dtype=torch.float64, device=device)
    r = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam, r


def aggd_fit(samples: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Moment-matching AGGD fit of every row of ``(N, M)``: ``(alpha, beta_left, beta_right)``,
    each ``(N,)``, as ``estimateaggdparam.m`` (NaN scales where a side has no sample; the shape
    is then the first of the grid, as MATLAB's ``min`` over NaN gives)."""
    x = samples.double()
    neg, pos = x < 0, x > 0
    left = ((x * x * neg).sum(1) / neg.sum(1)).sqrt()  # 0/0 -> NaN, as mean([]) in MATLAB
    right = ((x * x * pos).sum(1) / pos.sum(1)).sqrt()
    gammahat = left / right
    rhat = x.abs().mean(1) ** 2 / (x * x).mean(1)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    gam, r_gam = _shape_grid(str(x.device))
    diff = (r_gam[None, :] - rhatnorm[:, None]) ** 2
    index = torch.where(rhatnorm.isnan(), 0, diff.argmin(1))
    alpha = gam[index]
    ratio = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * ratio, right * ratio


def block_features(coefficients: Tensor, block: int) -> Tensor:
    """The 18 features of every ``block x block`` block of MSCN coefficients ``(H, W)`` (H, W
    multiples of ``block``): ``(N_blocks, 18)``."""
    h, w = coefficients.shape
    blocks = (
        coefficients.reshape(h // block, block, w // block, block)
        .permute(0, 2, 1, 3)
        .reshape(-1, block, block)
    )
    alpha, bl, br = aggd_fit(blocks.flatten(1))
    feats = [alpha, (bl + br) / 2]
    for shift in SHIFTS:
        pair = blocks * torch.roll(blocks, shifts=shift, dims=(1, 2))
        alpha, bl, br = aggd_fit(pair.flatten(1))
        mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, dim=1)


def niqe_features(gray: Tensor, block: int = BLOCK) -> Tensor:
    """The 36 features of every block of a gray plane ``(H, W)`` in ``[0, 255]``:
    ``(N_blocks, 36)`` (the image is first cut to whole blocks from the top left)."""
    if gray.dim() != 2:
        raise ValueError(f"NIQE takes one gray plane (H, W), got {tuple(gray.shape)}")
    rows, cols = gray.shape[0] // block, gray.shape[1] // block
    if rows * cols < 2:
        raise NIQEError(
            f"NIQE needs at least two {block}x{block} blocks; the image is "
            f"{gray.shape[0]}x{gray.shape[1]}"
        )
    img = gray.double()[: rows * block, : cols * block]
    per_scale = []
    for scale in (1, 2):
        coefficients, _ = mscn(img)
        per_scale.append(block_features(coefficients, block // scale))
        if scale == 1:
            img = imresize(img, scale=0.5)
    return torch.cat(per_scale, dim=1)


def niqe(gray: Tensor, block: int = BLOCK) -> float:
    """NIQE of one gray plane ``(H, W)`` in ``[0, 255]`` (lower is more natural)."""
    feats = niqe_features(gray, block)
    mu_p, cov_p = pristine_model()
    mu_p, cov_p = mu_p.to(feats.device), cov_p.to(feats.device)
    mu_d = feats.nanmean(0)
    complete = feats[~feats.isnan().any(1)]
    if complete.shape[0] < 2:
        raise NIQEError("NIQE: fewer than two blocks have finite features (flat image?)")
    cov_d = torch.cov(complete.T)
    d = mu_p - mu_d
    value = d @ torch.linalg.pinv((cov_p + cov_d) / 2) @ d
    return math.sqrt(float(value))


def niqe_y(img: Tensor, crop: int) -> Tensor:
    """NIQE of every RGB image ``(B, 3, H, W)`` in ``[0, 1]`` under the PIRM protocol: 8-bit
    RGB, Y of MATLAB ``rgb2ycbcr`` (rounded), ``crop`` pixels cut from each border. ``(B,)``."""
    from sr_cli.metrics.protocol import prepare_y_one

    y = prepare_y_one(img, crop, "matlab")[:, 0]
    return torch.tensor([niqe(plane) for plane in y], dtype=torch.float64)
