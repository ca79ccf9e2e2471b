"""Loss terms, one family per file, each with a functional form and a module term.

See :mod:`sr_cli.losses.base` for the composition contract.
"""

from sr_cli.losses.adversarial import AdversarialLoss, FeatureMatchingLoss
from sr_cli.losses.base import LossInputs, LossOutput, LossTerm
from sr_cli.losses.downsample import DownsampleConsistencyLoss
from sr_cli.losses.frequency import FFTLoss, FocalFrequencyLoss
from sr_cli.losses.perceptual import PerceptualLoss, StyleLoss, VGGFeatureExtractor
from sr_cli.losses.pixel import CharbonnierLoss, L1Loss, MSELoss, SmoothL1Loss
from sr_cli.losses.tv import TVLoss

__all__ = [
    "AdversarialLoss",
    "CharbonnierLoss",
    "DownsampleConsistencyLoss",
    "FFTLoss",
    "FeatureMatchingLoss",
    "FocalFrequencyLoss",
    "L1Loss",
    "LossInputs",
    "LossOutput",
    "LossTerm",
    "MSELoss",
    "PerceptualLoss",
    "SmoothL1Loss",
    "StyleLoss",
    "TVLoss",
    "VGGFeatureExtractor",
]
