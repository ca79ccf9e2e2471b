"""Discriminators for adversarial SR training.

Every discriminator's ``forward(x, return_features=False)`` returns the logits, or
``(logits, features)`` with the list of intermediate activations when ``return_features`` is
true. The feature-matching and learned-perceptual losses use those features.

* :class:`VGGStyleDiscriminator`: the SRGAN/ESRGAN discriminator (Ledig et al., CVPR 2017;
  Wang et al., ECCV-W 2018): five stages of (3x3 conv, 4x4 stride-2 conv) with batch norm and
  LeakyReLU 0.2, then two linear layers. It needs a fixed input size (128 in ESRGAN); here any
  multiple of 32 is accepted and the first linear layer is sized to it.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_cli.errors import ConfigError


class VGGStyleDiscriminator(nn.Module):
    """The ESRGAN VGG-style discriminator (``VGG128`` for ``input_size=128``).

    Args:
        input_size: side of the square HR patch it judges; a multiple of 32. Usually
            ``${data.patch_size}``.
        num_in_ch: image channels.
        num_feat: channels of the first stage (64 in ESRGAN), doubled per stage up to 8x.

    Shape:
        ``(B, C, input_size, input_size) -> (B, 1)``.
    """

    def __init__(self, input_size: int = 128, num_in_ch: int = 3, num_feat: int = 64) -> None:
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ConfigError(
                f"VGGStyleDiscriminator needs an input size that is a multiple of 32 (it halves the "
                f"patch five times); got {input_size}. Set data.patch_size to 32, 64, 96, 128, ..."
            )
        self.input_size = input_size
        chans = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8]
        stages = []
        c_in = num_in_ch
        for i, c in enumerate(chans):
            first_bn = [] if i == 0 else [nn.BatchNorm2d(c, affine=True)]
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, 3, 1, 1, bias=i == 0),
                    *first_bn,
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(c, c, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(c, affine=True),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            c_in = c
        self.stages = nn.ModuleList(stages)
        side = input_size // 32
        self.linear1 = nn.Linear(chans[-1] * side * side, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor, return_features: bool = False):
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ConfigError(
                f"VGGStyleDiscriminator was built for {self.input_size}x{self.input_size} patches but got "
                f"{x.shape[-2]}x{x.shape[-1]}. It only judges fixed-size patches: keep the "
                "discriminator's input_size equal to data.patch_size, or pick a fully convolutional "
                "discriminator."
            )
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        logits = self.linear2(self.lrelu(self.linear1(x.flatten(1))))
        return (logits, feats) if return_features else logits
