"""Discriminators for adversarial SR training.

Every discriminator's ``forward(x, return_features=False)`` returns the logits, or
``(logits, features)`` with the list of intermediate activations when ``return_features`` is
true. The feature-matching and learned-perceptual losses use those features.

* :class:`VGGStyleDiscriminator`: the SRGAN/ESRGAN discriminator (Ledig et al., CVPR 2017;
  Wang et al., ECCV-W 2018): five stages of (3x3 conv, 4x4 stride-2 conv) with batch norm and
  LeakyReLU 0.2, then two linear layers. It needs a fixed input size (128 in ESRGAN); here any
  multiple of 32 is accepted and the first linear layer is sized to it.
* :class:`UNetDiscriminatorSN`: the Real-ESRGAN discriminator (Wang et al., "Real-ESRGAN:
  Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCV-W 2021,
  arXiv:2107.10833): a U-Net with spectral normalisation (Miyato et al., ICLR 2018) and skip
  connections that gives a realness logit per pixel. Keys ``conv0`` ... ``conv9`` as in the
  published checkpoints.
* :class:`PatchGANDiscriminator`: the pix2pix PatchGAN (Isola et al., "Image-to-Image
  Translation with Conditional Adversarial Networks", CVPR 2017, arXiv:1611.07004); with
  ``n_layers=3`` every logit sees a 70x70 patch. Keys ``model.{i}`` as in the authors' release.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral norm.

    Three stride-2 4x4 convs go down (64 -> 128 -> 256 -> 512 channels), three bilinear x2
    upsamplings and 3x3 convs come back up, adding the encoder features of the same size (skip
    connections), then two 3x3 convs and a 3x3 conv to one logit per pixel. Every conv but the
    first and the last is spectrally normalised (``torch.nn.utils.spectral_norm``, so keys are
    ``convN.weight_orig``, ``convN.weight_u``, ``convN.weight_v`` as in Real-ESRGAN's files).

    Args:
        num_in_ch: image channels.
        num_feat: channels of the first conv (64).
        skip_connection: add encoder features on the way up (True in Real-ESRGAN).

    Shape:
        ``(B, C, H, W) -> (B, 1, H, W)``, any ``H``, ``W`` (odd sizes are handled by resizing
        the decoder to the skip's size).
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True
    ) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def _up(self, conv: nn.Module, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.lrelu(conv(x))
        return x + skip if self.skip_connection else x

    def forward(self, x: Tensor, return_features: bool = False):
        x0 = self.lrelu(self.conv0(x))
        x1 = self.lrelu(self.conv1(x0))
        x2 = self.lrelu(self.conv2(x1))
        x3 = self.lrelu(self.conv3(x2))
        x4 = self._up(self.conv4, x3, x2)
        x5 = self._up(self.conv5, x4, x1)
        x6 = self._up(self.conv6, x5, x0)
        x7 = self.lrelu(self.conv7(x6))
        x8 = self.lrelu(self.conv8(x7))
        logits = self.conv9(x8)
        feats = [x0, x1, x2, x3, x4, x5, x6, x7, x8]
        return (logits, feats) if return_features else logits


class PatchGANDiscriminator(nn.Module):
    """pix2pix PatchGAN (``NLayerDiscriminator``): a fully convolutional patch classifier.

    A 4x4 stride-2 conv with LeakyReLU 0.2, then ``n_layers - 1`` stride-2 and one stride-1
    4x4 convs with normalisation, doubling the channels up to ``8 * num_feat``, then a 4x4 conv
    to one logit per patch. ``n_layers=3`` gives 70x70 receptive fields (the paper's choice).

    Args:
        num_in_ch: image channels (6 for a conditional pix2pix D that also sees the input).
        num_feat: channels of the first conv (64).
        n_layers: number of stride-2 convs (3).
        norm: ``batch`` (pix2pix), ``instance`` (CycleGAN) or ``none``.

    Shape:
        ``(B, C, H, W) -> (B, 1, H', W')`` with ``H' ~ H / 2^n_layers - 2`` (needs ``H, W >= 2^n_layers * 2 + 6``
        roughly; 32 is enough for ``n_layers=3``).
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        if norm not in ("batch", "instance", "none"):
            raise ConfigError(
                f"PatchGANDiscriminator norm must be batch, instance or none, got {norm!r}."
            )
        if n_layers < 1:
            raise ConfigError(f"PatchGANDiscriminator needs n_layers >= 1, got {n_layers}.")
        use_bias = norm != "batch"

        def norm_layer(c: int) -> list[nn.Module]:
            if norm == "batch":
                return [nn.BatchNorm2d(c)]
            if norm == "instance":
                return [nn.InstanceNorm2d(c)]
            return []

        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(num_feat * prev, num_feat * mult, 4, stride, 1, bias=use_bias),
                *norm_layer(num_feat * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(num_feat * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False):
        feats = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return (x, feats) if return_features else x


class MultiScalePatchGANSN(nn.Module):
    """Multi-scale PatchGAN with spectral normalisation (pix2pixHD, Wang et al., CVPR 2018;
    spectral norm: Miyato et al., ICLR 2018, as in Real-ESRGAN's discriminator).

    ``num_scales`` PatchGANs (4x4 convs, LeakyReLU 0.2, no normalisation layer, every conv
    spectrally normalised) see the image at full, 1/2, 1/4... resolution (3x3 average pooling,
    stride 2, as pix2pixHD). The coarse ones judge global structure, the fine ones texture.

    The logits of every scale are flattened and concatenated, ``(B, N)``, so every elementwise
    GAN objective of the ``gan`` term applies unchanged (finer scales have more patches, hence
    more weight in the mean). ``return_features=True`` also returns every scale's LeakyReLU
    activations (for ``feature_matching``).

    Args:
        num_in_ch: image channels.
        num_feat: channels of each PatchGAN's first conv (64).
        n_layers: stride-2 convs per PatchGAN (3: 70x70 receptive field at each scale).
        num_scales: number of scales (3 in pix2pixHD).

    Shape:
        ``(B, C, H, W) -> (B, N)``. A coarser scale whose image would be smaller than its
        PatchGAN's minimum (``3 * 2^n_layers`` pixels, 24 for ``n_layers=3``) is skipped, so
        small training patches still work (with fewer scales).
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, num_scales: int = 3
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ConfigError(f"MultiScalePatchGANSN needs num_scales >= 1, got {num_scales}.")
        from torch.nn.utils.parametrizations import spectral_norm

        self.discriminators = nn.ModuleList()
        for _ in range(num_scales):
            d = PatchGANDiscriminator(num_in_ch, num_feat, n_layers, norm="none")
            for i, layer in enumerate(d.model):
                if isinstance(layer, nn.Conv2d):
                    d.model[i] = spectral_norm(layer)
            self.discriminators.append(d)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.min_size = 3 * 2**n_layers

    def forward(self, x: Tensor, return_features: bool = False):
        logits, feats = [], []
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.downsample(x)
                if min(x.shape[-2:]) < self.min_size:
                    break
            out, f = d(x, return_features=True)
            logits.append(out.flatten(1))
            feats += f
        out = torch.cat(logits, dim=1)
        return (out, feats) if return_features else out


class FeatureDiscriminator(nn.Module):
    """A discriminator on feature maps rather than pixels: SRFeat's feature discriminator (Park
    et al., ECCV 2018), which judges VGG19 ``conv5_4`` maps (512 channels, 1/16 of the image
    size) so that the generator is pushed towards realistic *structure* next to the image
    discriminator's texture.

    Conv 3x3 + LeakyReLU(0.2), then ``num_blocks`` pairs of a 3x3 conv (stride 1) and a 3x3
    conv (stride 2) doubling the width, global average pooling and a linear logit; no
    normalization, so it suits every GAN type, WGAN-GP included. Any map of at least 1x1 works.

    Args:
        in_channels: channels of the feature maps (512 for VGG19 ``conv5_4``).
        num_feat: width of the first convolution.
        num_blocks: number of stride-2 stages.

    Shape:
        ``(B, in_channels, h, w) -> (B, 1)``; ``return_features=True`` also returns the
        activation after every stage.
    """

    def __init__(self, in_channels: int = 512, num_feat: int = 64, num_blocks: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or num_feat < 1 or num_blocks < 0:
            raise ValueError("FeatureDiscriminator: in_channels, num_feat >= 1, num_blocks >= 0")
        self.in_channels = int(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.LeakyReLU(0.2))
        stages, width = [], num_feat
        for _ in range(num_blocks):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(width, width, 3, 1, 1),
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(width, width * 2, 3, 2, 1),
                    nn.LeakyReLU(0.2),
                )
            )
            width *= 2
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FeatureDiscriminator expects (B, {self.in_channels}, h, w) feature maps, got "
                f"{tuple(x.shape)}"
            )
        x = self.stem(x)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        logits = self.head(x.mean(dim=(-2, -1)))
        return (logits, feats) if return_features else logits
