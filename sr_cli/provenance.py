"""What produced a run: code version, library versions, command line, seed, machine.

:func:`collect` returns a plain dict; ``sr-train`` writes it as ``provenance.json`` next to
``config_resolved.yaml`` and logs it to wandb (config key ``provenance``). Every field is
best-effort: a missing ``git``, a folder outside a repository or an uninstalled package gives
``null`` rather than an error.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

#: Distributions whose installed versions are recorded (``null`` when not installed).
PACKAGES = (
    "sr_cli",
    "torch",
    "torchvision",
    "pytorch_lightning",
    "lightning",
    "hydra-core",
    "omegaconf",
    "kornia",
    "piq",
)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(cwd: str | Path | None = None) -> dict:
    """``{"commit", "dirty", "root"}`` of the git work tree holding ``cwd`` (default: the current
    directory); all ``None`` outside a repository or without ``git``."""
    where = Path(cwd or Path.cwd())
    commit = _git(["rev-parse", "HEAD"], where)
    if commit is None:
        return {"commit": None, "dirty": None, "root": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "root": _git(["rev-parse", "--show-toplevel"], where),
    }


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cuda_devices() -> list[str]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop a run from recording itself
        return []


def collect(seed: int | None = None, cwd: str | Path | None = None) -> dict:
    """The provenance record of a run started now from ``cwd`` with ``seed``."""
    return {
        "git": git_state(cwd),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "seed": seed,
        "hostname": socket.gethostname(),
        "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
        "cuda_devices": cuda_devices(),
    }
