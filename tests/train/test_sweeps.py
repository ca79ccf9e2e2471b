"""Real sweeps through Hydra's launchers and the Optuna sweeper, each writing summary.csv/md."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from tests.commands.test_sr_train import TINY_CLI, run_cli

pytestmark = pytest.mark.slow

TINY_SWEEP = [
    "experiment=demo",
    "model.pretrained=null",
    *TINY_CLI,
    "data.iters_per_epoch=2",
    "trainer.max_steps=2",
    "val.save_images=0",
]


def _sweep_dir(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "multirun" / "sweep").iterdir()
    return sweep


def _rows(sweep: Path) -> list[dict]:
    assert (sweep / "summary.md").is_file()
    return list(csv.DictReader((sweep / "summary.csv").open()))


def _best_psnr(job_dir: Path) -> float:
    rows = csv.DictReader((job_dir / "metrics.csv").open())
    return max(float(r["val/psnr_y"]) for r in rows if r.get("val/psnr_y"))


def test_joblib_sweep_with_a_failing_job_still_writes_the_summary(tmp_path, val_subset):
    # job 1 has an invalid option that only it sets: it fails, job 0 finishes
    result = run_cli(
        [
            "-m",
            "cluster=joblib",
            *TINY_SWEEP,
            "loss=[l1]",
            f"data.val_dir={val_subset}",
            "data.batch_size=2,0",
        ],
        tmp_path,
        timeout=600,
    )
    assert result.returncode != 0  # Hydra re-raises the failed job's error after the sweep
    assert "data.batch_size must be a positive integer, got 0" in result.stderr
    sweep = _sweep_dir(tmp_path)
    rows = _rows(sweep)
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "data.batch_size=2", "finished"),
        ("1", "data.batch_size=0", "failed"),
    ]
    done, failed = rows
    assert failed["error"].startswith(
        "ConfigError: data.batch_size must be a positive integer, got 0"
    )
    assert "\n" not in failed["error"] and failed["iterations"] == ""
    assert done["iterations"] == "2" and done["error"] == ""
    job0 = sweep / done["run_dir"]
    assert float(done["best val/psnr_y"]) == pytest.approx(_best_psnr(job0), abs=1e-4)
    assert float(done["objective"]) == pytest.approx(_best_psnr(job0), abs=1e-4)
    md = (sweep / "summary.md").read_text()
    assert "2 jobs: 1 failed, 1 finished" in md and "ConfigError" in md


def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path, val_subset):
    result = run_cli(
        [
            "-m",
            "cluster=submitit_local",
            *TINY_SWEEP,
            "loss=[l1]",
            f"data.val_dir={val_subset}",
            "loss.l1.weight=0.5,1.0",
        ],
        tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    # submitit's own records: one folder per job (named by the job's process id), with its logs
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2 and all((j / f"{j.name}_0_log.err").is_file() for j in jobs)
    rows = _rows(sweep)
    assert [(r["overrides"], r["status"], r["iterations"]) for r in rows] == [
        ("loss.l1.weight=0.5", "finished", "2"),
        ("loss.l1.weight=1.0", "finished", "2"),
    ]
    for row in rows:
        assert (sweep / row["run_dir"] / "checkpoints" / "last.ckpt").is_file()


def test_optuna_two_trials_for_real(tmp_path, val_subset):
    result = run_cli(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            *TINY_SWEEP,
            f"data.val_dir={val_subset}",
        ],
        tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    rows = _rows(sweep)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    objectives = [float(r["objective"]) for r in rows]
    assert results["best_value"] == pytest.approx(max(objectives))  # maximize val/psnr_y
    best = rows[objectives.index(max(objectives))]
    for key, value in results["best_params"].items():
        assert f"{key}={value}" in best["overrides"]
    params = results["best_params"]
    assert 1e-5 <= params["optim.generator.lr"] <= 1e-3
    assert 0.1 <= params["loss.downsample.weight"] <= 2.0
    assert 1e-4 <= params["loss.gan.weight"] <= 5e-2
    # every trial trained the downsample + GAN mix with its own sampled weights
    for row in rows:
        cfg = yaml.safe_load((sweep / row["run_dir"] / "config_resolved.yaml").read_text())
        assert sorted(cfg["loss"]) == ["downsample", "gan"]
        assert f"loss.gan.weight={cfg['loss']['gan']['weight']}" in row["overrides"]


def test_a_job_stopped_by_a_signal_is_preempted_in_the_summary(tmp_path, val_subset):
    import os
    import signal
    import subprocess
    import time

    from tests.commands.test_sr_train import SR_TRAIN

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "SLURM", "SR_CLI"))}
    args = [*TINY_SWEEP, "loss=[l1]", f"data.val_dir={val_subset}", "trainer.max_steps=1000"]
    proc = subprocess.Popen(
        [SR_TRAIN, "-m", *args, "loss.l1.weight=0.5,1.0"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = time.monotonic() + 240
    while not list(tmp_path.glob("multirun/sweep/*/0_*/checkpoints/last.ckpt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    sweep = _sweep_dir(tmp_path)
    (row,) = _rows(sweep)  # the second job never started
    assert (row["overrides"], row["status"], row["error"]) == (
        "loss.l1.weight=0.5",
        "preempted",
        "stopped by SIGTERM",
    )
    assert int(row["iterations"]) >= 2
