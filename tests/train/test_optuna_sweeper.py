"""sr-cli's Optuna sweeper (hparams_search=optuna): the search space from Hydra's grammar, and a
search whose process dies halfway resuming from its sqlite storage: the finished trials are
kept (never run again), the interrupted one continues with its parameters, the rest are run.

The fast tests run a toy Hydra app (a real Hydra multirun through the sweeper, a real sqlite
storage, a real SIGKILL); the slow one runs sr-train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sr_cli.config import config_dir
from sr_cli.train.optuna_sweeper import ERROR, JOB, RETRY_OF, search_space


def test_search_space_from_hydra_sweeps():
    dims, fixed = search_space(
        [
            "lr=tag(log, interval(1e-5, 1e-3))",
            "w=interval(0.1, 2.0)",
            "n=tag(int, interval(1, 8))",
            "k=range(1, 9, 2)",
            "g=range(0.5, 2.0, 0.5)",
            "loss=choice([l1],[downsample,gan])",
            "tag=choice('a b',3)",
            "seed=3",
            "w=interval(0.2, 1.0)",  # a later override of a key replaces the earlier one
        ]
    )
    assert dims == {
        "lr": FloatDistribution(1e-5, 1e-3, log=True),
        "n": IntDistribution(1, 8),
        "k": IntDistribution(1, 7, step=2),  # range() stops before 9, as Python's
        "g": FloatDistribution(0.5, 1.5, step=0.5),
        "loss": CategoricalDistribution(["[l1]", "[downsample,gan]"]),
        "tag": CategoricalDistribution(["a\\ b", 3]),  # text that parses back to 'a b'
        "w": FloatDistribution(0.2, 1.0),
    }
    assert fixed == ["seed=3"]


# --------------------------------------------------------------------------- toy app
TOY_APP = """
import json, os, signal, sys
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from sr_cli.commands.train import register_sweeper

register_sweeper()

@hydra.main(version_base="1.3", config_path=".", config_name="toy")
def task(cfg):
    num = HydraConfig.get().job.num
    out = Path(HydraConfig.get().runtime.output_dir)
    with (out / "ran.jsonl").open("a") as f:
        f.write(json.dumps({"x": cfg.x, "resume": cfg.resume, "pid": os.getpid()}) + "\\n")
    if num == cfg.kill_at_job and cfg.resume is None:
        os.kill(os.getpid(), signal.SIGKILL)  # the whole search dies in the middle of this job
    if num == cfg.fail_at_job:
        raise ValueError(f"job {num} went wrong")
    return -((cfg.x - 0.3) ** 2)

task()
"""

TOY_CONF = """
defaults:
  - override hydra/sweeper: sr_optuna
  - _self_
x: 0.0
resume: null
kill_at_job: -1
fail_at_job: -1
seed: 0
hydra:
  mode: MULTIRUN
  searchpath: [file://{conf}]
  sweep:
    dir: multirun/toy
    subdir: ${{hydra.job.num}}_toy
  sweeper:
    storage: sqlite:///study.db
    study_name: toy
    n_trials: 3
    sampler:
      _target_: optuna.samplers.RandomSampler
      seed: 0
    params:
      x: interval(0, 1)
"""


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.py").write_text(TOY_APP)
    (tmp_path / "toy.yaml").write_text(TOY_CONF.format(conf=config_dir()))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(tmp_path / "toy.py"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    return run


def _study(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


def _ran(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "ran.jsonl").read_text().splitlines()]


def test_a_killed_search_resumes_from_its_storage(toy, tmp_path):
    first = toy("kill_at_job=2")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    study = _study(tmp_path / "study.db", "toy")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    interrupted = study.trials[2].params

    second = toy()  # the same command, without the kill
    assert second.returncode == 0, second.stderr[-2000:]
    assert "trial 2 (job 2) was interrupted; continuing it" in second.stdout + second.stderr
    study = _study(tmp_path / "study.db", "toy")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    retry = study.trials[3]
    assert retry.params == interrupted
    assert retry.user_attrs[RETRY_OF] == 2 and retry.user_attrs[JOB] == 2
    # the finished jobs ran once; the interrupted one ran again with its parameters, resumed
    sweep = tmp_path / "multirun" / "toy"
    assert [len(_ran(sweep / f"{n}_toy")) for n in range(3)] == [1, 1, 2]
    runs = _ran(sweep / "2_toy")
    assert runs[0]["x"] == runs[1]["x"] == interrupted["x"]
    assert [r["resume"] for r in runs] == [None, "auto"]
    assert not (sweep / "3_toy").exists()
    assert retry.value == pytest.approx(-((interrupted["x"] - 0.3) ** 2))
    results = (sweep / "optimization_results.yaml").read_text()
    assert "complete: 3" in results and "fail: 1" in results

    third = toy()  # nothing left to do
    assert third.returncode == 0, third.stderr[-2000:]
    assert len(_study(tmp_path / "study.db", "toy").trials) == 4
    assert [len(_ran(sweep / f"{n}_toy")) for n in range(3)] == [1, 1, 2]


def test_a_job_error_ends_the_sweep_and_a_rerun_samples_anew(toy, tmp_path):
    first = toy("fail_at_job=1")
    assert first.returncode != 0
    assert "ValueError: job 1 went wrong" in first.stderr
    study = _study(tmp_path / "study.db", "toy")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs[ERROR] == "ValueError: job 1 went wrong"

    second = toy()
    assert second.returncode == 0, second.stderr[-2000:]
    study = _study(tmp_path / "study.db", "toy")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    assert [t.user_attrs[JOB] for t in study.trials] == [0, 1, 2, 3]
    assert all(RETRY_OF not in t.user_attrs for t in study.trials)  # a failed job is not redone


@pytest.mark.parametrize(
    "arg,message",
    [
        ("hydra.sweeper.sampler._target_=os.system", "_target_=os.system is not an Optuna sampler"),
        ("hydra.sweeper.direction=up", "direction must be maximize or minimize, got 'up'"),
        ("hydra.sweeper.n_trials=0", "n_trials must be a whole number >= 1, got 0"),
    ],
)
def test_a_bad_sweeper_setting_is_one_line(toy, tmp_path, arg, message):
    res = toy(arg)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("sr-train: error: hydra.sweeper") and message in line
    assert not (tmp_path / "multirun" / "toy").exists()  # nothing launched


# --------------------------------------------------------------------------- sr-train
@pytest.mark.slow
def test_sr_train_search_killed_after_two_trials_resumes(tmp_path, val_subset):
    """hparams_search=optuna, 3 trials, sqlite storage; SIGKILL while the third trains (after its
    first last.ckpt); the same command again: trials 1-2 are not retrained, the third continues
    from its last.ckpt and the search ends with 3 finished trials."""
    from tests.commands.test_sr_train import SR_TRAIN
    from tests.train.test_sweeps import TINY_SWEEP, _rows

    storage = tmp_path / "search.db"
    args = [
        SR_TRAIN,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{storage}",
        "pruning.enabled=false",
        *TINY_SWEEP,
        "trainer.max_steps=10",
        f"data.val_dir={val_subset}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["OMP_NUM_THREADS"] = "1"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not list(tmp_path.glob("multirun/sweep/*/2_*/checkpoints/last.ckpt")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the third trial never saved a checkpoint"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (sweep,) = (tmp_path / "multirun" / "sweep").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    study = _study(storage, "sweep")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    finished = {
        p: (p / "checkpoints" / "last.ckpt").stat().st_mtime_ns for p in jobs if p.name[0] in "01"
    }
    assert len(finished) == 2

    second = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert [p for p in (tmp_path / "multirun" / "sweep").iterdir()] == [sweep]  # one folder
    study = _study(storage, "sweep")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert study.trials[3].params == study.trials[2].params
    # no retraining of the finished trials; one launch, of job 2
    for job, mtime in finished.items():
        assert (job / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    assert output.count("Launching 1 jobs locally") == 1
    assert "#2 : " in output and "#0 : " not in output and "#1 : " not in output
    # the third trial continued from its checkpoint and reached the end
    assert "trial 2 (job 2) was interrupted; continuing it" in output
    assert "resuming from" in output
    rows = _rows(sweep)
    assert [(r["job"], r["status"], r["iterations"]) for r in rows] == [
        ("0", "finished", "10"),
        ("1", "finished", "10"),
        ("2", "finished", "10"),
    ]
    assert float(rows[2]["objective"]) == pytest.approx(study.trials[3].value, abs=1e-4)
    third_run = sweep / rows[2]["run_dir"]
    steps = [int(r.split(",")[0]) for r in (third_run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps)  # one metrics.csv across the resume, no repeated rows
