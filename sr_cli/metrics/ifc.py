"""IFC, the information fidelity criterion (Sheikh, Bovik and de Veciana, IEEE TIP 14(12), 2005).

IFC models the reference's wavelet coefficients as a Gaussian scale mixture (GSM), ``C = s U``
with ``U ~ N(0, C_U)`` over ``M x M`` neighbourhoods, and the distortion as a channel
``D = g C + V`` with a local gain ``g`` and additive Gaussian noise of variance ``sigma_v^2``. The
criterion is the mutual information between reference and distorted coefficients given the
scale field, summed over subbands and blocks::

    IFC = sum_subbands sum_blocks sum_j log2(1 + g^2 s^2 lambda_j / sigma_v^2)

with ``lambda_j`` the eigenvalues of ``C_U``. It is 0 when nothing of the reference survives,
grows with the information kept, is not bounded above, and depends on the reference (an image
with more structure carries more information).

What this implementation takes from the reference implementation (LIVE's ``ifcvec.m``, the one
the SR literature uses, e.g. Yang et al., ECCV 2014):

* ``M = 3`` (3 x 3 neighbourhoods, vectors of 9 coefficients);
* the channel parameters ``g`` and ``sigma_v^2`` are least-squares estimates over a square window
  centred on every ``M x M`` block, with the reference's border rule ``reflect1`` (mirror
  without repeating the edge) and window sides ``2^k + 1``: 17 at the finest scale, then 9, 5,
  3; blocks closer to the subband border than half a window are left out; the same tolerances
  (``1e-15`` for a zero variance, ``1e-10`` added to ``sigma_v^2``) and constraints (``g >= 0``);
* ``C_U`` from all overlapping ``M x M`` blocks of the subband, ``s^2 = u^T C_U^{-1} u / M^2`` on
  the non-overlapping ones; every eigenvalue of ``C_U`` counts;
* 8 subbands: the horizontal and vertical orientations at 4 scales (``ifcvec.m`` selects
  subbands 4, 7, ..., 25 of ``ind2wtree``: orientations 1 and 4 of 6, i.e. 0 and 90 degrees,
  at each of the 4 levels), and no ``sigma_n^2`` (that HVS noise is VIF's, not IFC's);
* the sum divided by the number of pixels of the image (``ifcvec.m`` returns
  ``sum(num) / prod(size(imorg))``), on 8-bit-scale luminance.

The decomposition differs: ``ifcvec.m`` uses Simoncelli's steerable pyramid (``buildSpyr`` with
``sp5Filters``: 6 orientations, 4 levels, not subsampled at the first level). Here it is a
4-level separable wavelet transform (PyWavelets, CDF 9/7 ``bior4.4``, ``reflect`` borders),
whose horizontal and vertical detail bands stand for the pyramid's 0 and 90 degree bands. The
wavelet is critically sampled (each level has half the resolution of the pyramid's level of
the same rank, so there are a quarter of the blocks) and its orientation selectivity is that
of a separable filter. Values are therefore on the same scale as ``ifcvec.m``'s but not equal
to them: compare IFC figures computed by the same implementation only.
"""

from __future__ import annotations

import math

import numpy as np

#: Neighbourhood side of the GSM vectors.
M = 3
#: Scales of the decomposition.
LEVELS = 4
#: The wavelet standing for the steerable pyramid (see the module docstring).
WAVELET = "bior4.4"
_TOL = 1e-15  # a variance below this is zero (ifcvec.m's distsub_est_m)
_EPS = 1e-10  # added to sigma_v^2 in the sum (ifcvec.m)


def _block_sums(x: np.ndarray, win: int, rows: int, cols: int) -> np.ndarray:
    """Sums of ``x`` over a ``win x win`` window centred on the middle pixel of every ``M x M``
    block (``rows x cols`` blocks), mirrored at the border without repeating the edge."""
    r = (win - 1) // 2
    p = np.pad(x, r, mode="reflect")
    c = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    c[1:, 1:] = p.cumsum(0).cumsum(1)
    ys = M // 2 + M * np.arange(rows)  # centres, in x's coordinates = window tops in p's
    xs = M // 2 + M * np.arange(cols)
    y0, y1 = ys[:, None], ys[:, None] + win
    x0, x1 = xs[None, :], xs[None, :] + win
    return c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0]


def _channel(ref: np.ndarray, dist: np.ndarray, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Gain ``g`` and noise variance ``sigma_v^2`` of ``dist = g ref + v`` per block."""
    rows, cols = ref.shape[0] // M, ref.shape[1] // M
    n = float(win * win)
    sx, sy = _block_sums(ref, win, rows, cols), _block_sums(dist, win, rows, cols)
    mx, my = sx / n, sy / n
    cov = _block_sums(ref * dist, win, rows, cols) - n * mx * my
    vx = np.maximum(_block_sums(ref * ref, win, rows, cols) - n * mx * mx, 0.0)
    vy = np.maximum(_block_sums(dist * dist, win, rows, cols) - n * my * my, 0.0)
    g = cov / (vx + _TOL)
    vv = (vy - g * cov) / n
    flat_x = vx < _TOL
    g[flat_x], vv[flat_x] = 0.0, vy[flat_x]
    flat_y = vy < _TOL
    g[flat_y], vv[flat_y] = 0.0, 0.0
    negative = g < 0
    vv[negative], g[negative] = vy[negative], 0.0
    vv[vv <= _TOL] = _TOL
    return g, vv


def _gsm(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's scale field ``s^2`` per block and the eigenvalues of ``C_U``."""
    h, w = ref.shape
    overlapping = np.stack(
        [ref[i : h - M + 1 + i, j : w - M + 1 + j].ravel() for j in range(M) for i in range(M)]
    )
    centred = overlapping - overlapping.mean(axis=1, keepdims=True)
    cu = centred @ centred.T / overlapping.shape[1]
    blocks = np.stack([ref[i::M, j::M].ravel() for j in range(M) for i in range(M)])
    ss = np.sum((np.linalg.pinv(cu) @ blocks) * blocks, axis=0) / (M * M)
    return ss.reshape(h // M, w // M), np.linalg.eigvalsh(cu)


def subband_information(ref: np.ndarray, dist: np.ndarray, win: int) -> float:
    """Bits of the reference that survive in one subband (before the division by pixels)."""
    h, w = (ref.shape[0] // M) * M, (ref.shape[1] // M) * M
    if h < M or w < M:
        return 0.0
    ref, dist = ref[:h, :w], dist[:h, :w]
    g, vv = _channel(ref, dist, win)
    ss, lam = _gsm(ref)
    k = math.ceil(((win - 1) // 2) / M)  # blocks within half a window of the border
    g, vv, ss = (a[k : a.shape[0] - k, k : a.shape[1] - k] for a in (g, vv, ss))
    if g.size == 0:
        return 0.0
    snr = (g * g * ss / (vv + _EPS))[..., None] * np.clip(lam, 0.0, None)
    return float(np.log2(1.0 + snr).sum())


def ifc(reference: np.ndarray, distorted: np.ndarray) -> float:
    """IFC of a distorted image against its reference: 2-D float arrays of one size, on the
    8-bit scale (luminance in ``[0, 255]``, as ``ifcvec.m`` expects). Order matters."""
    import pywt

    ref = np.asarray(reference, dtype=np.float64)
    dist = np.asarray(distorted, dtype=np.float64)
    if ref.shape != dist.shape or ref.ndim != 2:
        raise ValueError(f"IFC needs two 2-D images of one size, got {ref.shape} and {dist.shape}")
    bands_r = pywt.wavedec2(ref, WAVELET, mode="reflect", level=LEVELS)
    bands_d = pywt.wavedec2(dist, WAVELET, mode="reflect", level=LEVELS)
    total = 0.0
    # bands[1] is the coarsest level's (H, V, D) details, bands[-1] the finest's.
    for rank, (br, bd) in enumerate(zip(bands_r[1:], bands_d[1:])):
        win = 2 ** (rank + 1) + 1  # 3 at the coarsest scale ... 17 at the finest
        for orientation in (0, 1):  # horizontal and vertical details
            total += subband_information(br[orientation], bd[orientation], win)
    return total / ref.size


def ifc_batch(reference, distorted) -> np.ndarray:
    """IFC of every image of ``(B, 1, H, W)`` (or ``(B, H, W)``) batches, as float64 ``(B,)``."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), *reference.shape[-2:])
    dist = np.asarray(distorted, dtype=np.float64).reshape(len(distorted), *distorted.shape[-2:])
    return np.array([ifc(r, d) for r, d in zip(ref, dist)])
