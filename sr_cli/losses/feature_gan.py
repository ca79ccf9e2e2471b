"""A feature-level adversarial term: SRFeat's feature discriminator (Park, Son, Cho, Kim and
Lee, "SRFeat: Single Image Super-Resolution with Feature Discrimination", ECCV 2018).

Next to a discriminator on pixels (``gan``), SRFeat trains a second one on VGG19 feature maps of
SR and GT: the image discriminator drives high-frequency texture, the feature discriminator the
structure that the VGG features encode. ``loss=l1+gan+feature_gan`` trains both, each with its
own discriminator and its own optimizer (``optim.discriminator``, one instance per term).

The features come from torchvision's VGG19 in the torch hub cache (``vgg19-dcbb9e9d.pth``, as
for the perceptual loss; nothing is downloaded), frozen, ImageNet-normalised, by default
``conv5_4`` before its ReLU (SRFeat: the last convolution of VGG19, as ESRGAN's perceptual loss).
Every GAN type of :mod:`sr_cli.losses.adversarial` applies, with its penalties computed on the
feature maps.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.losses.adversarial import AdversarialLoss
from sr_cli.losses.base import LossInputs
from sr_cli.losses.perceptual import VGGFeatureExtractor


def vgg19_channels(layer: str) -> int:
    """Channels of a VGG19 layer (``conv5_4`` -> 512)."""
    block = int(layer.replace("conv", "").replace("relu", "").replace("pool", "").split("_")[0])
    return (64, 128, 256, 512, 512)[block - 1]


class FeatureAdversarialLoss(AdversarialLoss):
    """The adversarial term of :class:`AdversarialLoss` played on VGG19 feature maps.

    Args:
        discriminator: judges ``(B, C, H/16, W/16)`` maps for ``conv5_4`` (e.g.
            :class:`~sr_cli.models.discriminators.FeatureDiscriminator` with ``in_channels`` =
            the layer's channels).
        gan_type, weight, start_step, d_start_step, gp_weight, r1_weight: as for
            :class:`~sr_cli.losses.adversarial.AdversarialLoss`.
        layer: the VGG19 layer (``conv5_4``, before the ReLU; ``relu5_4`` after it, ...).
        weights: ``imagenet`` (cached torchvision weights) or ``random`` (tests only).

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, 3, H, W)`` in ``[0, 1]``, ``H, W`` at least 16 for
        block-5 layers.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        gan_type: str = "vanilla",
        weight: float = 1e-3,
        start_step: int = 0,
        d_start_step: int = 0,
        gp_weight: float = 10.0,
        r1_weight: float = 0.0,
        layer: str = "conv5_4",
        weights: str = "imagenet",
    ) -> None:
        super().__init__(
            discriminator, gan_type, weight, start_step, d_start_step, gp_weight, r1_weight
        )
        self.layer = str(layer)
        self.extractor = VGGFeatureExtractor([self.layer], weights=weights)
        expected = getattr(discriminator, "in_channels", None)
        if expected is not None and int(expected) != vgg19_channels(self.layer):
            raise ConfigError(
                f"feature_gan: the discriminator takes {expected} channels but VGG19 {self.layer} "
                f"has {vgg19_channels(self.layer)}; set "
                f"loss.feature_gan.discriminator.in_channels={vgg19_channels(self.layer)}"
            )

    def features(self, x: Tensor) -> Tensor:
        """The VGG19 map of ``x`` at :attr:`layer`."""
        return self.extractor(x)[self.layer]

    def _on_features(self, inputs: LossInputs, sr: Tensor) -> LossInputs:
        with torch.no_grad():
            gt = self.features(inputs.gt)
        return replace(inputs, sr=sr, gt=gt, sr_levels=[sr])

    def compute(self, inputs: LossInputs) -> Tensor:
        return super().compute(self._on_features(inputs, self.features(inputs.sr)))

    def discriminator_loss(self, inputs: LossInputs) -> Tensor:
        with torch.no_grad():
            sr = self.features(inputs.sr.detach())
        return super().discriminator_loss(self._on_features(inputs, sr))

    def extra_repr(self) -> str:
        return f"layer={self.layer}, " + super().extra_repr()
