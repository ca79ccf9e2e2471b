"""MATLAB-compatible ``imresize`` with the bicubic kernel, differentiable and batched.

Super-resolution benchmarks (Set5, Set14, BSD100, Urban100, Manga109, DIV2K) make their LR
images with MATLAB's ``imresize(img, 1/scale, 'bicubic')``. Three details make MATLAB differ from
``PIL``/``cv2``/``torch.nn.functional.interpolate``:

* the cubic convolution kernel uses ``a = -0.5`` (Keys, 1981);
* when downscaling, the kernel is stretched by ``1/scale`` (antialiasing), so a x4 reduction
  uses 16 taps per output pixel;
* out-of-range taps are mirrored *symmetrically* (``... 2 1 | 1 2 3 ... n | n n-1 ...``).

The resize is written as two dense matrices built from MATLAB's ``contributions`` definition,
``out = W_h @ x @ W_w^T``. It is exact (up to float rounding), differentiable with respect to
the input, runs on the input's device and dtype, and works on any leading batch dimensions.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from sr_cli.degradations.base import Degradation, Params
from sr_cli.errors import ConfigError

_KERNEL_WIDTH = 4.0  # support of the cubic kernel


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5``, as in MATLAB's ``imresize``."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=256)
def _resize_matrix_np(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """The ``(out_len, in_len)`` matrix of MATLAB's ``contributions`` for one dimension."""
    if scale < 1 and antialias:
        width = _KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)
    else:
        width = _KERNEL_WIDTH
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) sits at input coordinate u.
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    idx = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), idx.ravel()), weights.ravel())
    return mat


_DEVICE_CACHE: dict[tuple, Tensor] = {}


def resize_matrix(
    in_len: int,
    out_len: int,
    scale: float,
    antialias: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The 1-D MATLAB bicubic resampling matrix as a tensor (cached per device and dtype)."""
    key = (in_len, out_len, float(scale), antialias, torch.device(device), dtype)
    mat = _DEVICE_CACHE.get(key)
    if mat is None:
        if len(_DEVICE_CACHE) > 512:
            _DEVICE_CACHE.clear()
        mat = torch.from_numpy(_resize_matrix_np(in_len, out_len, float(scale), antialias))
        mat = mat.to(device=device, dtype=dtype)
        _DEVICE_CACHE[key] = mat
    return mat


def imresize(
    x: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize like MATLAB's ``imresize(x, scale, 'bicubic')``.

    Args:
        x: images ``(..., H, W)``, any float dtype, any device. Values are not clamped, so the
            output may overshoot the input range slightly, as in MATLAB before its uint8 cast.
        scale: resize factor (``0.25`` for x4 downscaling). Output size is ``ceil(H * scale)``.
        size: output ``(H, W)``; alternative to ``scale``.
        antialias: widen the kernel when downscaling (MATLAB's default).

    Shape:
        ``(..., H, W) -> (..., H', W')``.

    Example:
        >>> lq = imresize(torch.rand(1, 3, 64, 64), scale=1 / 4)
        >>> lq.shape
        torch.Size([1, 3, 16, 16])
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"imresize expects a floating point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"imresize expects (..., H, W), got shape {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of `scale` or `size`")
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        scale_h = scale_w = float(scale)
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
    # MATLAB resizes along the dimension with the smaller scale first; for equal scales, rows first.
    mat_h = resize_matrix(in_h, out_h, scale_h, antialias, x.device, x.dtype)
    mat_w = resize_matrix(in_w, out_w, scale_w, antialias, x.device, x.dtype)
    if scale_w < scale_h:
        return mat_h @ (x @ mat_w.transpose(0, 1))
    return (mat_h @ x) @ mat_w.transpose(0, 1)


def quantize(x: Tensor) -> Tensor:
    """Round ``[0, 1]`` images to the 8-bit grid, as saving a PNG would (gradient passes straight through)."""
    q = torch.round(x.clamp(0, 1) * 255.0) / 255.0
    return x + (q - x).detach()


class BicubicDownsample(Degradation):
    """MATLAB-style antialiased bicubic downsampling by an integer ``scale``.

    The same object makes the LQ from HR in the data pipeline and, through
    :meth:`consistency`, maps SR back to LQ space in the downsample-consistency loss.

    Args:
        scale: integer downscaling factor (2, 3, 4, ...).
        quantize: round the LQ to 8 bits, as LR images saved to PNG are (the published
            benchmarks). :meth:`consistency` never rounds, so it stays differentiable.

    Example:
        >>> d = BicubicDownsample(4)
        >>> d(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, scale: int, quantize: bool = True) -> None:
        super().__init__(scale)
        self.quantize = quantize

    def _check(self, hr: Tensor) -> None:
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ConfigError(
                f"HR size {h}x{w} is not divisible by degradation scale {self.scale}; "
                "crop HR images to a multiple of the scale (the datasets do this for you)."
            )

    def consistency(self, sr: Tensor, params: Params | None = None) -> Tensor:
        self._check(sr)
        return imresize(sr, scale=1.0 / self.scale)

    def forward(self, hr: Tensor, params: Params | None = None) -> Tensor:
        lq = self.consistency(hr, params)
        return quantize(lq) if self.quantize else lq

    def extra_repr(self) -> str:
        return f"scale={self.scale}, quantize={self.quantize}"
