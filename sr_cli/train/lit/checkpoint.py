"""The checkpoint: what it stores for sr-cli and what a resume may change in it.

* :class:`AtomicCheckpointIO`: Lightning's checkpoint I/O with atomic writes and
  ``weights_only=True`` reads (see :mod:`sr_cli.serialization`).
* :data:`STORED_CONFIG`: the run config entries kept under ``checkpoint["sr_cli"]``, so
  ``sr-eval``/``sr-upscale`` rebuild the generator from the file alone and a resume can tell
  what changed.
* :func:`optimizer_changes`: the optimizer settings a resume changes (another optimizer class
  is refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sr_cli.errors import CheckpointError
from sr_cli.serialization import atomic_torch_save, safe_torch_load

#: Config entries stored in every checkpoint (``checkpoint["sr_cli"]``).
STORED_CONFIG = ("name", "model", "degradation", "loss", "optim", "scale")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes, ``weights_only=True`` reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return safe_torch_load(path, map_location=map_location or "cpu")


def optimizer_changes(stored: Mapping | None, current: Mapping | None) -> dict[str, tuple]:
    """Hyperparameters (``generator.lr``, ``discriminator.betas`` ...) that differ between the
    optimizer config stored in a checkpoint and the current one: ``{key: (old, new)}``. A
    different optimizer class is refused: its saved state would not fit."""
    changes: dict[str, tuple] = {}
    for role in ("generator", "discriminator"):
        old = dict((stored or {}).get(role) or {})
        new = dict((current or {}).get(role) or {})
        if not old or not new:
            continue
        if old.get("_target_") != new.get("_target_"):
            raise CheckpointError(
                f"resume: optim.{role} changed from {old.get('_target_')} to {new.get('_target_')}; "
                "the checkpoint's optimizer state does not fit another optimizer. Start a new run "
                "with model.pretrained=<checkpoint> instead."
            )
        for key in sorted(set(old) | set(new)):
            if key.startswith("_"):
                continue
            if old.get(key) != new.get(key):
                changes[f"{role}.{key}"] = (old.get(key), new.get(key))
    return changes
