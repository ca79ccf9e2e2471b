"""SRCNN: the first convolutional network for single-image super-resolution.

Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016
(arXiv:1501.00092; ECCV 2014). The LQ image is first upscaled with bicubic interpolation, then
three convolutions do patch extraction (``f1 x f1``, ``n1`` filters), non-linear mapping
(``f2 x f2``, ``n2`` filters) and reconstruction (``f3 x f3``). The paper's best setting is
9-5-5 with 64/32 filters (57,184 weights on the Y channel).

The pre-upsampling uses the project's MATLAB-style bicubic
(:func:`sr_cli.degradations.resize.imresize`), the operator the benchmark LR images were made
with, so the network sees the same interpolation as in the paper. Convolutions are zero-padded
('same'), so the output is exactly ``scale`` times the input. Keys: ``conv1``, ``conv2``,
``conv3``.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_cli.degradations.resize import imresize
from sr_cli.models.common import check_scale, resolve_preset

PRESETS = {
    "paper": dict(n1=64, n2=32, f1=9, f2=5, f3=5),
    "basic": dict(n1=64, n2=32, f1=9, f2=1, f3=5),
    "small": dict(n1=16, n2=8, f1=5, f2=1, f3=3),
}


class SRCNN(nn.Module):
    """SRCNN generator (bicubic pre-upsampling + three convolutions).

    Args:
        scale: 2, 3 or 4.
        num_in_ch, num_out_ch: image channels (the paper uses the Y channel, 1).
        n1, n2: filters of the first two layers (64, 32).
        f1, f2, f3: kernel sizes (9, 5, 5).

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = SRCNN(scale=3, n1=8, n2=4)
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
        f1: int = 9,
        f2: int = 5,
        f3: int = 5,
    ) -> None:
        super().__init__()
        self.scale = check_scale("SRCNN", scale, (2, 3, 4))
        self.conv1 = nn.Conv2d(num_in_ch, n1, f1, 1, f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, 1, f2 // 2)
        self.conv3 = nn.Conv2d(n2, num_out_ch, f3, 1, f3 // 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = imresize(x, scale=self.scale)
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


def srcnn(scale: int = 4, preset: str = "paper", **overrides) -> SRCNN:
    """SRCNN from a preset (``paper``: 9-5-5 with 64/32 filters; ``basic``: 9-1-5; ``small``)."""
    return SRCNN(scale=scale, **resolve_preset("SRCNN", PRESETS, preset, overrides))
