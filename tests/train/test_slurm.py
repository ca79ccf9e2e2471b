"""SLURM requeue, for real: a real ``sr-train`` process with the SLURM environment variables of a
batch job, a real SIGUSR1, and a stand-in ``scontrol`` executable (first on PATH) that records
its arguments. The requeued job is the same command in the same environment."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from sr_cli.train.slurm import cluster_plugins, slurm_job_id
from tests.commands.test_sr_train import SR_TRAIN, TINY_CLI
from tests.train.test_run_safety import _wait_for as wait_for

JOB_ID = "4242"
ARGS = [
    "experiment=demo",
    "model.pretrained=null",
    *TINY_CLI,
    "loss=[l1]",
    "val.save_images=0",
    "data.iters_per_epoch=2",
    "trainer.max_steps=12",
]


def _iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["sr_cli"]["iteration"])


def slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A single-task SLURM batch job's variables, and ``scontrol`` that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "SLURM", "SR_CLI"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        SCONTROL_LOG=str(tmp_path / "scontrol.log"),
        PYTHONUNBUFFERED="1",
        SLURM_JOB_ID=JOB_ID,
        SLURM_JOB_NAME="sr-train",
        SLURM_NTASKS="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_NNODES="1",
        SLURM_NODELIST="localhost",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
    )
    env.update(extra)
    return env


def test_job_id_and_detection_follow_lightnings_rules(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM"):
            monkeypatch.delenv(key)
    assert slurm_job_id() is None and cluster_plugins() == []
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert slurm_job_id() == "77"
    (env,) = cluster_plugins()
    assert type(env).__name__ == "SLURMEnvironment" and env.auto_requeue is False
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "70_3"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # srun --job-name=interactive bash
    assert slurm_job_id() is None and cluster_plugins() == []


@pytest.mark.slow
def test_sigusr1_saves_requeues_and_the_requeued_job_continues(tmp_path, val_subset):
    env = slurm_env(tmp_path)
    args = [*ARGS, f"data.val_dir={val_subset}"]
    run_dir = tmp_path / "outputs" / "esrgan_l1" / f"slurm-{JOB_ID}"  # keyed on the job id
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [SR_TRAIN, *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(last, proc)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "stopped by SIGUSR1" in err
    stopped = _iteration(last)
    assert 2 <= stopped < 12
    assert (tmp_path / "scontrol.log").read_text().split("\n") == [f"requeue {JOB_ID}", ""]
    # one state file, ours: no Lightning hpc checkpoint anywhere
    assert not list(tmp_path.rglob("hpc_ckpt_*.ckpt"))

    # The requeued job: same job id, same command, same environment.
    again = subprocess.run(
        [SR_TRAIN, *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert f"SLURM job {JOB_ID} was requeued" in log
    assert f"resuming from {last} (iteration {stopped})" in log
    assert _iteration(last) == 12
    assert [p.name for p in (tmp_path / "outputs" / "esrgan_l1").iterdir()] == [run_dir.name]
    assert (tmp_path / "scontrol.log").read_text().count("requeue") == 1  # no signal, no requeue


@pytest.mark.slow
def test_outside_slurm_sigusr1_saves_and_stops_without_requeue(tmp_path, val_subset):
    """Without SLURM variables SIGUSR1 saves and exits as before, and nothing calls scontrol."""
    env = {k: v for k, v in slurm_env(tmp_path).items() if not k.startswith("SLURM")}
    run_dir = tmp_path / "plain"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [
            SR_TRAIN,
            *ARGS,
            f"data.val_dir={val_subset}",
            "trainer.max_steps=1000",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(last, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "stopped by SIGUSR1" in err
    assert not (tmp_path / "scontrol.log").exists()


@pytest.mark.parametrize(
    "folder,env,resumes",
    [
        (f"slurm-{JOB_ID}", {"SLURM_JOB_ID": JOB_ID}, True),  # this job's folder
        ("2026-01-01_00-00-00", {"SLURM_JOB_ID": JOB_ID}, False),  # someone else's folder
        ("2026-01-01_00-00-00", {"SLURM_JOB_ID": JOB_ID, "SLURM_RESTART_COUNT": "1"}, True),
        (f"slurm-{JOB_ID}", {}, False),  # outside SLURM nothing changes
        (f"slurm-{JOB_ID}", {"SLURM_JOB_ID": JOB_ID, "SLURM_JOB_NAME": "bash"}, False),
    ],
)
def test_a_requeued_job_continues_its_own_folder(folder, env, resumes, tmp_path, monkeypatch):
    from sr_cli.serialization import atomic_torch_save
    from sr_cli.train.rundir import plan_resume

    for key in list(os.environ):
        if key.startswith("SLURM"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / folder
    atomic_torch_save({"sr_cli": {"iteration": 6}}, run_dir / "checkpoints" / "last.ckpt")
    plan = plan_resume(None, run_dir)
    assert plan.output_dir == run_dir
    if resumes:
        assert plan.checkpoint == str(run_dir / "checkpoints" / "last.ckpt")
        assert plan.iteration == 6
    else:
        assert plan.checkpoint is None


def test_two_node_job_builds_a_trainer_with_slurms_ranks(monkeypatch, tmp_path):
    """cluster=slurm with 2 nodes x 4 devices, as srun starts rank 5 (node 1, local rank 1):
    Lightning's real accelerator connector takes our SLURM environment and its ranks."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from lightning_fabric.plugins.environments import SLURMEnvironment
    from lightning_utilities.core.rank_zero import rank_zero_only

    from sr_cli.config import config_dir

    # Lightning sets the process-wide rank_zero_only.rank to the trainer's rank (5): restored
    # after the test, or later in-process runs would log nothing (rank-zero-only loggers).
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for key in list(os.environ):
        if key.startswith("SLURM"):
            monkeypatch.delenv(key)
    for key, value in dict(
        SLURM_JOB_ID=JOB_ID,
        SLURM_JOB_NAME="sr-train",
        SLURM_NTASKS="8",
        SLURM_NTASKS_PER_NODE="4",
        SLURM_NNODES="2",
        SLURM_NODELIST="node[1-2]",
        SLURM_PROCID="5",
        SLURM_LOCALID="1",
        SLURM_NODEID="1",
        MASTER_ADDR="node1",  # Lightning writes these two: restored after the test
        MASTER_PORT="12910",
    ).items():
        monkeypatch.setenv(key, value)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "cluster=slurm",
                "cluster.nodes=2",
                "cluster.gpus_per_node=4",
                "trainer.accelerator=cpu",  # the test machine has no GPU; the ranks are the point
                f"paths.output_dir={tmp_path}",
            ],
        )
    trainer = instantiate(cfg.trainer, plugins=cluster_plugins(), logger=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
    assert env.main_address == "node1"
