"""DISTS as a training loss (Ding et al., "Image Quality Assessment: Unifying Structure and
Texture Similarity", TPAMI 2020): structure and texture similarity of VGG16 features, with
learned per-channel weights; used as a perceptual loss by recent SR GANs.

The network is piq's ``DISTS``. Its two weight files come from the torch hub cache
(``torch.hub.get_dir()/checkpoints``): torchvision's ``vgg16-397923af.pth`` and piq's
``dists_weights.pt``. Nothing is downloaded: when a file is missing the term raises
:class:`~sr_cli.errors.WeightsUnavailableError` naming the file, where it comes from and where
to put it, when the loss is built (before training starts).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from sr_cli.errors import WeightsUnavailableError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape


def dists_weight_files() -> dict[str, str]:
    """``{file name: download URL}`` of the weights piq's DISTS loads through torch.hub."""
    import piq
    from torchvision.models import VGG16_Weights

    urls = (VGG16_Weights.IMAGENET1K_V1.url, piq.DISTS._weights_url)
    return {os.path.basename(u): u for u in urls}


def check_dists_weights() -> None:
    """Raise :class:`WeightsUnavailableError` unless both DISTS weight files are cached."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    missing = {
        f: u for f, u in dists_weight_files().items() if not os.path.isfile(os.path.join(folder, f))
    }
    if missing:
        files = ", ".join(f"{f} (from {u})" for f, u in missing.items())
        raise WeightsUnavailableError(
            f"loss.dists needs pretrained weights that are not in the torch hub cache: {files}. "
            f"Nothing is downloaded at run time: copy the file(s) to {folder} (torch.hub.get_dir()"
            "/checkpoints; set TORCH_HOME to use another cache), or drop the dists term."
        )


class DISTSLoss(LossTerm):
    """DISTS between SR and GT (RGB in ``[0, 1]``); the network is frozen.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
    """

    def __init__(self, weight: float = 1.0, start_step: int = 0) -> None:
        super().__init__(weight, start_step)
        import piq

        check_dists_weights()
        self.dists = piq.DISTS(reduction="mean")
        self.dists.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> DISTSLoss:
        super().train(mode)
        self.dists.eval()  # frozen network
        return self

    def compute(self, inputs: LossInputs) -> Tensor:
        check_same_shape(inputs.sr, inputs.gt, "dists")
        return self.dists(inputs.sr.clamp(0, 1), inputs.gt.clamp(0, 1))
