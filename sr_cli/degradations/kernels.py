"""Batched blur kernels, one per sample, built from per-sample parameter tensors.

Every function returns ``(B, k, k)`` kernels that sum to one, on the device and dtype of its
parameters. The grid is centred: pixel offsets run from ``-(k-1)/2`` to ``(k-1)/2``. A
per-sample ``support`` (an odd size ``<= k``) zeroes everything outside the centred
``support x support`` window, so kernels of different sizes share one tensor.

The kernel families are those of Real-ESRGAN (Wang et al., 2021, "Real-ESRGAN: Training
Real-World Blind Super-Resolution with Pure Synthetic Data", Sec. 3.2) and BSRGAN (Zhang et al.,
2021): with the covariance ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` and
``q(d) = d^T S^-1 d``,

* Gaussian: ``exp(-q / 2)`` (isotropic when ``sigma_x == sigma_y``);
* generalized Gaussian: ``exp(-q^beta / 2)``;
* plateau: ``1 / (1 + q^beta)``;
* sinc (circular low-pass, ringing/overshoot artifacts):
  ``omega_c J1(omega_c r) / (2 pi r)``, ``omega_c^2 / (4 pi)`` at ``r = 0``;
* motion: an anti-aliased line segment of a given length and angle.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor


def _grid(k: int, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Centred ``(k, k)`` x (columns) and y (rows) offsets."""
    r = torch.arange(k, device=ref.device, dtype=ref.dtype) - (k - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    return x, y


def _finish(kernel: Tensor, support: Tensor | None) -> Tensor:
    """Zero outside the per-sample support, then normalise every kernel to sum to one."""
    if support is not None:
        k = kernel.shape[-1]
        x, y = _grid(k, kernel)
        half = ((support.to(kernel.dtype) - 1) / 2).view(-1, 1, 1)
        inside = (x.abs() <= half) & (y.abs() <= half)
        kernel = kernel * inside
    return kernel / kernel.sum(dim=(-1, -2), keepdim=True)


def _quadratic(k: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor) -> Tensor:
    """``q(d) = d^T S^-1 d`` on the grid, ``(B, k, k)``."""
    x, y = _grid(k, sigma_x)
    c, s = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    # Coordinates in the rotated frame: S^-1 = R diag(1/sx^2, 1/sy^2) R^T.
    u = c * x + s * y
    v = -s * x + c * y
    return (u / sigma_x.view(-1, 1, 1)) ** 2 + (v / sigma_y.view(-1, 1, 1)) ** 2


def gaussian_kernels(
    k: int,
    sigma_x: Tensor,
    sigma_y: Tensor | None = None,
    theta: Tensor | None = None,
    support: Tensor | None = None,
) -> Tensor:
    """Anisotropic Gaussian kernels ``(B, k, k)``; isotropic when ``sigma_y`` is None."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    theta = torch.zeros_like(sigma_x) if theta is None else theta
    return _finish(torch.exp(-0.5 * _quadratic(k, sigma_x, sigma_y, theta)), support)


def beta_kernels(
    k: int,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    support: Tensor | None = None,
    plateau: bool = False,
) -> Tensor:
    """Generalized Gaussian ``exp(-q^beta / 2)`` (``beta = 1`` is the Gaussian), or with
    ``plateau`` the plateau-shaped ``1 / (1 + q^beta)``."""
    qb = _quadratic(k, sigma_x, sigma_y, theta).pow(beta.view(-1, 1, 1))
    return _finish(1.0 / (1.0 + qb) if plateau else torch.exp(-0.5 * qb), support)


#: Generalized Gaussian kernels ``exp(-q^beta / 2)`` (see :func:`beta_kernels`).
generalized_gaussian_kernels = beta_kernels
#: Plateau-shaped kernels ``1 / (1 + q^beta)`` (see :func:`beta_kernels`).
plateau_kernels = partial(beta_kernels, plateau=True)


def sinc_kernels(k: int, cutoff: Tensor, support: Tensor | None = None) -> Tensor:
    """Circular low-pass (2-D sinc) kernels with angular cutoff frequency ``cutoff`` (rad/pixel)."""
    x, y = _grid(k, cutoff)
    r = torch.sqrt(x**2 + y**2).unsqueeze(0)
    w = cutoff.view(-1, 1, 1)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    j1 = torch.special.bessel_j1(w * safe_r)
    kernel = torch.where(r > 0, w * j1 / (2 * math.pi * safe_r), w**2 / (4 * math.pi))
    return _finish(kernel, support)


def motion_kernels(k: int, angle: Tensor, length: Tensor) -> Tensor:
    """Linear motion blur: a centred segment of ``length`` pixels at ``angle`` (rad), anti-aliased.

    The value at a pixel is ``max(0, 1 - distance to the segment)``, then normalised.
    """
    x, y = _grid(k, angle)
    ux, uy = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    half = (length / 2).view(-1, 1, 1)
    t = (x * ux + y * uy).clamp(-half, half)  # projection onto the segment
    dist = torch.sqrt((x - t * ux) ** 2 + (y - t * uy) ** 2)
    return _finish((1.0 - dist).clamp(min=0.0), None)


def delta_kernels(k: int, n: int, ref: Tensor) -> Tensor:
    """``n`` identity kernels (a one at the centre)."""
    out = torch.zeros((n, k, k), device=ref.device, dtype=ref.dtype)
    out[:, k // 2, k // 2] = 1.0
    return out
