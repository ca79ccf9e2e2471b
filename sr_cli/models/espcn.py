"""ESPCN: efficient sub-pixel convolutional network.

Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", CVPR 2016 (arXiv:1609.05158). All convolutions run at LQ
resolution; the last one outputs ``C * r^2`` channels that a periodic shuffle (pixel shuffle)
rearranges into the HR image. The paper uses ``(f1, n1) = (5, 64)``, ``(f2, n2) = (3, 32)``,
``f3 = 3`` and tanh activations.

``upsampler`` swaps the sub-pixel layer for ``nearest+conv`` or a ``transposed`` conv, for
ablations; the paper's layer is ``pixelshuffle``. Keys: ``conv1``, ``conv2``, ``upsample.*``.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import check_scale, resolve_preset
from sr_cli.models.layers import image_upsampler

PRESETS = {
    "paper": dict(n1=64, n2=32, f1=5, f2=3, f3=3, act="tanh"),
    "small": dict(n1=16, n2=8, f1=5, f2=3, f3=3, act="tanh"),
}

_ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ESPCN(nn.Module):
    """ESPCN generator.

    Args:
        scale: 2, 3, 4 or 8.
        num_in_ch, num_out_ch: image channels (the paper uses Y, 1).
        n1, n2: filters of the two hidden layers (64, 32).
        f1, f2, f3: kernel sizes (5, 3, 3).
        act: hidden activation, ``tanh`` (paper) or ``relu``.
        upsampler: ``pixelshuffle`` (paper), ``nearest+conv`` or ``transposed``.

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = ESPCN(scale=3, n1=8, n2=4)
        >>> net(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 3, 15, 21])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        n1: int = 64,
        n2: int = 32,
        f1: int = 5,
        f2: int = 3,
        f3: int = 3,
        act: str = "tanh",
        upsampler: str = "pixelshuffle",
    ) -> None:
        super().__init__()
        self.scale = check_scale("ESPCN", scale, (2, 3, 4, 8))
        if act not in _ACTS:
            raise ConfigError(f"ESPCN act must be one of {', '.join(_ACTS)}, got {act!r}.")
        self.conv1 = nn.Conv2d(num_in_ch, n1, f1, 1, f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, 1, f2 // 2)
        self.act = _ACTS[act]()
        self.upsample = image_upsampler(n2, num_out_ch, self.scale, upsampler, f3)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(self.act(self.conv2(self.act(self.conv1(x)))))


def espcn(scale: int = 4, preset: str = "paper", **overrides) -> ESPCN:
    """ESPCN from a preset (``paper``: 5-3-3 with 64/32 filters and tanh; ``small``)."""
    return ESPCN(scale=scale, **resolve_preset("ESPCN", PRESETS, preset, overrides))
