"""Each study end to end with ``preset=smoke`` (two iterations per run): every run folder, the
sr-report page and results.md with a computed verdict exist, and a rerun skips finished runs
without touching their checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sr_cli.study.criteria import HELD, INCONCLUSIVE, NOT_HELD
from sr_cli.study.runner import load_study

REPO = Path(__file__).resolve().parents[2]


def sr_study(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "sr_cli.commands.study", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "study", ["downsample", "translational", "iterative_perceptual", "catalogue"]
)
def test_study_smoke_runs_reports_and_resumes(study, tmp_path):
    first = sr_study(study, "preset=smoke", f"out={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / study / "smoke"
    cfg = load_study(study)
    results = json.loads((root / "results.json").read_text())
    statuses = {r["name"]: r["status"] for r in results["runs"]}
    for run in cfg.runs:
        if statuses[run] == "not run":  # needs weights this machine has not cached
            assert run in (cfg.get("run_requires") or {})
            continue
        assert (root / "runs" / run / "checkpoints" / "last.ckpt").is_file() or (
            root / "runs" / run / "stages.json"
        ).is_file(), (run, statuses[run])
    assert (root / "report" / "report.html").is_file()
    md = (root / "results.md").read_text()
    assert results["verdict"] in (HELD, NOT_HELD, INCONCLUSIVE)
    assert f"**Verdict: {results['verdict']}**" in md
    assert all(c["verdict"] in ("pass", "fail", "inconclusive") for c in results["criteria"])
    assert "| bicubic | baseline |" in md and "sr-train" in md

    ckpts = sorted(root.glob("runs/**/checkpoints/last.ckpt"))
    assert ckpts
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    again = sr_study(study, "preset=smoke", f"out={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    for run in cfg.runs:
        if statuses[run] == "finished":
            assert f"run {run}: finished before, skipping" in again.stdout
    assert [p.stat().st_mtime_ns for p in ckpts] == mtimes


@pytest.mark.slow
def test_a_failed_run_is_recorded_the_study_goes_on_and_an_interrupted_one_resumes(tmp_path):
    study = tmp_path / "mini.yaml"
    study.write_text(
        """
claim: L1 beats bicubic.
common: [model=msrresnet, logger=none, val.save_images=0, "loss=[l1]"]
presets:
  smoke: [model.preset=small, trainer=cpu, data.patch_size=32, data.batch_size=2,
          data.iters_per_epoch=2, trainer.max_steps=2, data.num_workers=0,
          trainer.enable_progress_bar=false, trainer.enable_model_summary=false]
runs:
  good: []
  broken: [model.preset=nope]
eval: {metrics: [psnr_y]}
criteria:
  - {id: beats, left: {run: good, metric: psnr_y}, op: ">", right: {run: bicubic, metric: psnr_y}}
  - {id: broken_failed, left: {run: broken, status: true}, op: "==", right: {value: failed}}
"""
    )
    root = tmp_path / "mini" / "smoke"
    # train=false trains nothing: no run is finished, so nothing is measured.
    dry = sr_study(str(study), "preset=smoke", f"out={tmp_path}", "train=false")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "run good: not started, not trained (train=false)" in dry.stdout
    assert json.loads((root / "results.json").read_text())["verdict"] == "inconclusive"
    assert not (root / "runs" / "good" / "checkpoints").exists()

    first = sr_study(str(study), "preset=smoke", f"out={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    runs = {r["name"]: r for r in results["runs"]}
    assert runs["good"]["status"] == "finished"
    assert runs["broken"]["status"] == "failed"
    assert "model=msrresnet has no preset 'nope'" in runs["broken"]["error"]
    assert "(exit status 2)" in runs["broken"]["error"]
    verdicts = {c["id"]: c["verdict"] for c in results["criteria"]}
    assert verdicts["broken_failed"] == "pass"
    md = (root / "results.md").read_text()
    assert "| broken | failed |" in md and "has no preset 'nope'" in md

    # An interrupted run (no summary.json yet, a checkpoint) continues from its last state.
    (root / "runs" / "good" / "summary.json").unlink()
    again = sr_study(str(study), "preset=smoke", f"out={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "run good: interrupted before, resuming from its last checkpoint" in again.stdout
    assert "resume=" in again.stdout and "run good: finished" in again.stdout
    assert "run broken: failed before" in again.stdout
    assert json.loads((root / "runs" / "good" / "summary.json").read_text())["iteration"] == 2
