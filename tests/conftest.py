"""Shared fixtures: compose the real Hydra configs, small and on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from sr_cli.config import config_dir, register_resolvers

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)
register_resolvers()

REPO = Path(__file__).resolve().parent.parent
CONF = config_dir()

#: Overrides that make any training config tiny: small preset, 32px patches, CPU, no wandb.
TINY = [
    "experiment=demo",
    "model.pretrained=null",  # mechanisms, not the demo: start from scratch (no warm start)
    "logger=none",
    "trainer.accelerator=cpu",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.iters_per_epoch=2",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "val.save_images=1",
    "trainer.log_every_n_steps=1",
]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` with overrides, outside of a Hydra run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)`` -> a composed tiny training config writing under ``tmp_path``."""

    def make(*overrides: str, out: Path | None = None) -> DictConfig:
        return compose_train([*TINY, *overrides], output_dir=out or tmp_path / "run")

    return make


@pytest.fixture
def val_subset(tmp_path):
    """A validation folder with one small bundled image (fast validation)."""
    from PIL import Image

    from sr_cli.data import SAMPLES_DIR

    folder = tmp_path / "val_small"
    folder.mkdir()
    im = Image.open(SAMPLES_DIR / "val" / "camera.png").crop((0, 0, 48, 48))
    im.save(folder / "camera.png")
    return folder


@pytest.fixture(scope="session")
def gan_checkpoint(tmp_path_factory):
    """``last.ckpt`` of a tiny L1 + GAN run (VGG-style discriminator on 32 px patches)."""
    from sr_cli.train.training import train

    out = tmp_path_factory.mktemp("gan_run")
    train(compose_train([*TINY, "loss=[l1,gan]", "val.save_images=0"], output_dir=out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def eval_images(tmp_path_factory) -> Path:
    """Three small validation images (48x60 crops of the bundled ones): 2 + 1 shards on 2 ranks."""
    from PIL import Image

    from sr_cli.data import SAMPLES_DIR

    folder = tmp_path_factory.mktemp("eval_images") / "val3"
    folder.mkdir()
    for p in sorted((SAMPLES_DIR / "val").glob("*.png")):
        Image.open(p).crop((40, 40, 88, 100)).save(folder / p.name)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, eval_images) -> Path:
    """A run directory of a tiny ESRGAN (small preset) trained for 2 iterations with L1.

    Session-scoped, so the ~10 s of training are paid once for tests/evaluate, tests/rate and
    tests/report."""
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
def read_only_dir(tmp_path):
    """An existing, empty folder nothing can be written to: a read-only tmpfs when running as
    root (root ignores file modes), else a folder with mode 0o555."""
    import subprocess

    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
            capture_output=True,
        )
        if mounted.returncode != 0:
            pytest.skip("running as root and cannot mount a read-only tmpfs")
        yield folder
        subprocess.run(["umount", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
