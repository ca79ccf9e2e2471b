"""Differentiable, batched HR -> LQ degradation operators.

Every degradation is a :class:`DegradationPipeline` of stages with three verbs: ``sample``
(draw per-image parameters), ``forward`` (degrade) and ``replay`` (the deterministic,
differentiable part, with the same parameters; see :mod:`.base`). Catalogue
(``conf/degradation/<name>.yaml``), its stages, and what ``replay(sr, params)`` reapplies:

=================  ==========================  ============================  ======================
config             class                       stages                        replay skips
=================  ==========================  ============================  ======================
bicubic            ResizeDownsample            Resize (MATLAB bicubic)       --
bilinear/area/...  ResizeDownsample            Resize                        --
blur               BlurDownsample              Blur, Resize                  --
noise              NoisyDownsample             Resize, Noise                 noise
jpeg               JPEGDownsample              Resize, JPEG                  JPEG
quantization       QuantizedDownsample         Resize, Quantize              quantization
pipeline_example   DegradationPipeline         Blur, Resize, Shuffle(...)    noise, JPEG
bsrgan_shuffle     BSRGANDegradation           Shuffle(...), Resize, JPEG    noise, JPEG
realesrgan         RealESRGANDegradation       two orders + Shuffle          noise, JPEG
=================  ==========================  ============================  ======================

None refuses; no replay clamps or rounds to 8 bits. ``not_replayed()`` lists the skipped stages.
Paired-data augmentation (flips, mixup, CutBlur) is :mod:`sr_cli.data.augment`. (The function
``resize`` is not re-exported here: it would shadow the :mod:`.resize` module.)
"""

from sr_cli.degradations.base import Degradation, DegradationNotInvertible, Stage
from sr_cli.degradations.blur import Blur, BlurDownsample
from sr_cli.degradations.bsrgan import BSRGANDegradation
from sr_cli.degradations.jpeg import JPEG, JPEGDownsample
from sr_cli.degradations.noise import Noise, NoisyDownsample
from sr_cli.degradations.pipeline import DegradationPipeline, ResizeDownsample, Sequence, Shuffle
from sr_cli.degradations.quantization import Quantize, QuantizedDownsample
from sr_cli.degradations.realesrgan import RealESRGANDegradation
from sr_cli.degradations.resize import Resize, imresize

__all__ = [
    "BSRGANDegradation",
    "Blur",
    "BlurDownsample",
    "Degradation",
    "DegradationNotInvertible",
    "DegradationPipeline",
    "JPEG",
    "JPEGDownsample",
    "Noise",
    "NoisyDownsample",
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
