"""The published SR evaluation protocol, on top of piq.

Papers report PSNR and SSIM computed this way (EDSR, RCAN, ESRGAN, SwinIR, BasicSR):

1. SR is clamped to ``[0, 1]`` and rounded to 8 bits, as if it were saved to PNG (to 16 bits
   when GT is a 16-bit image: the source's depth; Y and PSNR then use the same 8-bit-scale
   formula, which is PSNR with peak 1 on ``[0, 1]`` data, on 16-bit values).
2. Both images are converted to the luma channel Y of ITU-R BT.601 ("studio swing",
   ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with R, G, B in ``[0, 1]``), giving values
   in ``[16, 235]``.
3. ``scale`` pixels are cropped from every border.
4. PSNR uses a peak of 255. SSIM uses an 11x11 Gaussian window with sigma 1.5,
   ``K1 = 0.01``, ``K2 = 0.03``, on the full-resolution image (no downsampling), averaged over
   the valid region.

Two variants of step 2 exist. ``protocol="paper"`` (the default) computes Y from the 8-bit RGB
values without rounding Y, as BasicSR does. ``protocol="matlab"`` also rounds Y to an integer,
as MATLAB's ``rgb2ycbcr`` does on uint8 images. They differ by a few hundredths of a dB.

piq pitfalls handled here: ``piq.ssim`` downsamples images larger than 256 px by default,
which changes SSIM by up to 0.14; the protocol never downsamples. SSIM is computed with the
definition of ``piq.ssim(downsample=False)`` but a separable window (same values, ~10x faster,
checked against piq in the tests). ``piq.psnr`` adds
``1e-8`` to the normalised MSE, which biases high PSNRs (0.004 dB at 49 dB), so PSNR is
computed here from the exact formula in float64; identical images give ``inf``, as in BasicSR.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d
from torch import Tensor

from sr_cli.pixels import peak, to_levels

Protocol = Literal["paper", "matlab"]
PROTOCOLS: tuple[str, ...] = ("paper", "matlab")

#: BT.601 luma weights for RGB in [0, 1], giving Y in [16, 235].
BT601_Y = (65.481, 128.553, 24.966)

PROTOCOL_DESCRIPTIONS = {
    "paper": "PSNR/SSIM on Y (BT.601, from 8-bit RGB, Y not rounded), border cropped by the scale",
    "matlab": "PSNR/SSIM on Y (BT.601, Y rounded to 8 bits as MATLAB rgb2ycbcr), border cropped by the scale",
}


def to_uint8_range(x: Tensor, bits: int = 8) -> Tensor:
    """Clamp ``[0, 1]`` images and round them to the grid of their source's bit depth (8 bits:
    what saving a PNG does; 16 for 16-bit sources), returned as floats on the 8-bit scale
    ``[0, 255]`` (so peak 255 and the BT.601 constants apply unchanged)."""
    levels = to_levels(x, bits)
    return levels if bits == 8 else levels * (255.0 / peak(bits))


def rgb_to_y(rgb255: Tensor, round_y: bool = False, bits: int = 8) -> Tensor:
    """BT.601 luma of RGB images in ``[0, 255]``: ``(B, 3, H, W) -> (B, 1, H, W)`` in ``[16, 235]``.
    ``round_y`` rounds Y to the ``bits`` grid (MATLAB's ``rgb2ycbcr`` on ``uint8``/``uint16``)."""
    if rgb255.dim() != 4 or rgb255.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects (B, 3, H, W), got {tuple(rgb255.shape)}")
    w = torch.tensor(BT601_Y, dtype=rgb255.dtype, device=rgb255.device).view(1, 3, 1, 1)
    y = (rgb255 * w).sum(dim=1, keepdim=True) / 255.0 + 16.0
    # MATLAB rounds halves away from zero (Y is positive): floor(y + 0.5), not round-half-even.
    if not round_y:
        return y
    if bits == 8:
        return torch.floor(y + 0.5)
    grid = peak(bits) / 255.0
    return torch.floor(y * grid + 0.5) / grid


def crop_border(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each side of ``(..., H, W)``."""
    if border <= 0:
        return x
    if x.shape[-1] <= 2 * border or x.shape[-2] <= 2 * border:
        raise ValueError(f"image {tuple(x.shape[-2:])} is too small to crop a border of {border}")
    return x[..., border:-border, border:-border]


def _check_pair(sr: Tensor, gt: Tensor) -> None:
    if sr.shape != gt.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and GT {tuple(gt.shape)} must have the same shape")
    if sr.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got {tuple(sr.shape)}")


def prepare_y_one(x: Tensor, crop: int, protocol: Protocol = "paper", bits: int = 8) -> Tensor:
    """Quantize (to ``bits``, the source's depth), convert to Y and crop one batch
    ``(B, 3, H, W)`` as the protocol says: float64 ``(B, 1, H - 2 crop, W - 2 crop)`` in
    ``[16, 235]``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got {tuple(x.shape)}")
    y = rgb_to_y(to_uint8_range(x.double(), bits), protocol == "matlab", bits)
    return crop_border(y, crop)


def prepare_y(
    sr: Tensor, gt: Tensor, crop: int, protocol: Protocol = "paper", bits: int = 8
) -> tuple[Tensor, Tensor]:
    """Quantize, convert to Y and crop both images as the protocol says. Returns float64 ``[16, 235]``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    _check_pair(sr, gt)
    return prepare_y_one(sr, crop, protocol, bits), prepare_y_one(gt, crop, protocol, bits)


def psnr255(a: Tensor, b: Tensor) -> Tensor:
    """Exact per-image PSNR with peak 255 (no epsilon): ``10 log10(255^2 / MSE)``."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(255.0**2 / mse)


def psnr_y(
    sr: Tensor, gt: Tensor, crop: int, protocol: Protocol = "paper", bits: int = 8
) -> Tensor:
    """Per-image PSNR on the Y channel (dB), ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B,)``."""
    sr_y, gt_y = prepare_y(sr, gt, crop, protocol, bits)
    return psnr255(sr_y, gt_y)


def ssim(
    x: Tensor, y: Tensor, data_range: float = 255.0, kernel_size: int = 11, sigma: float = 1.5
) -> Tensor:
    """Per-image SSIM (Wang et al. 2004) over the valid region, averaged over channels.

    The same definition as ``piq.ssim(..., downsample=False)`` (K1 = 0.01, K2 = 0.03, Gaussian
    window, no padding), computed with the separable form of the Gaussian window: identical
    to float64 rounding and about 10x faster on the CPU than piq's 2-D grouped convolution.
    """
    x = x / data_range
    y = y / data_range
    c = x.shape[1]
    # kornia's normalised Gaussian (odd size: centred on the middle tap, as piq's window).
    g = get_gaussian_kernel1d(kernel_size, sigma, device=x.device, dtype=x.dtype)[0]
    gh = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    gv = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, gh, groups=c), gv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    s_xx = blur(x * x) - mu_x**2
    s_yy = blur(y * y) - mu_y**2
    s_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (s_xx + s_yy + c2)
    )
    return ssim_map.mean(dim=(-1, -2, -3))


def ssim_y(
    sr: Tensor, gt: Tensor, crop: int, protocol: Protocol = "paper", bits: int = 8
) -> Tensor:
    """Per-image SSIM on the Y channel, ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B,)``."""
    sr_y, gt_y = prepare_y(sr, gt, crop, protocol, bits)
    return ssim(sr_y, gt_y, data_range=255.0)


def psnr_rgb(sr: Tensor, gt: Tensor, crop: int, bits: int = 8) -> Tensor:
    """Per-image PSNR over the three RGB channels of images rounded to ``bits``, border cropped."""
    _check_pair(sr, gt)
    a = crop_border(to_uint8_range(sr.double(), bits), crop)
    b = crop_border(to_uint8_range(gt.double(), bits), crop)
    return psnr255(a, b)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Plain per-image PSNR of float images (no rounding, no crop), e.g. for ``D(SR)`` vs LQ."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def protocol_metrics(
    sr: Tensor, gt: Tensor, scale: int, protocol: Protocol = "paper", bits: int = 8
) -> dict[str, Tensor]:
    """All protocol metrics of a batch, per image: ``psnr_y``, ``ssim_y`` and ``psnr_rgb``."""
    return {
        "psnr_y": psnr_y(sr, gt, crop=scale, protocol=protocol, bits=bits),
        "ssim_y": ssim_y(sr, gt, crop=scale, protocol=protocol, bits=bits),
        "psnr_rgb": psnr_rgb(sr, gt, crop=scale, bits=bits),
    }
