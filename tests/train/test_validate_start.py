"""A fine-tune from pretrained weights validates at iteration 0, so the console and metrics.csv
show where it started; a run from scratch does not, nor does a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.data import SAMPLES_DIR

WEIGHTS = SAMPLES_DIR.parent / "weights" / "esrgan_small_x4_l1.safetensors"


def validation_rows(run: Path) -> list[dict]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return [r for r in rows if r.get("val/psnr_y")]


def first_row(run: Path) -> dict:
    return next(csv.DictReader(open(run / "metrics.csv")))


def fine_tune(tiny_cfg, out: Path, *extra: str):
    from sr_cli.train.training import train

    cfg = tiny_cfg(
        "model=esrgan", f"model.pretrained={WEIGHTS}", "loss=[l1]", "val.save_images=0",
        "trainer.enable_progress_bar=true", *extra, out=out,
    )  # fmt: skip
    return train(cfg)


def test_a_fine_tune_validates_its_starting_weights(tiny_cfg, val_subset, tmp_path, capsys):

    run = tmp_path / "ft"
    fine_tune(tiny_cfg, run, f"data.val_dir={val_subset}")
    start = first_row(run)  # before any training row
    assert start["step"] == "0" and start["val/psnr_y"] and not start["train/loss_l1"]
    assert len(validation_rows(run)) == 2  # iteration 0, then iteration 2
    from sr_cli.train.sweep import read_curve

    # The curve a sweep's pruner and Optuna see holds what the job trained (not the start).
    assert list(read_curve(run, "val/psnr_y")) == [2]
    err = capsys.readouterr().err
    assert "iter 0: val psnr_y" in err and "start: the pretrained weights" in err
    # The start figure is the pretrained generator's, measured here: the weights loaded into
    # the configured network, the MATLAB-bicubic LQ of the validation image, the protocol PSNR.
    from hydra.utils import instantiate

    from sr_cli.data.arrays import mod_crop, to_tensor
    from sr_cli.data.images import read_image
    from sr_cli.degradations import ResizeDownsample
    from sr_cli.metrics.protocol import psnr_y
    from sr_cli.models.pretrained import load_pretrained

    cfg = tiny_cfg("model=esrgan")
    generator = instantiate(cfg.model.generator, _convert_="all")
    load_pretrained(generator, str(WEIGHTS))
    values = []
    for path in sorted(val_subset.glob("*.png")):
        gt = to_tensor(mod_crop(read_image(path), 4))[None]
        with torch.no_grad():
            sr = generator(ResizeDownsample(4)(gt)).clamp(0, 1)
        values.append(float(psnr_y(sr, gt, 4)))
    assert float(start["val/psnr_y"]) == pytest.approx(np.mean(values), abs=1e-4)
    # Nothing was trained at iteration 0: no checkpoint of it, best.ckpt is a trained state.
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("iter_*.ckpt"))
    assert ckpts == ["iter_0000002.ckpt"]


def test_no_start_validation_from_scratch_or_on_resume(tiny_cfg, val_subset, tmp_path):
    from sr_cli.train.training import train

    scratch = tmp_path / "scratch"
    train(tiny_cfg("loss=[l1]", f"data.val_dir={val_subset}", "val.save_images=0", out=scratch))
    assert not first_row(scratch).get("val/psnr_y")  # the first row is a training step
    assert len(validation_rows(scratch)) == 1

    run = tmp_path / "ft"
    fine_tune(tiny_cfg, run, f"data.val_dir={val_subset}")
    fine_tune(tiny_cfg, run, f"data.val_dir={val_subset}", "resume=auto", "trainer.max_steps=4")
    rows = validation_rows(run)
    assert [r["step"] for r in rows].count("0") == 1  # the start, once
    assert len(rows) == 3  # iterations 0, 2 and 4
