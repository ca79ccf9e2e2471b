"""Learned perceptual loss: a trained discriminator's features as the perceptual network.

The discriminator of a finished GAN run knows which image statistics separate SR from HR.
Frozen, its intermediate features define a distance, used like VGG features in a perceptual
loss: ``sum_l w_l * d(phi_l(SR), phi_l(GT))``. The iterative scheme (``sr-train stages=N``)
trains stage 1 with GAN + VGG perceptual, then retrains the generator from scratch with GAN +
the stage-1 discriminator as its perceptual network, and so on.

The discriminator is rebuilt from the sr-train checkpoint alone: the checkpoint stores the
resolved loss config, so the architecture of term ``term`` (default ``gan``) and its weights
(``losses.<term>.discriminator.*``) are both inside it. It is loaded with ``weights_only=True``,
frozen and kept in eval mode (batch norm uses its running statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from sr_cli.errors import CheckpointError, ConfigError, one_line
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape
from sr_cli.losses.pixel import DISTANCES, check_distance
from sr_cli.serialization import safe_torch_load


def load_discriminator(checkpoint: str | Path, term: str = "gan") -> nn.Module:
    """Rebuild and load the discriminator of loss term ``term`` from an sr-train checkpoint.

    The stored discriminator config is built through the allow-list of :mod:`sr_cli.rebuild`,
    never passed to Hydra's ``instantiate``: a crafted checkpoint cannot run code."""
    from sr_cli.rebuild import rebuild

    path = Path(checkpoint)
    ckpt = safe_torch_load(path)
    meta = ckpt.get("sr_cli", {}) if isinstance(ckpt, dict) else {}
    loss_cfg = meta.get("loss") or {}
    node = loss_cfg.get(term) if isinstance(loss_cfg, Mapping) else None
    if not isinstance(node, Mapping) or "discriminator" not in node:
        have = [
            k
            for k, v in dict(loss_cfg or {}).items()
            if isinstance(v, Mapping) and "discriminator" in v
        ]
        raise CheckpointError(
            f"{str(path)!r} has no discriminator for loss term {term!r}; terms with a discriminator "
            f"in it: {have or 'none'}. Train a GAN run first (e.g. loss=l1+gan) or set "
            "loss.disc_perceptual.term=<name>."
        )
    disc = rebuild(node["discriminator"], path, f"loss.{term}.discriminator")
    prefix = f"losses.{term}.discriminator."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        missing, unexpected = disc.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: every one is listed, nothing is cut
        raise CheckpointError(
            f"discriminator weights in {str(path)!r} do not fit its config: {one_line(exc)}"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"discriminator weights in {str(path)!r} do not fit its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return disc.eval().requires_grad_(False)


def discriminator_feature_loss(
    feats_sr: Sequence[Tensor],
    feats_gt: Sequence[Tensor],
    layer_weights: Sequence[float],
    distance: str = "l1",
) -> Tensor:
    """``sum_l w_l * d(f_l(SR), f_l(GT))`` over the layers with a non-zero weight (GT detached)."""
    if len(layer_weights) > len(feats_sr):
        raise ConfigError(
            f"{len(layer_weights)} layer weights given but the discriminator returns {len(feats_sr)} feature maps"
        )
    total = None
    for w, a, b in zip(layer_weights, feats_sr, feats_gt):
        if w == 0:
            continue
        check_same_shape(a, b, "discriminator_feature_loss")
        term = w * DISTANCES[distance](a, b.detach())
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("all discriminator layer weights are zero")
    return total


class DiscriminatorPerceptualLoss(LossTerm):
    """Perceptual loss on the features of a frozen, trained discriminator.

    Args:
        checkpoint: sr-train checkpoint of a GAN run (stage k) holding the discriminator.
        term: name of the adversarial term in that run (``gan``).
        layer_weights: weight per feature map, in the order the discriminator returns them
            (``null``: equal weights on all).
        distance: ``l1`` or ``l2``.
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
    """

    def __init__(
        self,
        checkpoint: str | None,
        term: str = "gan",
        layer_weights: Sequence[float] | None = None,
        distance: str = "l1",
        weight: float = 1.0,
        start_step: int = 0,
    ) -> None:
        super().__init__(weight, start_step)
        if not checkpoint:
            raise ConfigError(
                "loss.disc_perceptual.checkpoint is not set: point it at the last.ckpt of a GAN run, "
                "or use `sr-train stages=N`, which sets it for every stage after the first."
            )
        check_distance(distance, "disc_perceptual")
        # Kept out of the module tree: frozen, not optimized, not saved in this run's checkpoints.
        self._net = [load_discriminator(checkpoint, term)]
        self.checkpoint = str(checkpoint)
        self.layer_weights = list(layer_weights) if layer_weights is not None else None
        self.distance = distance

    @property
    def network(self) -> nn.Module:
        return self._net[0]

    def _apply(self, fn, *args, **kwargs):  # keep the frozen network on the module's device
        self._net[0] = self._net[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def compute(self, inputs: LossInputs) -> Tensor:
        net = self.network.eval()
        _, f_sr = net(inputs.sr, return_features=True)
        _, f_gt = net(inputs.gt, return_features=True)
        weights = (
            self.layer_weights if self.layer_weights is not None else [1.0 / len(f_sr)] * len(f_sr)
        )
        return discriminator_feature_loss(f_sr, f_gt, weights, self.distance)

    def extra_repr(self) -> str:
        return f"checkpoint={self.checkpoint!r}, distance={self.distance}, " + super().extra_repr()
