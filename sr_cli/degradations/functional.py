"""Batched building blocks shared by the degradation stages.

* Random draws that follow one rule: every number is drawn from the given ``torch.Generator``
  *on the generator's device* (the default CPU generator when ``None``) and only then moved to
  the data's device. The same seed therefore gives the same parameters whether the images live
  on the CPU or on a GPU.
* Option checks (:func:`check_range`, :func:`check_probs`, :func:`check_prob`).
* :func:`filter2d_per_sample`: convolves every image of a batch with its own kernel
  (:func:`kornia.filters.filter2d`), choosing the border mode the image size allows.
* :func:`quantize`: round to ``2**bits`` levels with a straight-through gradient.

Resizing lives in :mod:`sr_cli.degradations.resize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from kornia.filters import filter2d
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.pixels import peak, to_levels


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


# --------------------------------------------------------------------------- filtering
def filter2d_per_sample(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve image ``b`` of ``x`` with ``kernels[b]`` (true convolution, same size output).

    Borders are mirrored (``reflect``: ``... 2 1 | 0 1 2 ...``, the edge pixel not repeated), or
    replicated when the image is not larger than half the kernel. kornia filters every image with
    its own kernel, shared by its channels, in one grouped convolution; what it cannot do is
    choose the border mode from the image size, which is all this function adds.

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
    # kornia's reflect padding needs each side longer than k // 2; smaller images replicate.
    border = "reflect" if k // 2 < h and k // 2 < w else "replicate"
    return filter2d(x, kernels, border_type=border, behaviour="conv")


# --------------------------------------------------------------------------- quantization
def quantize(x: Tensor, bits: int | Tensor = 8) -> Tensor:
    """Clamp to ``[0, 1]`` and round to ``2**bits`` evenly spaced levels (straight-through gradient).

    With ``bits=8`` this is what saving a PNG does to ``[0, 1]`` images. ``bits`` may be a
    ``(B,)`` tensor: image ``b`` is rounded to ``bits[b]`` bits (8- and 16-bit sources mixed).
    """
    if isinstance(bits, Tensor):
        top = (2.0 ** bits.to(torch.float64) - 1.0).to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        q = torch.round(x.clamp(0.0, 1.0) * top) / top
    else:
        q = to_levels(x, bits) / peak(bits)
    return x + (q - x).detach()
