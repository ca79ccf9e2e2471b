"""Additive Gaussian and Poisson noise, colour or gray, drawn per sample.

:class:`Noise` is a pipeline stage; :class:`NoisyDownsample` is the degradation "resize to
HR / scale, then add noise".

Noise is the random, non-invertible part of a degradation (``replayable = False``):
:meth:`Noise.replay` is the identity, so the replay of :class:`NoisyDownsample` is the resize
alone. Both noises are zero-mean, so ``replay(HR, params)`` is the expectation of the LQ
(before clamping and rounding).

* Gaussian: ``x + sigma * z`` with ``z ~ N(0, 1)`` per channel, or one ``z`` shared by the three
  channels for gray noise. ``sigma`` is given in 8-bit levels (``[1, 30]`` means
  ``1/255 .. 30/255``), as in Real-ESRGAN.
* Poisson: ``x + scale * (Poisson(levels * x) / levels - x)``, so its variance is
  ``scale^2 * x / levels``. Real-ESRGAN takes ``levels`` as the number of distinct 8-bit values in
  the image rounded up to a power of two, which is 256 for natural images; here it is a fixed
  option. Gray Poisson noise is computed on the luma and added to every channel.

Parameters per sample: ``apply``, ``poisson`` (which noise), ``gray``, ``sigma`` (in ``[0, 1]``
units), ``scale`` and ``seed``. The noise field itself is drawn at forward time with a generator
seeded by ``seed`` on the data's device, so ``forward(x, params)`` is repeatable (the same
seed gives different fields on CPU and GPU, but always the same on one device).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from kornia.color import rgb_to_grayscale
from torch import Tensor

from sr_cli.degradations.base import Params, Stage
from sr_cli.degradations.functional import check_prob, check_range, rand, seeds, uniform
from sr_cli.degradations.pipeline import ResizeDownsample, Size
from sr_cli.degradations.resize import Resize
from sr_cli.errors import ConfigError


class Noise(Stage):
    """Add Gaussian (probability ``gaussian_prob``) or else Poisson noise to every image.

    Args:
        gaussian_prob: probability of Gaussian rather than Poisson noise.
        sigma: ``[min, max]`` Gaussian standard deviation, in 8-bit levels.
        poisson_scale: ``[min, max]`` Poisson noise scale.
        gray_prob: probability that the noise is the same on the three channels.
        levels: Poisson photon count at intensity 1 (256, as for 8-bit images).
        prob: probability of adding noise at all.
        clip: clamp to ``[0, 1]`` afterwards (Real-ESRGAN does).
    """

    name = "noise"
    replayable = False

    def __init__(
        self,
        gaussian_prob: float = 1.0,
        sigma: Iterable[float] = (1.0, 30.0),
        poisson_scale: Iterable[float] = (0.05, 3.0),
        gray_prob: float = 0.0,
        levels: float = 256.0,
        prob: float = 1.0,
        clip: bool = True,
    ) -> None:
        super().__init__()
        self.gaussian_prob = check_prob("Noise.gaussian_prob", gaussian_prob)
        self.sigma = check_range("Noise.sigma", sigma, low=0.0)
        self.poisson_scale = check_range("Noise.poisson_scale", poisson_scale, low=0.0)
        self.gray_prob = check_prob("Noise.gray_prob", gray_prob)
        if levels <= 0:
            raise ConfigError(f"Noise.levels must be positive, got {levels}")
        self.levels = float(levels)
        self.prob = check_prob("Noise.prob", prob)
        self.clip = bool(clip)

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        return {
            "apply": rand(n, generator, device) < self.prob,
            "poisson": rand(n, generator, device) >= self.gaussian_prob,
            "gray": rand(n, generator, device) < self.gray_prob,
            "sigma": uniform(*self.sigma, n, generator, device) / 255.0,
            "scale": uniform(*self.poisson_scale, n, generator, device),
            "seed": seeds(n, generator, device),
        }

    def noise(self, x: Tensor, params: Params) -> Tensor:
        """The noise field that :meth:`forward` adds (detached: noise carries no gradient)."""
        x = x.detach()
        b, c, h, w = x.shape
        apply = self.param(params, "apply").tolist()
        poisson = self.param(params, "poisson").tolist()
        gray = self.param(params, "gray").tolist()
        seed = self.param(params, "seed").tolist()
        sigma = self.param(params, "sigma").to(x.device, torch.float32)
        scale = self.param(params, "scale").to(x.device, torch.float32)
        fields = []
        for i in range(b):
            if not apply[i]:
                fields.append(torch.zeros((c, h, w), device=x.device, dtype=torch.float32))
                continue
            g = torch.Generator(device=x.device)
            g.manual_seed(int(seed[i]))
            shared = gray[i] and c == 3
            if poisson[i]:
                base = x[i].float().clamp(0, 1)
                if shared:
                    base = rgb_to_grayscale(base)
                counts = torch.poisson(base * self.levels, generator=g)
                z = (counts / self.levels - base) * scale[i]
            else:
                z = torch.randn((1 if gray[i] else c, h, w), generator=g, device=x.device)
                z = z * sigma[i]
            fields.append(z.expand(c, h, w))
        return torch.stack(fields).to(x.dtype)

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        out = x + self.noise(x, params)
        return out.clamp(0, 1) if self.clip else out

    def extra_repr(self) -> str:
        return (
            f"gaussian_prob={self.gaussian_prob}, sigma={self.sigma}, "
            f"poisson_scale={self.poisson_scale}, gray_prob={self.gray_prob}, prob={self.prob}"
        )


class NoisyDownsample(ResizeDownsample):
    """Resize to ``HR / scale`` (MATLAB bicubic by default), then add random noise.

    ``replay`` is the resize only: the noise is the non-invertible random part.

    Args: ``scale``, ``mode``, ``antialias``, ``quantize`` as for
    :class:`~sr_cli.degradations.pipeline.ResizeDownsample`, and
        **noise: options of :class:`Noise` (``sigma``, ``gaussian_prob``, ``gray_prob``, ...).
    """

    def stages(self, resize: Resize, **noise: Any) -> list[Stage]:
        return [resize, Noise(**noise)]
