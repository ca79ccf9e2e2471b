"""Resizing: MATLAB's bicubic ``imresize``, the other interpolation modes, and the ``Resize`` stage.

Three names, three levels:

* :func:`imresize`: MATLAB-compatible bicubic, the one bicubic implementation of the project;
* :func:`resize`: one entry point for every interpolation mode (``bicubic`` is :func:`imresize`);
* :class:`Resize`: the pipeline stage that resizes by a (possibly random) factor with a
  (possibly random) mode per image. Plain bicubic downsampling is the one-stage pipeline
  ``DegradationPipeline(scale, [Resize()])``
  (:class:`~sr_cli.degradations.pipeline.ResizeDownsample`).

MATLAB's ``imresize(img, 1/scale, 'bicubic')`` makes the LR images of the SR benchmarks (Set5,
Set14, BSD100, Urban100, Manga109, DIV2K). Three details make MATLAB differ from
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
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.degradations.base import Params, Stage
from sr_cli.degradations.functional import check_probs, check_range, choice, uniform
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


# --------------------------------------------------------------------------- every mode
#: Interpolation modes understood by :func:`resize`.
RESIZE_MODES = ("bicubic", "bilinear", "area", "nearest")
#: Half the support of each mode's kernel, in the pixels it is laid out on.
_HALF_WIDTH = {"bicubic": 2.0, "bilinear": 1.0, "area": 0.5, "nearest": 0.5}


def check_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode {mode!r}; choose one of {list(RESIZE_MODES)}")
    return mode


def resize(
    x: Tensor, size: tuple[int, int], mode: str = "bicubic", antialias: bool = True
) -> Tensor:
    """Resize ``(B, C, H, W)`` to ``size`` with one interpolation mode.

    Modes:
        ``bicubic``: MATLAB's ``imresize`` (cubic ``a=-0.5``, symmetric borders); ``antialias``
        widens the kernel when downscaling, as MATLAB does.
        ``bilinear``: ``F.interpolate(mode="bilinear", align_corners=False)``, antialiased
        (triangle kernel widened by the factor) when ``antialias``.
        ``area``: average over the covered input area (box filter; exact block mean for integer
        factors).
        ``nearest``: ``nearest-exact`` (the input pixel whose centre is closest).

    Values are not clamped; bicubic may overshoot ``[0, 1]`` slightly.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x  # every mode is the identity at the same size
    check_mode(mode)
    if mode == "bicubic":
        return imresize(x, size=size, antialias=antialias)
    if mode == "bilinear":
        down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=antialias and down
        )
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="nearest-exact")


# --------------------------------------------------------------------------- the stage
class Resize(Stage):
    """Resize by a random factor, Real-ESRGAN style, with a random interpolation mode per sample.

    The output size is ``round(base * factor)`` where ``base`` is the input size
    (``target="input"``) or the final LQ size (``target="lq"``). The factor is drawn once per batch
    (every image of a batch must keep the same size): with probabilities
    ``factor_probs = [up, down, keep]`` it is uniform in ``[1, factor_range[1]]``, uniform in
    ``[factor_range[0], 1]``, or 1. The defaults give a plain resize to the LQ size.

    Args:
        target: ``"input"`` or ``"lq"``.
        factor_range: ``[min, max]`` factor.
        factor_probs: probabilities of ``[up, down, keep]``.
        modes: interpolation modes to choose from (see :func:`resize`).
        mode_probs: their probabilities (uniform when omitted).
        antialias: antialiased bicubic/bilinear downscaling (MATLAB-like). Real-ESRGAN used
            ``F.interpolate`` without antialiasing.

    Params: ``factor`` ``(B,)`` float when the factor is random, ``mode`` ``(B,)`` long (index
    into ``modes``) when there are several modes. A stage with neither draws nothing.
    """

    name = "resize"

    def __init__(
        self,
        target: str = "lq",
        factor_range: Iterable[float] = (1.0, 1.0),
        factor_probs: Iterable[float] = (0.0, 0.0, 1.0),
        modes: Iterable[str] = ("bicubic",),
        mode_probs: Iterable[float] | None = None,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        if target not in ("input", "lq"):
            raise ConfigError(f"Resize.target must be 'input' or 'lq', got {target!r}")
        self.target = target
        self.factor_range = check_range("Resize.factor_range", factor_range, low=1e-3)
        self.factor_probs = check_probs("Resize.factor_probs", factor_probs, 3)
        self.modes = tuple(check_mode(m) for m in ([modes] if isinstance(modes, str) else modes))
        if not self.modes:
            raise ConfigError("Resize.modes must list at least one mode")
        n_modes = len(self.modes)
        self.mode_probs = (
            tuple([1.0 / n_modes] * n_modes)
            if mode_probs is None
            else check_probs("Resize.mode_probs", mode_probs, n_modes)
        )
        self.antialias = bool(antialias)
        lo, hi = self.factor_range
        up, down, keep = self.factor_probs
        #: The factor is always 1 (no draw needed).
        self.fixed_factor = keep == 1.0 or (up == 0 and lo == 1.0) or (down == 0 and hi == 1.0)
        self.stochastic = not self.fixed_factor or n_modes > 1

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        out: Params = {}
        if not self.fixed_factor:
            lo, hi = self.factor_range
            kind = int(choice(self.factor_probs, 1, generator, "cpu"))
            u = float(uniform(0.0, 1.0, 1, generator, "cpu"))
            if kind == 0:
                factor = 1.0 + u * (max(hi, 1.0) - 1.0)
            elif kind == 1:
                factor = min(lo, 1.0) + u * (1.0 - min(lo, 1.0))
            else:
                factor = 1.0
            out["factor"] = torch.full((n,), factor, device=device)
        if len(self.modes) > 1:
            out["mode"] = choice(self.mode_probs, n, generator, device)
        return out

    def out_size(self, x: Tensor, params: Params, lq_size: tuple[int, int]) -> tuple[int, int]:
        factor = 1.0 if self.fixed_factor else float(self.param(params, "factor")[0])
        base = lq_size if self.target == "lq" else tuple(x.shape[-2:])
        return max(1, round(base[0] * factor)), max(1, round(base[1] * factor))

    def forward(self, x: Tensor, params: Params, lq_size: tuple[int, int]) -> Tensor:
        size = self.out_size(x, params, lq_size)
        if len(self.modes) == 1:
            return resize(x, size, self.modes[0], self.antialias)
        # Every image with its own mode: one resize per mode present in the batch.
        mode_idx = self.param(params, "mode")
        present = torch.unique(mode_idx).tolist()
        if len(present) == 1:
            return resize(x, size, self.modes[present[0]], self.antialias)
        out = x.new_empty((x.shape[0], x.shape[1], size[0], size[1]))
        for m in present:
            sel = (mode_idx == m).nonzero(as_tuple=True)[0]
            out = out.index_copy(
                0, sel, resize(x.index_select(0, sel), size, self.modes[m], self.antialias)
            )
        return out

    def reach(self, rate: float, scale: int, replayed: bool = False) -> tuple[float, float]:
        """Half the widest kernel of its modes (bicubic 2 pixels, bilinear 1, area and nearest
        1/2), counted at the coarser of input and output (an antialiased downscale widens the
        kernel to output pixels), for the smallest factor it may draw."""
        lo, _ = self.factor_range
        up, down, keep = self.factor_probs
        smallest = 1.0 if self.fixed_factor or down == 0 else min(lo, 1.0)
        out = smallest * (1.0 / scale if self.target == "lq" else rate)
        half = max(_HALF_WIDTH[m] for m in self.modes)
        return half / min(rate, out), out

    def batch_uniform(self, params: Params) -> bool:
        if self.fixed_factor:
            return True
        factor = self.param(params, "factor")
        return bool((factor == factor[:1]).all())

    def extra_repr(self) -> str:
        return (
            f"target={self.target!r}, factor_range={self.factor_range}, "
            f"factor_probs={self.factor_probs}, modes={self.modes}, antialias={self.antialias}"
        )
