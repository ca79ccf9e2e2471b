"""Fixtures for sr-eval / sr-upscale / sr-report / sr-export: one tiny trained run per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from tests.conftest import TINY, compose_train

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


@pytest.fixture(scope="session")
def eval_images(tmp_path_factory) -> Path:
    """Three small validation images (48x60 crops of the bundled ones): 2 + 1 shards on 2 ranks."""
    folder = tmp_path_factory.mktemp("eval_images") / "val3"
    folder.mkdir()
    for p in sorted((SAMPLES_DIR / "val").glob("*.png")):
        Image.open(p).crop((40, 40, 88, 100)).save(folder / p.name)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, eval_images) -> Path:
    """A run directory of a tiny ESRGAN (small preset) trained for 2 iterations with L1.

    Session-scoped, so the ~10 s of training are paid once for all modules of tests/eval."""
    from sr_cli.train.training import train

    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = compose_train(
        [*TINY, "model=esrgan", "loss=[l1]", f"data.val_dir={eval_images}", "val.save_images=0"],
        output_dir=out,
    )
    train(cfg)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, so pretrained-weight metrics are unavailable."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home
