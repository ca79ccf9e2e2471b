"""Run names, sweep job folders, one wandb run per job, and what the console shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sr_cli.config import safe_name
from tests.commands.test_sr_train import TINY_CLI, run_cli
from tests.conftest import compose_train

SR_EVAL = shutil.which("sr-eval") or str(Path(sys.executable).parent / "sr-eval")


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model=esrgan", "loss=[downsample,gan]"], "esrgan_downsample+gan"),
        (["model=edsr_baseline"], "edsr_baseline_l1"),
        (["name=my run/1"], "my_run-1"),
    ],
)
def test_default_run_name_says_what_the_run_is(overrides, expected):
    assert compose_train(overrides).run_name == expected


def test_safe_name_is_valid_in_paths_and_overrides():
    assert safe_name("loss=[downsample,gan]") == "loss-downsample+gan"
    assert safe_name("loss.gan.weight=0.1") == "loss.gan.weight-0.1"
    assert safe_name("data.train_dir=/a b/[x]") == "data.train_dir--a_b-x"


def test_console_shows_progress_validation_and_where_things_are(tmp_path):
    args = [a for a in TINY_CLI if a != "trainer.enable_progress_bar=false"]
    result = run_cli(
        [*args, "loss=l1", "data.iters_per_epoch=2", "trainer.max_steps=4", "val.save_images=0"],
        tmp_path,
        env_extra={"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr
    run_dir = next((tmp_path / "outputs" / "esrgan_l1").iterdir())
    assert "iter 2: val psnr_y" in err and "iter 4: val psnr_y" in err
    assert "(best " in err
    assert f"run folder: {run_dir.relative_to(tmp_path)}" in err or f"run folder: {run_dir}" in err
    assert "best checkpoint:" in err and "last checkpoint:" in err
    assert "sr-eval checkpoints=[" in err and "sr-report " in err
    assert "4/4" in err  # one bar over the whole run, in iterations
    out = result.stdout + err
    for noise in ("Epoch 0", "litlogger", "Total Flops", "GPU available", "💡"):
        assert noise not in out, noise


@pytest.mark.slow
def test_sweep_jobs_have_names_folders_and_wandb_runs_of_their_own(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run_cli(
        [
            "-m",
            *TINY_CLI,
            "logger=wandb",
            "loss=l1,l1+tv",
            "data.iters_per_epoch=2",
            "trainer.max_steps=2",
            "val.save_images=1",
        ],
        tmp_path,
        env_extra=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "sweep").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_esrgan_l1", "1_esrgan_l1+tv"]
    for job, has_tv in zip(jobs, (False, True)):
        runs = list((sweep / job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{job}: {runs}"  # one wandb run per job, in the job's folder
        record = runs[0].read_bytes()  # the offline run's own config record
        assert job.split("_", 1)[1].encode() in record
        assert (b"sr_cli.losses.tv.TVLoss" in record) == has_tv
        assert (b"esrgan_l1+tv" in record) == has_tv
    # a job folder is a valid argument for the other tools, without quoting
    env_eval = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    job = sweep / "1_esrgan_l1+tv"
    ev = subprocess.run(
        [SR_EVAL, f"checkpoints=[{job}]", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path,
        env=env_eval,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "esrgan_l1+tv" in ev.stdout + ev.stderr


class WandbSpy:
    """A callback that records what the wandb run holds before the job ends it."""

    seen: dict = {}

    def __new__(cls):
        import pytorch_lightning as pl

        class Spy(pl.Callback):
            def on_validation_end(self, trainer, pl_module):
                WandbSpy.seen.setdefault("image_steps", []).append(pl_module._logger_step())

            def on_train_end(self, trainer, pl_module):
                run = trainer.loggers[1].experiment
                WandbSpy.seen["summary"] = dict(run.summary["val/psnr_y"])
                WandbSpy.seen["name"] = run.name

        return Spy()


def test_wandb_summary_is_the_best_and_images_share_the_metrics_step(
    tiny_cfg, val_subset, tmp_path
):
    import csv

    from sr_cli.train.training import train

    WandbSpy.seen.clear()
    out = tmp_path / "wb"
    cfg = tiny_cfg(
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "logger=wandb",
        "trainer.max_steps=6",
        "+callbacks.spy._target_=tests.commands.test_run_names.WandbSpy",
        out=out,
    )
    train(cfg)
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r.get("val/psnr_y")]
    best = max(float(r["val/psnr_y"]) for r in rows)
    assert WandbSpy.seen["summary"] == {"max": pytest.approx(best, rel=1e-6)}
    assert WandbSpy.seen["image_steps"] == [int(r["step"]) for r in rows]
    assert WandbSpy.seen["name"] == "esrgan_l1"
