"""cluster=... and hparams_search=optuna compose with the launcher/sweeper plugins, one set of fields
feeds both the launcher and the trainer; the sweep summary from crafted job folders."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sr_cli.config import config_dir
from sr_cli.train import sweep
from tests.commands.test_sr_train import SR_TRAIN

HAS_RAY = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None


def compose_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def launcher(cfg) -> dict:
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_fields_feed_the_launcher_and_the_trainer():
    cfg = compose_hydra(
        "cluster=slurm",
        "cluster.nodes=2",
        "cluster.gpus_per_node=4",
        "cluster.partition=gpu",
        "cluster.account=proj1",
        "cluster.timeout_min=720",
    )
    lc = launcher(cfg)
    assert lc["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (lc["nodes"], lc["gpus_per_node"], lc["tasks_per_node"]) == (2, 4, 4)
    assert (lc["partition"], lc["account"], lc["timeout_min"]) == ("gpu", "proj1", 720)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy) == (4, 2, "ddp")
    assert cfg.trainer.accelerator == "gpu" and cfg.resume is None
    # the launcher can be built from it (submitit is installed; nothing is submitted)
    from hydra.utils import instantiate

    built = instantiate(cfg.hydra.launcher)
    assert type(built).__name__ == "SlurmLauncher" and built.params["nodes"] == 2


@pytest.mark.parametrize(
    "name,target,fields",
    [
        ("submitit_local", "submitit_launcher.LocalLauncher", {"gpus_per_node": 0}),
        ("joblib", "joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    ],
)
def test_local_launchers_compose(name, target, fields):
    cfg = compose_hydra(f"cluster={name}")
    lc = launcher(cfg)
    assert lc["_target_"].endswith(target)
    assert {k: lc[k] for k in fields} == fields
    assert cfg.trainer.devices == 1 and cfg.resume is None  # the trainer is left alone


def test_plugins_own_launcher_options_still_work():
    for name in ("joblib", "submitit_local", "submitit_slurm"):
        assert compose_hydra(f"hydra/launcher={name}").hydra.launcher._target_


@pytest.mark.skipif(not HAS_RAY, reason="hydra-ray-launcher is not installed")
def test_ray_composes():
    cfg = compose_hydra("cluster=ray", "cluster.address=auto", "cluster.gpus_per_job=2")
    lc = launcher(cfg)
    assert lc["ray"]["init"]["address"] == "auto" and lc["ray"]["remote"]["num_gpus"] == 2


#: ``make install`` keeps the Ray launcher plugin's wheel here (``pip download --no-deps``): the
#: plugin itself is not installed (it would pull Ray and downgrade cloudpickle), but its config
#: schema is what ``cluster=ray`` must compose against.
RAY_WHEELS = Path(__file__).resolve().parents[2] / ".venv" / "plugin-wheels"


def test_ray_config_composes_against_the_plugins_own_config(tmp_path):
    import zipfile

    wheels = sorted(RAY_WHEELS.glob("hydra_ray_launcher-*.whl"))
    if not wheels:
        pytest.skip(f"no hydra-ray-launcher wheel in {RAY_WHEELS} (made by `make install`)")
    site = tmp_path / "site"
    zipfile.ZipFile(wheels[-1]).extractall(site)
    code = (
        "import json\n"
        "from omegaconf import OmegaConf\n"
        "from tests.train.test_cluster_configs import compose_hydra\n"
        "cfg = compose_hydra('cluster=ray', 'cluster.address=auto', 'cluster.gpus_per_job=2')\n"
        "print(json.dumps(OmegaConf.to_container(cfg.hydra.launcher, resolve=True)))\n"
    )
    # A separate process, so the plugin is not registered in this one.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path.cwd())])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lc = json.loads(out.stdout.strip().splitlines()[-1])
    assert lc["_target_"] == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert lc["ray"]["init"]["address"] == "auto"
    assert lc["ray"]["remote"] == {"num_gpus": 2, "num_cpus": 4}


@pytest.mark.skipif(HAS_RAY, reason="hydra-ray-launcher is installed")
def test_ray_without_its_plugin_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    result = subprocess.run(
        [SR_TRAIN, "-m", "cluster=ray", "loss.l1.weight=1,2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install hydra-ray-launcher" in lines[0], result.stderr
    assert not (tmp_path / "multirun").exists()


def test_optuna_search_space_and_direction():
    cfg = compose_hydra("hparams_search=optuna")
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert sw.direction == "maximize" and cfg.optimized_metric == "val/psnr_y"
    assert sw.sampler._target_ == "optuna.samplers.TPESampler"
    assert set(sw.params) == {"optim.generator.lr", "loss.downsample.weight", "loss.gan.weight"}
    assert list(cfg.loss) == ["downsample", "gan"]
    low = compose_hydra(
        "hparams_search=optuna",
        "optimized_metric=val/lr_consistency_psnr",
        "hydra.sweeper.direction=minimize",
    )
    assert low.hydra.sweeper.direction == "minimize"
    # the grid of loss weights is still there
    grid = compose_hydra("hparams_search=loss_weights")
    assert grid.hydra.sweeper.params["loss.gan.weight"] == "0.001,0.005,0.02"


def test_run_folder_is_keyed_on_the_slurm_job(monkeypatch):
    monkeypatch.setenv("SR_CLI_RUN_ID", "slurm-99")
    cfg = compose_hydra("loss=[l1]")
    assert cfg.hydra.run.dir == "outputs/esrgan_l1/slurm-99"
    assert cfg.hydra.sweep.dir == "multirun/sweep/slurm-99"
    monkeypatch.delenv("SR_CLI_RUN_ID")
    assert compose_hydra("loss=[l1]").hydra.run.dir.startswith("outputs/esrgan_l1/20")


# --------------------------------------------------------------------------- summary
def _job(sweep_dir: Path, name: str, overrides: list[str], metrics: list[dict], **record):
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if metrics:
        keys = sorted({k for row in metrics for k in row})
        with (job / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(metrics)
    if record:
        sweep.record_job(job, **record)
    return job


def test_summary_rows_from_job_folders(tmp_path):
    common = "trainer.max_steps=4"
    _job(
        tmp_path,
        "0_a",
        [common, "lr=1"],
        [
            {"step": 1, "train/loss": 0.5},
            {"step": 1, "val/psnr_y": 20.0, "val/lpips": 0.30, "val/bicubic_psnr_y": 25.0},
            {"step": 3, "val/psnr_y": 22.5, "val/lpips": 0.35, "val/bicubic_psnr_y": 25.0},
        ],
        num=0,
        status="finished",
        objective=22.5,
    )
    (tmp_path / "0_a" / "summary.json").write_text(
        json.dumps({"iteration": 4, "best": {"val/psnr_y": 22.5, "iteration": 4}})
    )
    _job(tmp_path, "1_b", [common, "lr=bad"], [], num=1, status="failed", error="ValueError: x")
    _job(tmp_path, "2_c", [common, "lr=3"], [{"step": 1, "val/psnr_y": 18.0}], num=2)
    (tmp_path / "2_c" / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    _job(tmp_path, "10_d", [common, "lr=4"], [], num=10, status="running")
    sweep.write_summary(tmp_path)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["name"] for r in rows] == ["0_a", "1_b", "2_c", "10_d"]  # by job number
    assert [r["overrides"] for r in rows] == ["lr=1", "lr=bad", "lr=3", "lr=4"]
    assert [r["status"] for r in rows] == ["finished", "failed", "preempted", "running"]
    a = rows[0]
    assert float(a["best val/psnr_y"]) == 22.5 and float(a["best val/lpips"]) == 0.30
    assert a["iterations"] == "4" and a["best_iteration"] == "4" and float(a["objective"]) == 22.5
    assert "best val/bicubic_psnr_y" not in a and "best train/loss" not in a
    assert rows[1]["error"] == "ValueError: x" and rows[2]["iterations"] == "2"
    md = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 1 failed, 1 finished, 1 preempted, 1 running" in md
    assert md.count("\n| ") == 5  # header + 4 rows


def test_cluster_slurm_reaches_sbatch(tmp_path):
    """The real submitit launcher writes the sbatch script; stand-in ``sbatch``/``srun``
    executables (first on PATH) keep a copy of it and nothing is queued anywhere."""
    import stat
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    for name, body in (
        ("sbatch", f'cp "$1" "{script}"\necho "Submitted batch job 777"\n'),
        ("srun", "exit 0\n"),
    ):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n" + body)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "SLURM", "SR_CLI"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(
        [
            SR_TRAIN,
            "-m",
            "cluster=slurm",
            "cluster.partition=gpu",
            "cluster.account=proj1",
            "cluster.nodes=2",
            "cluster.gpus_per_node=4",
            "cluster.timeout_min=720",
            "cluster.setup=[source .venv/bin/activate]",
            "name=two_node",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 120
        while not script.is_file():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < end, "sbatch was not called in 120 s"
            time.sleep(0.2)
        time.sleep(0.5)  # cp has finished writing
    finally:
        proc.kill()
        proc.wait()
    text = script.read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",  # one process per GPU
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --time=720",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --signal=USR2@120",  # submitit's requeue signal, before the time limit
        "source .venv/bin/activate",
        "srun ",
    ):
        assert line in text, line
    assert "multirun/two_node/" in text
