"""Studies end to end as real ``sr-study`` processes: every study at its smoke preset, reruns
that skip finished jobs, warm starts shared across studies, failed and interrupted jobs, a
study file from the user's folder, a refused study file that would run code, ``seeds=3`` with
intervals, and the joblib launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sr_cli.report.plane import read_points_csv
from sr_cli.study.plan import make_plan
from sr_cli.study.runner import weights_cached
from sr_cli.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]
STUDIES = ["downsample", "translational", "iterative_perceptual", "catalogue"]


def sr_study(*args: str, cwd: Path = REPO, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "sr_cli.commands.study", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def results(root: Path) -> dict:
    return json.loads((root / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_study_smoke_runs_reports_and_resumes(study, tmp_path):
    first = sr_study(study, "preset=smoke", f"out={tmp_path}")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    root = tmp_path / study / "smoke"
    plan = make_plan(load_study(study), "smoke", tmp_path, cached=weights_cached)
    info = results(root)
    for job in plan.jobs.values():
        run = Path(job.run_dir)
        assert (run / "checkpoints" / "last.ckpt").is_file() or (run / "stages.json").is_file()
    assert (root / "report" / "report.html").is_file()
    md = (root / "results.md").read_text()
    assert info["verdict"] in ("held", "did not hold", "inconclusive")
    assert f"**Verdict: {info['verdict']}**" in md
    assert all(c["verdict"] in ("pass", "fail", "inconclusive") for c in info["criteria"])
    assert "| bicubic | – |" in md and "sr-train" in md and info["images"] == 10
    assert "wall time" in md and info["fresh"] is True
    # the perception-distortion plane: a point per arm and seed, bicubic, linked from results.md
    assert info["plane"] == {"png": "plane.png", "csv": "plane.csv"}, info.get("plane")
    assert (root / "plane.png").is_file() and "[plane.png](plane.png)" in md
    points = [r for r in read_points_csv(root / "plane.csv") if r["kind"] == "point"]
    assert {r["label"] for r in points} >= {"bicubic"} | {
        f"{row['arm']}/seed_0" for row in info["table"][1:]
    }

    ckpts = sorted(tmp_path.glob("**/checkpoints/last.ckpt"))
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    again = sr_study(study, "preset=smoke", f"out={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    for job in plan.jobs.values():
        assert f"{job.kind} {job.name} seed 0: finished before, skipping" in again.stdout
    assert "training" not in again.stdout
    assert [p.stat().st_mtime_ns for p in ckpts] == mtimes
    assert results(root)["fresh"] is False


@pytest.mark.slow
def test_a_warm_start_is_trained_once_for_two_studies(tmp_path):
    first = sr_study("downsample", "preset=smoke", f"out={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    warm = sorted((tmp_path / "warm_starts").glob("psnr-*/seed_0/checkpoints/last.ckpt"))
    assert len(warm) == 1
    stamp = warm[0].stat().st_mtime_ns
    second = sr_study("translational", "preset=smoke", f"out={tmp_path}", "train=false")
    assert "warm psnr seed 0: finished before, skipping" in second.stdout
    assert warm[0].stat().st_mtime_ns == stamp
    assert (
        "Warm start `psnr`: trained once per seed"
        in (tmp_path / "downsample" / "smoke" / "results.md").read_text()
    )


MINE = """
claim: L1 beats bicubic.
common: [model=edsr_baseline, logger=none, val.save_images=0, "loss=[l1]",
         trainer.enable_progress_bar=false, trainer.enable_model_summary=false]
presets:
  smoke:
    seeds: 1
    overrides: [model.preset=small, trainer=cpu, data.patch_size=32, data.batch_size=2,
                data.iters_per_epoch=2, trainer.max_steps=2, data.num_workers=0]
arms:
  good: []
  broken: [model.preset=nope]
eval: {metrics: [psnr_y]}
criteria:
  - {id: beats, left: {arm: good, metric: psnr_y}, op: ">", right: {arm: bicubic, metric: psnr_y}}
  - {id: broken_failed, left: {arm: broken, status: true}, op: "==", right: {value: failed}}
"""


@pytest.mark.slow
def test_a_user_study_with_a_failed_job_and_an_interrupted_one(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "mine.yaml").write_text(MINE)
    root = work / "studies" / "mine" / "smoke"
    # train=false trains nothing: no run is finished, so nothing is measured.
    dry = sr_study("mine.yaml", "preset=smoke", "train=false", cwd=work)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "train=false: 2 job(s) not trained" in dry.stdout
    assert results(root)["verdict"] == "inconclusive"

    first = sr_study("mine.yaml", "preset=smoke", cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    info = results(root)
    assert info["statuses"] == {"good": {"0": "finished"}, "broken": {"0": "failed"}}
    record = json.loads((root / "runs" / "broken" / "seed_0" / "study_run.json").read_text())
    assert "has no preset 'nope'" in record["error"]
    verdicts = {c["id"]: c["verdict"] for c in info["criteria"]}
    assert verdicts["broken_failed"] == "pass"
    assert "seed 0: failed" in (root / "results.md").read_text()

    # An interrupted job (no summary.json yet, a checkpoint) continues from its last state.
    (root / "runs" / "good" / "seed_0" / "summary.json").unlink()
    again = sr_study("mine.yaml", "preset=smoke", cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "arm good seed 0: interrupted before, resuming from its last checkpoint" in again.stdout
    assert "arm broken seed 0: failed before" in again.stdout
    summary = json.loads((root / "runs" / "good" / "seed_0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iteration"] == 2
    plan = json.loads((root / "launch" / "plan.json").read_text())
    assert [j["id"] for j in plan["jobs"]] == ["arm:good:0"]
    assert f"resume={root / 'runs' / 'good' / 'seed_0'}" in plan["jobs"][0]["overrides"]


EVIL = MINE.replace(
    '"loss=[l1]",',
    '"loss=[l1]", "+callbacks.evil._target_=shutil.copyfile", '
    '"+callbacks.evil._args_=[SRC,MARKER]",',
)


@pytest.mark.slow
def test_a_study_file_that_names_code_runs_nothing_unless_trusted(tmp_path):
    marker = tmp_path / "MARKER"
    src = tmp_path / "secret.txt"
    src.write_text("secret")
    (tmp_path / "evil.yaml").write_text(
        EVIL.replace("SRC", str(src)).replace("MARKER", str(marker))
    )
    refused = sr_study("evil.yaml", "preset=smoke", cwd=tmp_path)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert (
        "evil.yaml common: override '+callbacks.evil._target_=shutil.copyfile' is refused" in line
    )
    assert not marker.exists() and not (tmp_path / "studies").exists()
    # The user's own opt-in on their command line lets the file through (and its code runs).
    trusted = sr_study("evil.yaml", "preset=smoke", "trust_study=true", cwd=tmp_path)
    assert marker.exists(), trusted.stdout[-2000:]


@pytest.mark.slow
def test_three_seeds_give_intervals_and_the_joblib_launcher_runs_the_jobs(tmp_path):
    run = sr_study(
        "catalogue",
        "preset=smoke",
        "seeds=3",
        f"out={tmp_path}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    info = results(tmp_path / "catalogue" / "smoke")
    assert info["seeds"] == [0, 1, 2]
    log = (tmp_path / "catalogue" / "smoke" / "launch" / "train.log").read_text()
    assert "Joblib.Parallel" in log or "joblib" in log.lower()
    for row in info["table"]:
        if row["arm"] == "bicubic":
            continue
        cell = row["metrics"]["psnr_y"]
        assert cell["seeds"]["n"] == 3 and cell["seeds"]["lo"] <= cell["seeds"]["hi"]
        assert cell["images"]["n"] == 10
    for crit in info["criteria"]:
        assert crit["seed_interval"]["n"] == 3
