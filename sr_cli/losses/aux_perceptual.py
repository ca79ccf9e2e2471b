"""Perceptual loss on the features of a network trained on an auxiliary task (AuxNet).

The offline stand-in for VGG19 in the iterative learned-perceptual study: the same perceptual
distance ``sum_l w_l * d(phi_l(SR), phi_l(GT))``, with ``phi`` the features of
:class:`~sr_cli.models.auxnet.AuxNet`, trained by the project to tell which bundled training
image a patch was cut from (``sr_cli/data/weights/auxnet_samples.safetensors``, rebuilt by
``make pretrain-aux``). It is a
*sub-optimal* perceptual network on purpose: what the seed idea's stage 1 starts from.

The weights are read from the file when the term is built (safetensors: no code can run) and
left out of checkpoints, like VGG's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from sr_cli.errors import CheckpointError, ConfigError, WeightsUnavailableError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape
from sr_cli.losses.perceptual import _check_layer_weights, perceptual_loss
from sr_cli.losses.pixel import check_distance
from sr_cli.models.auxnet import LAYERS, AuxNet, default_weights


def load_auxnet(path: str | Path | None = None) -> AuxNet:
    """A frozen :class:`AuxNet` with the weights of ``path`` (default: the shipped file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path else default_weights()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the auxiliary perceptual network's weights {path} are missing; rebuild them with "
            "`make pretrain-aux` (a few minutes on a CPU) or set loss.aux_perceptual.weights_file"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the AuxNet weights {path}: {exc}") from None
    head = state.get("head.weight")
    if head is None or head.dim() != 2:
        raise CheckpointError(f"{path} does not hold AuxNet weights (no classifier head)")
    net = AuxNet(classes=int(head.shape[0]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not hold AuxNet weights: {exc}") from None
    return net.eval().requires_grad_(False)


class AuxPerceptualLoss(LossTerm):
    """Perceptual loss on frozen AuxNet features.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        layer_weights: ``{layer: weight}``, layers of :data:`~sr_cli.models.auxnet.LAYERS`
            (default ``{relu3_2: 1.0}``).
        distance: ``l1`` or ``l2``.
        weights_file: a AuxNet ``.safetensors`` (default: the shipped one).

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, 3, H, W)`` in ``[0, 1]``, sides of at least 8.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        layer_weights: Mapping[str, float] | None = None,
        distance: str = "l1",
        weights_file: str | None = None,
    ) -> None:
        super().__init__(weight, start_step)
        self.layer_weights = _check_layer_weights(
            {"relu3_2": 1.0} if layer_weights is None else layer_weights, "aux_perceptual"
        )
        unknown = [k for k in self.layer_weights if k not in LAYERS]
        if unknown:
            raise ConfigError(
                f"aux_perceptual: unknown AuxNet layer(s) {unknown}; choose from {list(LAYERS)}"
            )
        self.distance = check_distance(distance, "aux_perceptual")
        # Kept out of the module tree: its weights come from the file, not from checkpoints.
        self._net = [load_auxnet(weights_file)]

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        net = self._net[0]
        if next(net.parameters()).device != x.device:
            net.to(x.device)
        return net.features(x, list(self.layer_weights))

    def compute(self, inputs: LossInputs) -> Tensor:
        check_same_shape(inputs.sr, inputs.gt, "AuxPerceptualLoss")
        pred = self._features(inputs.sr)
        with torch.no_grad():
            target = self._features(inputs.gt.detach())
        return perceptual_loss(pred, target, self.layer_weights, self.distance)

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, distance={self.distance}, " + super().extra_repr()
        )
