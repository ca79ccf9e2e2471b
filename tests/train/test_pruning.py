"""Optuna pruning fed from validation: the siblings' curves in the sweep folder decide."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from sr_cli.errors import ConfigError
from sr_cli.train.pruning import build_pruner, read_curve, should_prune, sibling_trials

METRIC = "val/psnr_y"


def _job(sweep: Path, num: int, status: str, curve: dict[int, float], objective=None) -> Path:
    """A job folder as a sweep leaves it: job_status.json and the run's metrics.csv."""
    job = sweep / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    with (job / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss", METRIC])
        w.writeheader()
        for step, value in sorted(curve.items()):
            # Lightning's step of iteration N's rows is N - 1
            w.writerow({"epoch": 0, "step": step - 1, "train/loss": 0.1})
            w.writerow({"epoch": 0, "step": step - 1, METRIC: value})
    record = {"num": num, "status": status, "run_dir": str(job)}
    if objective is not None:
        record["objective"] = objective
    (job / "job_status.json").write_text(json.dumps(record))
    return job


def _median(startup: int = 2, warmup: int = 0):
    return build_pruner(
        {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": startup,
            "n_warmup_steps": warmup,
        }
    )


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "finished", {2: 20.0, 4: 22.0}, objective=22.0)
    _job(sweep, 1, "finished", {2: 21.0, 4: 23.0}, objective=23.0)
    _job(sweep, 2, "finished", {2: 22.0, 4: 24.0}, objective=24.0)
    _job(sweep, 3, "pruned", {2: 5.0})
    _job(sweep, 4, "failed", {2: 1.0})
    _job(sweep, 5, "running", {2: 1.0})
    own = sweep / "6_job"
    (own / ".hydra").mkdir(parents=True)
    return sweep, own


def test_curves_and_sibling_states_come_from_the_sweep_folder(sweep):
    sweep, own = sweep
    assert read_curve(sweep / "0_job", METRIC) == {2: 20.0, 4: 22.0}
    trials = sibling_trials(sweep, own, METRIC)
    states = [t.state for t in trials]
    # finished -> COMPLETE with its objective, pruned -> PRUNED; failed and running left out
    assert states == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED]
    assert [t.value for t in trials[:3]] == [22.0, 23.0, 24.0]
    assert trials[1].intermediate_values == {2: 21.0, 4: 23.0}


def test_median_pruner_prunes_a_curve_below_the_median_of_finished_siblings(sweep):
    sweep, own = sweep
    siblings = sibling_trials(sweep, own, METRIC)
    # the median of the finished ones at iteration 2 is 21.0
    assert should_prune(_median(), "maximize", siblings, {2: 15.0})
    assert should_prune(_median(), "maximize", siblings, {2: 20.9})
    assert not should_prune(_median(), "maximize", siblings, {2: 21.5})
    # minimising, the same low curve is the best one
    assert not should_prune(_median(), "minimize", siblings, {2: 15.0})
    assert should_prune(_median(), "minimize", siblings, {2: 21.5})
    # at iteration 4 the median is 23.0
    assert should_prune(_median(), "maximize", siblings, {2: 21.5, 4: 22.5})


def test_median_pruner_waits_for_startup_trials_and_warmup(sweep):
    sweep, own = sweep
    siblings = sibling_trials(sweep, own, METRIC)
    assert not should_prune(_median(startup=4), "maximize", siblings, {2: 1.0})  # 3 finished
    assert not should_prune(_median(warmup=3), "maximize", siblings, {2: 1.0})
    assert should_prune(_median(warmup=3), "maximize", siblings, {2: 1.0, 4: 1.0})
    one = [t for t in siblings if t.state == optuna.trial.TrialState.COMPLETE][:1]
    assert not should_prune(_median(), "maximize", one, {2: 1.0})


def test_the_pruner_must_be_an_optuna_pruner():
    with pytest.raises(ConfigError, match="pruning.pruner._target_=torch.nn.Linear"):
        build_pruner({"_target_": "torch.nn.Linear"})
    with pytest.raises(ConfigError, match="pruning.pruner must name"):
        build_pruner(None)
    pruner = build_pruner({"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0})
    assert isinstance(pruner, optuna.pruners.PercentilePruner)


def _tiny_pruned_run(tiny_cfg, sweep: Path, val_subset, *extra: str):
    from sr_cli.train.training import train

    cfg = tiny_cfg(
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
        "trainer.max_steps=6",
        "pruning.enabled=true",
        *extra,
        out=sweep / "9_job",
    )
    return train(cfg)


def test_a_training_job_below_its_siblings_stops_pruned_with_last_ckpt(
    tmp_path, tiny_cfg, val_subset
):
    sweep = tmp_path / "sweep"
    for num in range(3):  # siblings far better than a 2-iteration model can be
        _job(sweep, num, "finished", {2: 60.0, 4: 61.0, 6: 62.0}, objective=62.0)
    metrics, objects = _tiny_pruned_run(tiny_cfg, sweep, val_subset)
    out = objects["output_dir"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "pruned"
    assert summary["iteration"] == 2 and summary["pruned"]["iteration"] == 2
    assert summary["pruned"]["value"] == pytest.approx(metrics[METRIC])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    record = json.loads((out / "job_status.json").read_text())
    assert record["pruned"]["iteration"] == 2
    # the job's own curve, as the next job will read it
    assert list(read_curve(out, METRIC)) == [2]


def test_a_training_job_above_its_siblings_runs_to_the_end(tmp_path, tiny_cfg, val_subset):
    sweep = tmp_path / "sweep"
    for num in range(3):  # siblings worse than any run
        _job(sweep, num, "finished", {2: 1.0, 4: 1.0, 6: 1.0}, objective=1.0)
    _, objects = _tiny_pruned_run(tiny_cfg, sweep, val_subset)
    out = objects["output_dir"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iteration"] == 6
    assert "pruned" not in summary
    assert list(read_curve(out, METRIC)) == [2, 4, 6]


@pytest.mark.slow
def test_optuna_sweep_prunes_the_third_trial_for_real(tmp_path, val_subset):
    """3 sequential trials of hparams_search=optuna; MedianPruner (2 startup trials) compares the
    third with the first two at its first validation. With seed=0 TPE's random start gives the
    third a lower learning rate (7.5e-5 vs 1.25e-4) and a 10x larger GAN weight: it is behind."""
    import yaml

    from tests.commands.test_sr_train import run_cli
    from tests.train.test_sweeps import TINY_SWEEP, _rows, _sweep_dir

    result = run_cli(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=1",
            "seed=0",
            *TINY_SWEEP,
            "trainer.max_steps=4",
            f"data.val_dir={val_subset}",
        ],
        tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    rows = _rows(sweep)
    assert [(r["status"], r["iterations"]) for r in rows] == [
        ("finished", "4"),
        ("finished", "4"),
        ("pruned", "2"),
    ]
    curves = [read_curve(sweep / r["run_dir"], METRIC) for r in rows]
    assert [sorted(c) for c in curves] == [[2, 4], [2, 4], [2]]
    # the rule MedianPruner applies: below the median of the finished trials at iteration 2
    median = (curves[0][2] + curves[1][2]) / 2
    assert curves[2][2] < median
    pruned = rows[2]
    assert pruned["error"] == "pruned at iteration 2"
    run = sweep / pruned["run_dir"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "pruned"
    # the job returned its last value; the sweeper told Optuna the trial was pruned, with the
    # job's curve (the study is in optuna.db in the sweep folder)
    assert float(pruned["objective"]) == pytest.approx(curves[2][2], abs=1e-4)
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2 + [
        optuna.trial.TrialState.PRUNED
    ]
    assert study.trials[2].intermediate_values == pytest.approx(curves[2], abs=1e-4)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(float(r["objective"]) for r in rows))
    assert "3 jobs: 2 finished, 1 pruned" in (sweep / "summary.md").read_text()
