"""VDSR: very deep convolutional network for super-resolution.

Kim et al., "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016
(arXiv:1511.04587). The LQ image is upscaled with bicubic interpolation and a 20-layer stack of
3x3 convolutions with 64 filters and ReLU predicts the residual to it (global residual
learning). The paper model works on the Y channel and has 665K parameters (664,704 weights);
it has no bias terms here, as in the published count.

The pre-upsampling uses the project's MATLAB-style bicubic
(:func:`sr_cli.degradations.resize.imresize`). Keys: ``conv_first``, ``body.{2i}``,
``conv_last``.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_cli.degradations.resize import imresize
from sr_cli.errors import ConfigError
from sr_cli.models.common import check_scale, resolve_preset

PRESETS = {
    "paper": dict(num_feat=64, num_layers=20, bias=False),
    "small": dict(num_feat=16, num_layers=5, bias=False),
}


class VDSR(nn.Module):
    """VDSR generator (bicubic pre-upsampling + deep residual conv stack).

    Args:
        scale: 2, 3 or 4 (one model in the paper serves all three).
        num_in_ch, num_out_ch: image channels; must be equal (global residual).
        num_feat: filters per layer (64).
        num_layers: total conv layers including first and last (20).
        bias: whether convs have biases.

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)``.

    Example:
        >>> net = VDSR(scale=2, num_feat=8, num_layers=3)
        >>> net(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 3, 10, 14])
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_layers: int = 20,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.scale = check_scale("VDSR", scale, (2, 3, 4))
        if num_layers < 3:
            raise ConfigError(f"VDSR needs num_layers >= 3, got {num_layers}.")
        if num_in_ch != num_out_ch:
            raise ConfigError(
                "VDSR predicts a residual to its input: num_in_ch must equal num_out_ch."
            )
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=bias)
        body: list[nn.Module] = []
        for _ in range(num_layers - 2):
            body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=bias), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        up = imresize(x, scale=self.scale)
        return up + self.conv_last(self.body(self.relu(self.conv_first(up))))


def vdsr(scale: int = 4, preset: str = "paper", **overrides) -> VDSR:
    """VDSR from a preset (``paper``: 20 layers x 64 filters; ``small``: 5 x 16 for CPU)."""
    return VDSR(scale=scale, **resolve_preset("VDSR", PRESETS, preset, overrides))
