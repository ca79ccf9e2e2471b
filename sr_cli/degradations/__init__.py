"""Differentiable, batched HR -> LQ degradation operators."""

from sr_cli.degradations.base import Degradation, DegradationNotInvertible
from sr_cli.degradations.resize import BicubicDownsample, imresize

__all__ = ["BicubicDownsample", "Degradation", "DegradationNotInvertible", "imresize"]
