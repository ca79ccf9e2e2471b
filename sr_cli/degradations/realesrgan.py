"""Real-ESRGAN's second-order degradation (Wang et al., 2021, arXiv:2107.10833).

"Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data" degrades HR
twice with blur -> random resize -> noise -> JPEG, then ends with, in random order, either
[resize to LQ + sinc filter, JPEG] or [JPEG, resize to LQ + sinc filter]. The defaults below are
the published ones (``train_realesrnet_x4plus.yml``):

=====================  =========================================  ==========================
                       first order                                second order
=====================  =========================================  ==========================
blur kernels           iso, aniso, gen. iso, gen. aniso,          same, applied with
                       plateau iso, plateau aniso:                probability 0.8
                       [0.45, 0.25, 0.12, 0.03, 0.12, 0.03];
                       sizes 7..21, sinc prob 0.1
blur sigma             [0.2, 3]                                   [0.2, 1.5]
beta (gen. / plateau)  [0.5, 4] / [1, 2]                          [0.5, 4] / [1, 2]
resize up/down/keep    [0.2, 0.7, 0.1] in [0.15, 1.5] of HR       [0.3, 0.4, 0.3] in [0.3, 1.2]
                                                                  of the LQ size
resize modes           area, bilinear, bicubic                    same
Gaussian noise prob    0.5 (else Poisson)                         0.5
Gaussian sigma         [1, 30] / 255                              [1, 25] / 255
Poisson scale          [0.05, 3]                                  [0.05, 2.5]
gray noise prob        0.4                                        0.4
JPEG quality           [30, 95]                                   [30, 95]
final sinc prob        --                                         0.8 (cutoff [pi/3, pi])
=====================  =========================================  ==========================

Differences from the reference implementation, by design: the resize factor and the order of
the final step are drawn per batch as there, but the resize mode, the noise type and the JPEG
quality are drawn per image; MATLAB bicubic stands in for ``F.interpolate``'s bicubic (without
antialiasing by default, as there); the Poisson level count is fixed at 256 instead of being
derived from the number of distinct values in the image. GT sharpening (USM) and the training
pair pool are training-loop matters and not part of this operator.

Replay: :meth:`~sr_cli.degradations.pipeline.DegradationPipeline.replay` reapplies
the blurs and resizes exactly (same kernels, sizes, modes, order) and skips noise and JPEG.
That linear operator maps SR to the *noise-free, uncompressed* LQ; with Real-ESRGAN's heavy
noise and JPEG the LQ matches it only loosely, so weight a consistency loss accordingly
(``loss=downsample`` logs which stages its replay skips).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sr_cli.degradations.blur import KERNEL_TYPES, Blur
from sr_cli.degradations.jpeg import JPEG
from sr_cli.degradations.noise import Noise
from sr_cli.degradations.pipeline import DegradationPipeline, Sequence, Shuffle
from sr_cli.degradations.resize import Resize

_KERNELS = tuple(t for t in KERNEL_TYPES if t != "motion")
_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
_SIZES = (7, 9, 11, 13, 15, 17, 19, 21)
_MODES = ("area", "bilinear", "bicubic")


class RealESRGANDegradation(DegradationPipeline):
    """Real-ESRGAN's high-order degradation with its published defaults (see the module doc).

    Args:
        scale: integer factor between HR and LQ.
        kernel_size, kernel_sizes, kernel_list, kernel_prob: blur kernels of both orders.
        sinc_prob, sinc_prob2, final_sinc_prob: sinc kernel probabilities.
        blur_sigma, blur_sigma2, betag_range, betap_range: kernel shape ranges.
        second_blur_prob: probability of the second blur.
        resize_prob, resize_range, resize_prob2, resize_range2: random resizes
            (``[up, down, keep]`` probabilities and ``[min, max]`` factors).
        resize_modes: interpolation modes drawn uniformly.
        gaussian_noise_prob, noise_range, poisson_scale_range, gray_noise_prob (and ``*2``):
            noise of each order.
        jpeg_range, jpeg_range2: JPEG qualities.
        antialias: antialias the random downscales (Real-ESRGAN did not).
        quantize: round the LQ to 8 bits (Real-ESRGAN does).
    """

    def __init__(
        self,
        scale: int,
        kernel_size: int = 21,
        kernel_sizes: Iterable[int] = _SIZES,
        kernel_list: Iterable[str] = _KERNELS,
        kernel_prob: Iterable[float] = _KERNEL_PROB,
        sinc_prob: float = 0.1,
        blur_sigma: Iterable[float] = (0.2, 3.0),
        betag_range: Iterable[float] = (0.5, 4.0),
        betap_range: Iterable[float] = (1.0, 2.0),
        resize_prob: Iterable[float] = (0.2, 0.7, 0.1),
        resize_range: Iterable[float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: Iterable[float] = (1.0, 30.0),
        poisson_scale_range: Iterable[float] = (0.05, 3.0),
        gray_noise_prob: float = 0.4,
        jpeg_range: Iterable[float] = (30.0, 95.0),
        second_blur_prob: float = 0.8,
        sinc_prob2: float = 0.1,
        blur_sigma2: Iterable[float] = (0.2, 1.5),
        resize_prob2: Iterable[float] = (0.3, 0.4, 0.3),
        resize_range2: Iterable[float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: Iterable[float] = (1.0, 25.0),
        poisson_scale_range2: Iterable[float] = (0.05, 2.5),
        gray_noise_prob2: float = 0.4,
        jpeg_range2: Iterable[float] = (30.0, 95.0),
        final_sinc_prob: float = 0.8,
        resize_modes: Iterable[str] = _MODES,
        antialias: bool = False,
        quantize: bool = True,
    ) -> None:
        kernel_sizes, kernel_list = list(kernel_sizes), list(kernel_list)
        kernel_prob, resize_modes = list(kernel_prob), list(resize_modes)

        def blur(sigma, sinc, prob) -> Blur:
            return Blur(
                kernel_size=kernel_size,
                kernel_sizes=kernel_sizes,
                kernel_list=kernel_list,
                kernel_prob=kernel_prob,
                sigma=sigma,
                betag=betag_range,
                betap=betap_range,
                sinc_prob=sinc,
                prob=prob,
            )

        stages = [
            # First order (resize relative to HR).
            blur(blur_sigma, sinc_prob, 1.0),
            Resize("input", resize_range, resize_prob, resize_modes, antialias=antialias),
            Noise(gaussian_noise_prob, noise_range, poisson_scale_range, gray_noise_prob),
            JPEG(jpeg_range),
            # Second order (resize relative to the LQ size).
            blur(blur_sigma2, sinc_prob2, second_blur_prob),
            Resize("lq", resize_range2, resize_prob2, resize_modes, antialias=antialias),
            Noise(gaussian_noise_prob2, noise_range2, poisson_scale_range2, gray_noise_prob2),
            # Final step: [resize to LQ + sinc] and JPEG, in random order.
            Shuffle(
                [
                    Sequence(
                        [
                            Resize("lq", modes=resize_modes, antialias=antialias),
                            Blur(
                                kernel_size=kernel_size,
                                kernel_sizes=kernel_sizes,
                                kernel_list=[],
                                sinc_prob=1.0,
                                sinc_cutoff=(math.pi / 3, math.pi),
                                prob=final_sinc_prob,
                            ),
                        ]
                    ),
                    JPEG(jpeg_range2),
                ]
            ),
        ]
        super().__init__(scale, stages, final_resize=None, quantize=quantize)
