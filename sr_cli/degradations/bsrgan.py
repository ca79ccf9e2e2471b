"""BSRGAN-style randomly shuffled degradations (Zhang et al., 2021, arXiv:2103.14006).

"Designing a Practical Degradation Model for Deep Blind Image Super-Resolution" applies
blur, downsampling, noise and JPEG in a *random order*. This operator shuffles, per batch:

* an isotropic Gaussian blur, width uniform in ``[0.1, 2.4]`` (paper's range);
* an anisotropic Gaussian blur, rotation in ``[-pi, pi]``, widths uniform in
  ``[0.7, 2.45]`` (the paper draws the covariance eigenvalues in ``[0.5, 6]``; these are
  their square roots);
* kernel sizes uniform in ``{7, 9, ..., 21}``;
* a random resize to between 1x and 2x the LQ size (bicubic, bilinear or nearest);
* Gaussian noise, ``sigma`` uniform in ``[1, 25] / 255``, gray with probability 0.2;
* JPEG, quality uniform in ``[30, 95]``;

then resizes to ``HR / scale`` with a random mode and ends with JPEG compression (as the paper
does). The paper's camera-sensor (ISP) noise and its down-up resampling variant are left out.

Replay: the order is recorded (``0_shuffle.order``), so
:meth:`~sr_cli.degradations.pipeline.DegradationPipeline.replay` reapplies both blurs and
both resizes exactly, in that order, and skips noise and JPEG: it maps SR to the noise-free,
uncompressed LQ. Note that noise applied *before* a blur or resize is blurred/resized with it
in the LQ, which the replay cannot reproduce; the LQ matches it only up to that noise.
"""

from __future__ import annotations

from collections.abc import Iterable

from sr_cli.degradations.blur import Blur
from sr_cli.degradations.jpeg import JPEG
from sr_cli.degradations.noise import Noise
from sr_cli.degradations.pipeline import DegradationPipeline, Shuffle
from sr_cli.degradations.resize import Resize

_SIZES = (7, 9, 11, 13, 15, 17, 19, 21)


class BSRGANDegradation(DegradationPipeline):
    """Randomly ordered blur x2, resize, noise and JPEG, then resize to LQ and JPEG.

    Args:
        scale: integer factor between HR and LQ.
        iso_sigma: width range of the isotropic blur.
        aniso_sigma: width range of the anisotropic blur.
        kernel_sizes: odd kernel sizes drawn uniformly (``<= 21``).
        resize_range: factor range of the shuffled resize, relative to the LQ size.
        resize_modes: interpolation modes drawn uniformly.
        noise_range: Gaussian sigma range in 8-bit levels.
        gray_noise_prob: probability of gray noise.
        jpeg_range: JPEG quality range (both JPEG steps).
        quantize: round the LQ to 8 bits.
    """

    def __init__(
        self,
        scale: int,
        iso_sigma: Iterable[float] = (0.1, 2.4),
        aniso_sigma: Iterable[float] = (0.7, 2.45),
        kernel_sizes: Iterable[int] = _SIZES,
        resize_range: Iterable[float] = (1.0, 2.0),
        resize_modes: Iterable[str] = ("bicubic", "bilinear", "nearest"),
        noise_range: Iterable[float] = (1.0, 25.0),
        gray_noise_prob: float = 0.2,
        jpeg_range: Iterable[float] = (30.0, 95.0),
        quantize: bool = True,
    ) -> None:
        sizes, modes = list(kernel_sizes), list(resize_modes)
        shuffled = Shuffle(
            [
                Blur(21, sizes, ["iso"], sigma=iso_sigma),
                Blur(21, sizes, ["aniso"], sigma=aniso_sigma),
                Resize("lq", resize_range, (1.0, 0.0, 0.0), modes),
                Noise(1.0, noise_range, gray_prob=gray_noise_prob),
                JPEG(jpeg_range),
            ]
        )
        stages = [shuffled, Resize("lq", modes=modes), JPEG(jpeg_range)]
        super().__init__(scale, stages, final_resize=None, quantize=quantize)
