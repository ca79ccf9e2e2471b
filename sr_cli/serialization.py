"""Safe, atomic reading and writing of torch files (a leaf module: no Lightning import).

* Writes go to a temporary file in the target folder, are flushed and fsync'ed, then renamed
  over the destination with ``os.replace``: a crash leaves either the old or the new file,
  never a truncated one.
* Reads use ``torch.load(weights_only=True)``: a checkpoint cannot execute code when loaded.
  Checkpoints written by sr-cli contain only tensors and plain Python values, so they load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sr_cli.errors import CheckpointError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist. Check the path (resume=..., model.pretrained=...)."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError for corrupt zips, ...
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects that cannot be loaded safely "
                f"(weights_only=True refused: {str(exc).splitlines()[0]}); loading it would run code. "
                "If you trust its source, re-save just its tensors, e.g. "
                "torch.save(torch.load(p, weights_only=False)['params'], 'clean.pth'), or convert "
                "it to .safetensors."
            ) from exc
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: {exc}"
        ) from exc
