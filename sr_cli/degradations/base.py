"""The degradation interface shared by the data pipeline and the consistency losses.

A degradation maps a batch of HR images in ``[0, 1]`` to LQ images, on the tensor's device.
It works in two steps so that a loss can replay it exactly:

1. :meth:`Degradation.sample` draws the random parameters of every sample in the batch
   (kernel widths, noise levels, ...) from a ``torch.Generator``, and returns them as a dict
   of tensors whose first dimension is the batch.
2. :meth:`Degradation.forward` applies the degradation with those parameters.

:meth:`Degradation.consistency` applies only the deterministic, differentiable part (blur and
resize) with the *same* parameters. The downsample-consistency loss compares
``consistency(SR, params)`` with the LQ. Operators whose deterministic part cannot be
separated raise :class:`DegradationNotInvertible` with an explanation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError

Params = dict[str, Tensor]


class DegradationNotInvertible(ConfigError):
    """The degradation has no deterministic part that a consistency loss could reuse."""


class Degradation(nn.Module):
    """Base class: HR ``(B, C, H, W)`` in ``[0, 1]`` -> LQ ``(B, C, H/scale, W/scale)``."""

    #: Integer downscaling factor between HR and LQ.
    scale: int
    #: True when :meth:`sample` draws random parameters.
    stochastic: bool = False

    def __init__(self, scale: int) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ConfigError(
                f"degradation.scale must be a positive integer, got {scale!r}. "
                "Set it with `scale=2`, `scale=3` or `scale=4`."
            )
        self.scale = int(scale)

    def sample(self, hr: Tensor, generator: torch.Generator | None = None) -> Params:
        """Draw the per-sample random parameters for a batch. Deterministic operators return ``{}``."""
        return {}

    def forward(self, hr: Tensor, params: Params | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def consistency(self, sr: Tensor, params: Params | None = None) -> Tensor:
        """The deterministic, differentiable part of the degradation, with the given parameters."""
        raise DegradationNotInvertible(
            f"{type(self).__name__} has no deterministic part to compare SR with LQ in LQ space; "
            "the downsample-consistency loss cannot be used with this degradation."
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
