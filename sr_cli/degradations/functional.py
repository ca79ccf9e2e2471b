"""Batched building blocks shared by the degradation stages.

* Random draws that follow one rule: every number is drawn from the given ``torch.Generator``
  *on the generator's device* (the default CPU generator when ``None``) and only then moved to
  the data's device. The same seed therefore gives the same parameters whether the images live
  on the CPU or on a GPU.
* :func:`resize`: one entry point for the interpolation modes (MATLAB bicubic, bilinear, area,
  nearest), differentiable, on the input's device.
* :func:`filter2d_per_sample`: convolves every image of a batch with its own kernel in a single
  grouped convolution.
* :func:`bit_quantize`: round to ``2**bits`` levels with a straight-through gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sr_cli.degradations.resize import imresize
from sr_cli.errors import ConfigError

#: Interpolation modes understood by :func:`resize`.
RESIZE_MODES = ("bicubic", "bilinear", "area", "nearest")


# --------------------------------------------------------------------------- random draws
def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def rand(
    shape: Sequence[int] | int,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> Tensor:
    """Uniform ``[0, 1)`` float32 numbers drawn on the generator's device, returned on ``device``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    out = torch.rand(shape, generator=generator, device=_gen_device(generator))
    return out.to(device)


def uniform(
    low: float, high: float, n: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``n`` numbers uniform in ``[low, high)``."""
    return low + (high - low) * rand(n, generator, device)


def choice(
    probs: Sequence[float], n: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``n`` indices into ``probs`` (long), drawn with these probabilities (one uniform each)."""
    p = torch.as_tensor(list(probs), dtype=torch.float64)
    cdf = torch.cumsum(p / p.sum(), 0).float()
    u = rand(n, generator, "cpu")
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=len(p) - 1)
    return idx.to(device)


def seeds(n: int, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """``n`` int64 seeds, for stages that draw whole noise fields later with their own generators."""
    s = torch.randint(0, 2**62, (n,), generator=generator, device=_gen_device(generator))
    return s.to(device)


def randperm(n: int, generator: torch.Generator | None) -> Tensor:
    """A permutation of ``range(n)`` (on the CPU)."""
    return torch.randperm(n, generator=generator, device=_gen_device(generator)).cpu()


def check_range(name: str, value: Sequence[float], low: float | None = None) -> tuple[float, float]:
    """Validate a ``[min, max]`` option and return it as a tuple of floats."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair [min, max], got {value!r}") from None
    if lo > hi:
        raise ConfigError(f"{name} must be [min, max] with min <= max, got {[lo, hi]}")
    if low is not None and lo < low:
        raise ConfigError(f"{name} must be >= {low}, got {[lo, hi]}")
    return lo, hi


def check_probs(name: str, probs: Sequence[float], n: int) -> tuple[float, ...]:
    """Validate a list of ``n`` non-negative probabilities that sum to 1."""
    p = tuple(float(v) for v in probs)
    if len(p) != n:
        raise ConfigError(f"{name} needs {n} probabilities, got {len(p)}: {list(p)}")
    if any(v < 0 for v in p) or abs(sum(p) - 1.0) > 1e-4:
        raise ConfigError(f"{name} must be non-negative and sum to 1, got {list(p)}")
    return p


def check_prob(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} is a probability in [0, 1], got {p}")
    return p


# --------------------------------------------------------------------------- resampling
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
    if mode == "bicubic":
        return imresize(x, size=size, antialias=antialias)
    if mode == "bilinear":
        down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=antialias and down
        )
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    raise ConfigError(f"unknown resize mode {mode!r}; choose one of {list(RESIZE_MODES)}")


def resize_per_sample(
    x: Tensor,
    size: tuple[int, int],
    mode_idx: Tensor,
    modes: Sequence[str],
    antialias: bool = True,
) -> Tensor:
    """Resize every sample with its own mode (``mode_idx[b]`` indexes ``modes``)."""
    if len(modes) == 1:
        return resize(x, size, modes[0], antialias)
    present = torch.unique(mode_idx).tolist()
    if len(present) == 1:
        return resize(x, size, modes[present[0]], antialias)
    out = x.new_empty((x.shape[0], x.shape[1], int(size[0]), int(size[1])))
    for m in present:
        sel = (mode_idx == m).nonzero(as_tuple=True)[0]
        out = out.index_copy(0, sel, resize(x.index_select(0, sel), size, modes[m], antialias))
    return out


# --------------------------------------------------------------------------- filtering
def filter2d_per_sample(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve image ``b`` of ``x`` with ``kernels[b]`` (true convolution, same size output).

    Borders are mirrored (``reflect``), or replicated when the image is smaller than half the
    kernel. All images go through one grouped convolution: the batch is folded into the
    channels and the kernel of each image is repeated over its channels.

    Shape:
        ``x``: ``(B, C, H, W)``; ``kernels``: ``(B, k, k)`` with ``k`` odd -> ``(B, C, H, W)``.
    """
    b, c, h, w = x.shape
    if kernels.dim() != 3 or kernels.shape[0] != b or kernels.shape[1] != kernels.shape[2]:
        raise ValueError(
            f"kernels must be (B, k, k) with B={b}, got {tuple(kernels.shape)} for x {tuple(x.shape)}"
        )
    k = kernels.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {k}")
    p = k // 2
    pad_mode = "reflect" if p < h and p < w else "replicate"
    xp = F.pad(x.reshape(1, b * c, h, w), (p, p, p, p), mode=pad_mode)
    weight = kernels.to(device=x.device, dtype=x.dtype).flip(-1, -2)
    weight = weight.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


# --------------------------------------------------------------------------- quantization
def bit_quantize(x: Tensor, bits: int = 8) -> Tensor:
    """Clamp to ``[0, 1]`` and round to ``2**bits`` evenly spaced levels (straight-through gradient)."""
    levels = float(2**bits - 1)
    q = torch.round(x.clamp(0, 1) * levels) / levels
    return x + (q - x).detach()
