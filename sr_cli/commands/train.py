"""Console entry points.

``sr-train`` accepts every Hydra override, plus the shorthand ``loss=a+b`` for selecting several
loss terms (rewritten to Hydra's ``loss=[a,b]``, also inside sweeps: ``-m loss=l1,a+b``).
User errors (bad option, bad file, diverged loss) print one clear message and exit with 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sr_cli.config import (
    SWEEP_KEYS_ENV,
    config_dir,
    register_resolvers,
    rewrite_overrides,
    sweep_keys,
    unknown_list_members,
)
from sr_cli.environment import quiet_startup
from sr_cli.errors import exit_on_hydra_user_error, exit_on_user_error

log = logging.getLogger("sr_cli")


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_task(cfg: DictConfig) -> float | None:
    from sr_cli.train.lit.callbacks import TrainingInterrupted
    from sr_cli.train.training import run

    quiet_startup()
    try:
        if _is_multirun():  # a failed job must fail the sweep, with its traceback
            metrics, objects = run(cfg)
        else:
            with exit_on_user_error("sr-train"):
                metrics, objects = run(cfg)
    except TrainingInterrupted as stop:
        print(f"sr-train: {stop}", file=sys.stderr)
        _after_stop(stop)
        sys.exit(stop.exit_code)
    finally:
        _close_process_group()
    from sr_cli.train import sweep

    sweep.last_run_dir = Path(objects["output_dir"])
    summary = Path(objects["output_dir"]) / "summary.json"
    if cfg.trainer.get("enable_progress_bar", True) and summary.is_file():
        from sr_cli.train.lit.progress import print_run_end

        print_run_end(json.loads(summary.read_text()))
    return metrics.get(cfg.get("optimized_metric", "val/psnr_y"))


def _close_process_group() -> None:
    """End DDP's process group with the job (Lightning leaves it open): a gloo group still alive
    when the interpreter exits can abort the process ("terminate called without an active
    exception", exit -6) after the run has finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _after_stop(stop) -> None:
    """A stopped sweep job gets its row in the sweep summary (the process exits here, before
    Hydra's job callbacks run); under SLURM, SIGUSR1 requeues the job once last.ckpt is saved."""
    from sr_cli.train import slurm, sweep

    if _is_multirun() and slurm._global_rank() == 0:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        run_dir = Path(stop.checkpoint).parent.parent if stop.checkpoint else None
        try:
            sweep.record_preempted(Path(hc.runtime.output_dir), stop.signum, run_dir)
            sweep.write_summary(hc.sweep.dir)
        except Exception as exc:  # the summary never hides the stop
            log.warning("could not update the sweep summary: %s", exc)
    if stop.checkpoint is not None:
        slurm.requeue_after(stop.signum)


#: Launcher / sweeper plugins: the option that picks them, their module and their pip package.
PLUGINS = {
    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}


def missing_plugin(args: list[str]) -> str | None:
    """One line naming the pip package when ``cluster=``/``hydra/launcher=``/``hydra/sweeper=``/
    ``hparams_search=optuna`` picks a Hydra plugin that is not installed."""
    import importlib.util

    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") not in ("cluster", "hydra/launcher", "hydra/sweeper", "hparams_search"):
            continue
        name = "optuna" if value.startswith("optuna") else value
        if name not in PLUGINS:
            continue
        module, package = PLUGINS[name]
        if importlib.util.find_spec(module) is None:
            return (
                f"sr-train: {arg} needs the Hydra plugin {package}, which is not installed; "
                f"install it with `pip install {package}`."
            )
    return None


def train_main() -> None:
    """``sr-train [overrides...]``: train a model (see ``conf/train.yaml``)."""
    register_resolvers()
    from sr_cli.train.slurm import set_run_id

    set_run_id()
    args = rewrite_overrides(sys.argv[1:])
    problem = unknown_list_members(args) or missing_plugin(args)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]
    if "-m" in args or "--multirun" in args:
        import os

        os.environ[SWEEP_KEYS_ENV] = ",".join(sweep_keys(args))
    with exit_on_hydra_user_error():
        _train_task()


if __name__ == "__main__":  # python -m sr_cli.commands.train
    train_main()
