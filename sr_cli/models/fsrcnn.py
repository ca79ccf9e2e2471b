"""FSRCNN: fast SRCNN with an hourglass shape and a deconvolution at the end.

Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016
(arXiv:1608.00367). Five parts, all at LQ resolution but the last: feature extraction
(5x5, ``d`` filters), shrinking (1x1, ``s``), ``m`` mapping layers (3x3, ``s``), expanding
(1x1, ``d``) and a 9x9 deconvolution with stride ``scale``; PReLU after every conv. The paper's
FSRCNN(56, 12, 4) has 12,464 weights on the Y channel.

``upsampler`` swaps the deconvolution for ``pixelshuffle`` or ``nearest+conv``; the paper's
layer is ``transposed``. Keys: ``feature``, ``shrink``, ``mapping``, ``expand``, ``upsample``.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_cli.models.common import check_scale, resolve_preset
from sr_cli.models.layers import image_upsampler

PRESETS = {
    "paper": dict(d=56, s=12, m=4),
    "fsrcnn_s": dict(d=32, s=5, m=1),
    "small": dict(d=16, s=8, m=2),
}


def _conv_prelu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, 1, k // 2), nn.PReLU(c_out))


class FSRCNN(nn.Module):
    """FSRCNN generator.

    Args:
        scale: 2, 3 or 4.
        num_in_ch, num_out_ch: image channels (the paper uses Y, 1).
        d: LR feature dimension (56).
        s: shrunk dimension (12).
        m: number of mapping layers (4).
        upsampler: ``transposed`` (paper, 9x9 deconvolution), ``pixelshuffle`` or
            ``nearest+conv``.

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = FSRCNN(scale=3, d=8, s=4, m=1)
        >>> net(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 3, 15, 21])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        d: int = 56,
        s: int = 12,
        m: int = 4,
        upsampler: str = "transposed",
    ) -> None:
        super().__init__()
        self.scale = check_scale("FSRCNN", scale, (2, 3, 4))
        self.feature = _conv_prelu(num_in_ch, d, 5)
        self.shrink = _conv_prelu(d, s, 1)
        self.mapping = nn.Sequential(*[_conv_prelu(s, s, 3) for _ in range(m)])
        self.expand = _conv_prelu(s, d, 1)
        self.upsample = image_upsampler(d, num_out_ch, self.scale, upsampler, 9)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0.25)
                nn.init.zeros_(mod.bias)
        for mod in self.upsample.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(mod.weight, std=0.001)
                nn.init.zeros_(mod.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(self.expand(self.mapping(self.shrink(self.feature(x)))))


def fsrcnn(scale: int = 4, preset: str = "paper", **overrides) -> FSRCNN:
    """FSRCNN from a preset (``paper``: (56, 12, 4); ``fsrcnn_s``: (32, 5, 1); ``small``)."""
    return FSRCNN(scale=scale, **resolve_preset("FSRCNN", PRESETS, preset, overrides))
