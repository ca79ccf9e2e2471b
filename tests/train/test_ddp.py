"""Distributed training: 2 CPU processes with gloo through the installed sr-train."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.commands.test_sr_train import TINY_CLI, run_cli
from tests.conftest import compose_train

pytestmark = pytest.mark.slow


def test_ddp_two_cpu_processes(tmp_path, val_subset):
    run_dir = tmp_path / "ddp"
    res = run_cli(
        [
            "trainer=ddp",
            "trainer.devices=2",
            "loss=l1+gan",
            "trainer.max_steps=3",
            "data.iters_per_epoch=3",
            f"data.val_dir={val_subset}",
            f"hydra.run.dir={run_dir}",
            *TINY_CLI,
        ],
        tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["iterations_per_rank"] == [3, 3]  # both ranks took part
    # Validation was sharded (2 + 1 images) and reduced as per-image sums: it equals the
    # single-process figure for the same weights.
    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("val/psnr_y")]
    ddp_psnr = float(rows[-1]["val/psnr_y"])
    from sr_cli.train.build import build_module

    cfg = compose_train(
        ["loss=[l1,gan]", f"data.val_dir={val_subset}", *TINY_CLI], output_dir=tmp_path / "single"
    )
    import hydra

    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("validate")
    module = build_module(cfg, dm.val_names, tmp_path / "single")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (single,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert single["val/psnr_y"] == pytest.approx(ddp_psnr, abs=1e-4)


@pytest.fixture
def val_subset(tmp_path):
    """Three small validation images, so two ranks get unequal shards (2 + 1)."""
    from PIL import Image

    from sr_cli.data import SAMPLES_DIR

    folder = tmp_path / "vals" / "val3"
    folder.mkdir(parents=True)
    for p in sorted((SAMPLES_DIR / "val").glob("*.png")):
        Image.open(p).crop((0, 0, 48, 60)).save(folder / p.name)
    return folder


def test_ddp_with_fewer_validation_images_than_processes_is_a_clear_error(tmp_path, val_subset):
    one = tmp_path / "vals" / "val1"
    one.mkdir()
    first = sorted(val_subset.glob("*.png"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    res = run_cli(
        [
            "trainer=ddp",
            "trainer.devices=2",
            "loss=l1",
            f"data.val_dir={one}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *TINY_CLI,
        ],
        tmp_path,
        timeout=600,
    )
    assert res.returncode == 2, res.stderr[-4000:]
    assert (
        "validation set 'val'" in res.stderr and "has 1 image(s) but training runs 2" in res.stderr
    )
    assert "trainer.devices" in res.stderr
