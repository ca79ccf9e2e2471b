"""AuxNet: a small network trained on an auxiliary task, as an offline perceptual network.

The iterative learned-perceptual idea starts from a *sub-optimal* perceptual loss: the features
of a network trained for some other task. Offline, the ImageNet VGG19 weights are not at hand,
so the project ships its own: this VGG-style network trained to tell which training image a
patch was cut from (surrogate classes, as in Exemplar-CNN: Dosovitskiy et al., "Discriminative
unsupervised feature learning with convolutional neural networks", NeurIPS 2014), under flips,
rotations and brightness changes. It needs no labels, trains on the bundled images in a few
minutes on a CPU (``make pretrain-aux``), and learns the texture and colour statistics that
tell those images apart, not the semantics VGG knows: sub-optimal by design. (Predicting image
rotations, Gidaris et al. 2018, was tried first: most bundled images are textures with no
upright, and the network stayed at chance.)

Layers are named like VGG's: ``convX_Y`` is the Y-th convolution of block X before its ReLU,
``reluX_Y`` after it; blocks 1-3 end with a 2x max-pool. Inputs are RGB in ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

#: The shipped weights, ``sr_cli/data/weights/auxnet_samples.safetensors`` (``make pretrain-aux``).
AUXNET_FILE = "auxnet_samples.safetensors"

#: Channels of blocks 1-4; two 3x3 convolutions per block.
WIDTHS = (32, 64, 96, 128)


def _layer_names() -> list[str]:
    names = []
    for b in range(1, len(WIDTHS) + 1):
        for c in (1, 2):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        if b < len(WIDTHS):
            names.append(f"pool{b}")
    return names


#: Every feature layer, in order.
LAYERS: tuple[str, ...] = tuple(_layer_names())


class AuxNet(nn.Module):
    """VGG-style features (4 blocks of two 3x3 convs) and a linear classifier over ``classes``.

    Shape:
        ``(B, 3, H, W)`` -> logits ``(B, classes)``; :meth:`features` -> ``{layer: map}``.

    Example:
        >>> net = AuxNet(classes=9)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 9])
        >>> net.features(torch.rand(1, 3, 32, 32), ["relu2_2"])["relu2_2"].shape
        torch.Size([1, 64, 16, 16])
    """

    def __init__(self, classes: int = 9) -> None:
        super().__init__()
        self.classes = int(classes)
        layers: list[nn.Module] = []
        cin = 3
        for b, width in enumerate(WIDTHS, start=1):
            for _ in (1, 2):
                layers += [nn.Conv2d(cin, width, 3, 1, 1), nn.ReLU(inplace=False)]
                cin = width
            if b < len(WIDTHS):
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(WIDTHS[-1], self.classes)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor, layers: list[str] | tuple[str, ...]) -> dict[str, Tensor]:
        """Feature maps of ``layers`` (the network runs up to the deepest one)."""
        wanted = {LAYERS.index(name): name for name in layers}
        out: dict[str, Tensor] = {}
        x = x - self.mean.to(x.dtype)
        last = max(wanted)
        for index, module in enumerate(self.body):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
            if index == last:
                break
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x - self.mean.to(x.dtype))
        return self.head(x.mean(dim=(-2, -1)))


def default_weights() -> Path:
    """Where the shipped AuxNet weights are (beside the bundled sample images)."""
    return Path(__file__).resolve().parent.parent / "data" / "weights" / AUXNET_FILE
