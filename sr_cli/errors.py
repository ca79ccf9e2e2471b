"""User-facing errors.

Every error a user can cause (a bad option, a bad file, a diverged loss) is raised as a
subclass of :class:`SrCliError`. The console entry points print its message, without a
traceback, and exit with status 2. The message always names the file or option at fault
and how to fix it.
"""

from __future__ import annotations


class SrCliError(Exception):
    """Base class of errors whose message is meant for the user."""


class ConfigError(SrCliError, ValueError):
    """An option has a value that cannot work (wrong scale, patch size, ...)."""


class DataError(SrCliError, ValueError):
    """An input image or folder is missing, corrupt, or unsuitable."""


class CheckpointError(SrCliError, ValueError):
    """A checkpoint or weight file is missing, unsafe or does not fit the model."""


class WeightsUnavailableError(SrCliError, FileNotFoundError):
    """Pretrained weights (VGG, LPIPS, ...) are not in the local cache and cannot be downloaded."""


class NonFiniteLossError(SrCliError, FloatingPointError):
    """A loss term became NaN or Inf during training."""
