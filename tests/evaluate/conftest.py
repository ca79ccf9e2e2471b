"""Helpers for the sr-eval / sr-upscale / sr-export tests: the installed console scripts and an
empty torch hub cache (the tiny trained run they share with tests/rate and tests/report is in
tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The installed console scripts (next to the interpreter when not on PATH).
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    return shutil.which(name) or str(BIN / name)


def run_script(name: str, args: list[str], cwd: Path, timeout: int = 300, env_extra=None):
    """Run an installed console script without standard input, wandb offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(env_extra or {})
    return subprocess.run(
        [script(name), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, so pretrained-weight metrics are unavailable."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home
