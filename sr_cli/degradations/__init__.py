"""Differentiable, batched HR -> LQ degradation operators.

Catalogue (``conf/degradation/<name>.yaml``) and what ``consistency(sr, params)`` replays:

=================  ==============================  =========================================
config             class                           consistency
=================  ==============================  =========================================
bicubic            BicubicDownsample               the same MATLAB bicubic resize
bilinear/area/...  ResizeDownsample                the same resize
blur               BlurDownsample                  same kernels + same resize (exact)
noise              NoisyDownsample                 the resize (noise is the random part)
jpeg               JPEGDownsample                  the resize (JPEG treated as random part)
quantization       QuantizedDownsample             the resize
pipeline_example   DegradationPipeline             blur/resize stages, in order (exact)
bsrgan_shuffle     BSRGANDegradation               blurs/resizes in the recorded order
realesrgan         RealESRGANDegradation           blurs/resizes of both orders + final sinc
=================  ==============================  =========================================

None refuses; every replay skips noise, JPEG and rounding, and does not clamp.
:class:`PairedAugment` (flips, rotations, mixup, CutBlur) is in :mod:`.augment`.
"""

from sr_cli.degradations.augment import PairedAugment
from sr_cli.degradations.base import Degradation, DegradationNotInvertible
from sr_cli.degradations.blur import Blur, BlurDownsample
from sr_cli.degradations.bsrgan import BSRGANDegradation
from sr_cli.degradations.jpeg import JPEG, JPEGDownsample
from sr_cli.degradations.noise import Noise, NoisyDownsample
from sr_cli.degradations.pipeline import DegradationPipeline, Resize, Sequence, Shuffle, Stage
from sr_cli.degradations.quantization import Quantize, QuantizedDownsample
from sr_cli.degradations.realesrgan import RealESRGANDegradation
from sr_cli.degradations.resample import ResizeDownsample
from sr_cli.degradations.resize import BicubicDownsample, imresize

__all__ = [
    "BSRGANDegradation",
    "BicubicDownsample",
    "Blur",
    "BlurDownsample",
    "Degradation",
    "DegradationNotInvertible",
    "DegradationPipeline",
    "JPEG",
    "JPEGDownsample",
    "Noise",
    "NoisyDownsample",
    "PairedAugment",
    "QuantizedDownsample",
    "Quantize",
    "RealESRGANDegradation",
    "Resize",
    "ResizeDownsample",
    "Sequence",
    "Shuffle",
    "Stage",
    "imresize",
]
