"""Loss terms, one family per file, each with a functional form and a module term.

See :mod:`sr_cli.losses.base` for the composition contract.
"""

from sr_cli.losses.adversarial import AdversarialLoss
from sr_cli.losses.base import LossInputs, LossOutput, LossTerm
from sr_cli.losses.downsample import DownsampleConsistencyLoss
from sr_cli.losses.pixel import CharbonnierLoss, L1Loss, MSELoss, SmoothL1Loss

__all__ = [
    "AdversarialLoss",
    "CharbonnierLoss",
    "DownsampleConsistencyLoss",
    "L1Loss",
    "LossInputs",
    "LossOutput",
    "LossTerm",
    "MSELoss",
    "SmoothL1Loss",
]
