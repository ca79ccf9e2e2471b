"""Random blur: Gaussian, generalized Gaussian, plateau, motion and sinc kernels, per sample.

:class:`Blur` is a pipeline stage that draws one kernel per image (kernel family, size, widths,
rotation, shape) and records the kernel itself as ``kernel`` ``(B, k, k)``; applying and
replaying it is the same per-sample convolution. :class:`BlurDownsample` is the degradation
"blur, then resize to HR / scale" (the classical ``y = (x * k) downarrow_s``), whose
:meth:`~BlurDownsample.replay` is exactly its forward pass without the final clamp and
8-bit rounding.

Kernel families and default ranges follow Real-ESRGAN (Wang et al., 2021, Sec. 3.2): sizes
7..21, ``sigma`` in ``[0.2, 3]``, generalized-Gaussian ``beta`` in ``[0.5, 4]``, plateau ``beta``
in ``[1, 2]``, and with probability ``sinc_prob`` a sinc kernel whose cutoff is drawn in
``[pi/3, pi]`` for kernels smaller than 13 and ``[pi/5, pi]`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sr_cli.degradations.base import Params, Stage
from sr_cli.degradations.functional import (
    check_prob,
    check_probs,
    check_range,
    choice,
    filter2d_per_sample,
    rand,
    uniform,
)
from sr_cli.degradations.kernels import (
    delta_kernels,
    gaussian_kernels,
    generalized_gaussian_kernels,
    motion_kernels,
    plateau_kernels,
    sinc_kernels,
)
from sr_cli.degradations.pipeline import ResizeDownsample, Size
from sr_cli.degradations.resize import Resize
from sr_cli.errors import ConfigError

#: Kernel families a :class:`Blur` stage can draw from (``sinc`` is added via ``sinc_prob``).
KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "motion",
)


def _beta(rng: tuple[float, float], n: int, generator: torch.Generator | None, device) -> Tensor:
    """Shape exponent: with even odds below or above 1 when the range straddles 1 (as Real-ESRGAN)."""
    lo, hi = rng
    coin = rand(n, generator, device) < 0.5
    u = rand(n, generator, device)
    if lo < 1.0 < hi:
        return torch.where(coin, lo + (1.0 - lo) * u, 1.0 + (hi - 1.0) * u)
    return lo + (hi - lo) * u


class Blur(Stage):
    """Convolve every image with its own random kernel.

    Args:
        kernel_size: size ``k`` of the kernel tensor (odd).
        kernel_sizes: odd supports to draw from (uniformly), each ``<= kernel_size``; smaller
            kernels are zero-padded to ``k``. Default: ``[kernel_size]``.
        kernel_list: families to draw from, among :data:`KERNEL_TYPES`.
        kernel_prob: their probabilities (uniform when omitted).
        sigma: ``[min, max]`` of the Gaussian widths (pixels). Anisotropic kernels draw both
            widths independently and a rotation in ``[-pi, pi]``.
        betag: ``[min, max]`` of the generalized-Gaussian exponent.
        betap: ``[min, max]`` of the plateau exponent.
        motion_length: ``[min, max]`` length of motion blur (pixels, ``<= k``).
        sinc_prob: probability of a sinc kernel instead of the families above.
        sinc_cutoff: ``[min, max]`` sinc cutoff (rad/pixel); by default Real-ESRGAN's rule
            (``[pi/3, pi]`` below size 13, ``[pi/5, pi]`` from 13).
        prob: probability of blurring at all (otherwise the kernel is the identity).

    Params: ``kernel`` ``(B, k, k)``.
    """

    name = "blur"

    def __init__(
        self,
        kernel_size: int = 21,
        kernel_sizes: Iterable[int] | None = None,
        kernel_list: Iterable[str] = ("iso", "aniso"),
        kernel_prob: Iterable[float] | None = None,
        sigma: Iterable[float] = (0.2, 3.0),
        betag: Iterable[float] = (0.5, 4.0),
        betap: Iterable[float] = (1.0, 2.0),
        motion_length: Iterable[float] = (3.0, 15.0),
        sinc_prob: float = 0.0,
        sinc_cutoff: Iterable[float] | None = None,
        prob: float = 1.0,
    ) -> None:
        super().__init__()
        k = int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"Blur.kernel_size must be a positive odd integer, got {kernel_size}")
        self.kernel_size = k
        sizes = [k] if kernel_sizes is None else [int(s) for s in kernel_sizes]
        if not sizes or any(s < 1 or s % 2 == 0 or s > k for s in sizes):
            raise ConfigError(
                f"Blur.kernel_sizes must be odd sizes <= kernel_size ({k}), got {sizes}"
            )
        self.kernel_sizes = tuple(sizes)
        self.kernel_list = tuple([kernel_list] if isinstance(kernel_list, str) else kernel_list)
        unknown = [t for t in self.kernel_list if t not in KERNEL_TYPES]
        if unknown:
            raise ConfigError(
                f"unknown Blur kernel type(s) {unknown}; choose among {list(KERNEL_TYPES)} "
                "(sinc kernels come with sinc_prob)"
            )
        n_types = len(self.kernel_list)
        if not n_types:
            self.kernel_prob: tuple[float, ...] = ()
        elif kernel_prob is None:
            self.kernel_prob = tuple([1.0 / n_types] * n_types)
        else:
            self.kernel_prob = check_probs("Blur.kernel_prob", kernel_prob, n_types)
        self.sigma = check_range("Blur.sigma", sigma, low=1e-3)
        self.betag = check_range("Blur.betag", betag, low=1e-3)
        self.betap = check_range("Blur.betap", betap, low=1e-3)
        self.motion_length = check_range("Blur.motion_length", motion_length, low=0.0)
        self.sinc_prob = check_prob("Blur.sinc_prob", sinc_prob)
        self.sinc_cutoff = (
            None if sinc_cutoff is None else check_range("Blur.sinc_cutoff", sinc_cutoff, low=0.0)
        )
        self.prob = check_prob("Blur.prob", prob)
        if not self.kernel_list and self.sinc_prob < 1.0:
            raise ConfigError("Blur.kernel_list is empty: set sinc_prob to 1 or list kernel types")

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        # Every draw happens whatever the outcome, so the stream of random numbers (and hence
        # the parameters of the stages after this one) does not depend on earlier outcomes.
        k = self.kernel_size
        dev = torch.device(device)
        apply = rand(n, generator, dev) < self.prob
        sizes = torch.tensor(self.kernel_sizes, device=dev)
        support = sizes[choice([1.0] * len(sizes), n, generator, dev)]
        kind = choice(self.kernel_prob or (1.0,), n, generator, dev)
        sx = uniform(*self.sigma, n, generator, dev)
        sy = uniform(*self.sigma, n, generator, dev)
        theta = uniform(-math.pi, math.pi, n, generator, dev)
        bg = _beta(self.betag, n, generator, dev)
        bp = _beta(self.betap, n, generator, dev)
        angle = uniform(0.0, math.pi, n, generator, dev)
        length = uniform(*self.motion_length, n, generator, dev)
        is_sinc = rand(n, generator, dev) < self.sinc_prob
        if self.sinc_cutoff is None:
            small = uniform(math.pi / 3, math.pi, n, generator, dev)
            large = uniform(math.pi / 5, math.pi, n, generator, dev)
            cutoff = torch.where(support < 13, small, large)
        else:
            cutoff = uniform(*self.sinc_cutoff, n, generator, dev)

        zero = torch.zeros_like(sx)
        families = []
        for t in self.kernel_list:
            if t == "iso":
                families.append(gaussian_kernels(k, sx, sx, zero, support))
            elif t == "aniso":
                families.append(gaussian_kernels(k, sx, sy, theta, support))
            elif t == "generalized_iso":
                families.append(generalized_gaussian_kernels(k, sx, sx, zero, bg, support))
            elif t == "generalized_aniso":
                families.append(generalized_gaussian_kernels(k, sx, sy, theta, bg, support))
            elif t == "plateau_iso":
                families.append(plateau_kernels(k, sx, sx, zero, bp, support))
            elif t == "plateau_aniso":
                families.append(plateau_kernels(k, sx, sy, theta, bp, support))
            elif t == "motion":
                families.append(motion_kernels(k, angle, length.clamp(max=k)))
        if families:
            kernel = torch.stack(families)[kind, torch.arange(n, device=dev)]
        else:
            kernel = delta_kernels(k, n, sx)
        if self.sinc_prob > 0:
            sinc = sinc_kernels(k, cutoff, support)
            kernel = torch.where(is_sinc.view(-1, 1, 1), sinc, kernel)
        kernel = torch.where(apply.view(-1, 1, 1), kernel, delta_kernels(k, n, sx))
        return {"kernel": kernel}

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        return filter2d_per_sample(x, self.param(params, "kernel"))

    def reach(self, rate: float, scale: int, replayed: bool = False) -> tuple[float, float]:
        """Half the kernel, in HR pixels at this stage's input rate."""
        return (self.kernel_size // 2) / rate, rate

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, kernel_list={self.kernel_list}, "
            f"sigma={self.sigma}, sinc_prob={self.sinc_prob}, prob={self.prob}"
        )


class BlurDownsample(ResizeDownsample):
    """Blur with a random per-sample kernel, then resize to ``HR / scale``.

    ``replay(sr, params)`` convolves with the recorded kernels and resizes the same way, so
    with ``quantize=False`` it equals ``forward(hr, params)`` up to the final clamp to
    ``[0, 1]``.

    Args: ``scale``, ``mode``, ``antialias``, ``quantize`` as for
    :class:`~sr_cli.degradations.pipeline.ResizeDownsample`, and
        **blur: options of :class:`Blur` (``kernel_list``, ``sigma``, ``kernel_size``, ...).

    Example:
        >>> d = BlurDownsample(4, kernel_list=["iso"], sigma=[1.0, 2.0])
        >>> hr = torch.rand(2, 3, 32, 32)
        >>> p = d.sample(hr, torch.Generator().manual_seed(0))
        >>> p["0_blur.kernel"].shape
        torch.Size([2, 21, 21])
    """

    def stages(self, resize: Resize, **blur: Any) -> list[Stage]:
        return [Blur(**blur), resize]
