"""JPEG compression with a per-sample quality, differentiable (kornia).

Uses :func:`kornia.enhance.jpeg_codec_differentiable` (Reich et al., 2024), which replaces the
rounding of the DCT coefficients by a differentiable approximation. Images are padded to a
multiple of 16 (replicating the border, so the padding adds no block edges) and cropped back.

JPEG is treated as the random, non-invertible part of a degradation (``replayable = False``):
:meth:`JPEG.replay` is
the identity, so the replay of :class:`JPEGDownsample` is the resize only. (The
codec is deterministic given the quality, but compressing SR again would compare compression
artifacts rather than content, and its gradients through the quantized DCT are poor.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from torch import Tensor

from sr_cli.degradations.base import Params, Stage
from sr_cli.degradations.functional import check_prob, check_range, rand, uniform
from sr_cli.degradations.pipeline import ResizeDownsample, Size
from sr_cli.degradations.resize import Resize


def jpeg(x: Tensor, quality: Tensor) -> Tensor:
    """Compress and decode ``(B, C, H, W)`` images in ``[0, 1]`` with per-image ``quality`` ``(B,)``.

    Any ``H, W`` and ``C`` in ``{1, 3}``; computed in float32, returned in ``x``'s dtype.
    """
    b, c, h, w = x.shape
    xf = x.float().clamp(0, 1)
    if c == 1:
        xf = xf.expand(b, 3, h, w)
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        xf = F.pad(xf, (0, pw, 0, ph), mode="replicate")
    q = quality.to(device=x.device, dtype=torch.float32).reshape(b)
    y = jpeg_codec_differentiable(xf, q)[..., :h, :w]
    if c == 1:
        y = y.mean(dim=1, keepdim=True)
    return y.clamp(0, 1).to(x.dtype)


class JPEG(Stage):
    """JPEG-compress every image with its own quality, uniform in ``quality``.

    Args:
        quality: ``[min, max]`` quality (1..100).
        prob: probability of compressing at all.

    Params: ``quality`` ``(B,)``, ``apply`` ``(B,)`` bool.
    """

    name = "jpeg"
    replayable = False

    def __init__(self, quality: Iterable[float] = (30.0, 95.0), prob: float = 1.0) -> None:
        super().__init__()
        self.quality = check_range("JPEG.quality", quality, low=1.0)
        self.prob = check_prob("JPEG.prob", prob)

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        return {
            "apply": rand(n, generator, device) < self.prob,
            "quality": uniform(*self.quality, n, generator, device),
        }

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        apply = self.param(params, "apply")
        if not bool(apply.any()):
            return x
        y = jpeg(x, self.param(params, "quality"))
        return torch.where(apply.to(x.device).view(-1, 1, 1, 1), y, x)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, prob={self.prob}"


class JPEGDownsample(ResizeDownsample):
    """Resize to ``HR / scale``, then JPEG-compress with a random quality per image.

    ``replay`` is the resize only (JPEG is the non-invertible part).

    Args: ``scale``, ``mode``, ``antialias``, ``quantize`` as for
    :class:`~sr_cli.degradations.pipeline.ResizeDownsample`, and
        quality: ``[min, max]`` JPEG quality.
    """

    def stages(self, resize: Resize, quality: Iterable[float] = (30.0, 95.0)) -> list[Stage]:
        return [resize, JPEG(quality=quality)]
