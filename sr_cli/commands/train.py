"""``sr-train [overrides...]``: train a model (see ``conf/train.yaml``); the training itself is
:mod:`sr_cli.train` (:func:`sr_cli.train.task.run`).

``sr-train`` accepts every Hydra override, plus the shorthand ``loss=a+b`` for selecting several
loss terms (rewritten to Hydra's ``loss=[a,b]``, also inside sweeps: ``-m loss=l1,a+b``).
User errors (bad option, bad file, diverged loss) print one clear message and exit with 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sr_cli.config import (
    SWEEP_KEYS_ENV,
    config_dir,
    is_multirun,
    register_resolvers,
    rewrite_overrides,
    sweep_keys,
    unknown_list_members,
)
from sr_cli.environment import quiet_startup
from sr_cli.errors import exit_on_hydra_user_error, exit_on_user_error


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_task(cfg: DictConfig) -> float | None:
    from sr_cli.train.lit.callbacks import TrainingInterrupted
    from sr_cli.train.task import after_stop, close_process_group, run

    quiet_startup()
    try:
        if is_multirun():  # a failed job must fail the sweep, with its traceback
            metrics, objects = run(cfg)
        else:
            with exit_on_user_error("sr-train"):
                metrics, objects = run(cfg)
    except TrainingInterrupted as stop:
        print(f"sr-train: {stop}", file=sys.stderr)
        after_stop(stop)
        sys.exit(stop.exit_code)
    finally:
        close_process_group()
    if objects.get("stages"):
        draw_stage_plane(objects["stages"], Path(objects["output_dir"]))
    from sr_cli.train import sweep

    sweep.last_run_dir = Path(objects["output_dir"])
    summary = Path(objects["output_dir"]) / "summary.json"
    if cfg.trainer.get("enable_progress_bar", True) and summary.is_file():
        from sr_cli.train.lit.progress import print_run_end

        print_run_end(json.loads(summary.read_text()))
    return metrics.get(cfg.get("optimized_metric", "val/psnr_y"))


def draw_stage_plane(records: list[dict], root: Path) -> None:
    """``stages=N``: the stages as a path through the perception-distortion plane
    (``plane.png`` and ``plane.csv`` beside ``stages.md``)."""
    from sr_cli.report.plane import PlanePoint, draw_plane
    from sr_cli.train.stages import plane_points

    points = [PlanePoint(label, niqe, rmse) for label, niqe, rmse in plane_points(records)]
    try:
        draw_plane(
            points,
            root / "plane.png",
            root / "plane.csv",
            path=True,
            title="Stages through the perception-distortion plane (validation)",
        )
    except Exception as exc:  # a picture never costs the user the run
        print(f"sr-train: could not draw the stages' plane: {exc}", file=sys.stderr)


#: Launcher / sweeper plugins: the option that picks them, their module and their pip package.
#: (``hparams_search=optuna`` is sr-cli's own sweeper, installed with it.)
PLUGINS = {
    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}


def missing_plugin(args: list[str]) -> str | None:
    """One line naming the pip package when ``cluster=``/``hydra/launcher=``/``hydra/sweeper=``
    picks a Hydra plugin that is not installed."""
    import importlib.util

    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") not in ("cluster", "hydra/launcher", "hydra/sweeper"):
            continue
        name = "optuna" if value.startswith("optuna") else value
        if name not in PLUGINS:
            continue
        module, package = PLUGINS[name]
        if importlib.util.find_spec(module) is None:
            hint = " (or use sr-cli's own: hparams_search=optuna)" if name == "optuna" else ""
            return (
                f"sr-train: {arg} needs the Hydra plugin {package}, which is not installed; "
                f"install it with `pip install {package}`{hint}."
            )
    return None


def register_sweeper() -> None:
    """Register sr-cli's sweepers (Optuna searches, studies) with Hydra. Hydra finds plugins by
    listing the ``hydra_plugins`` folders on ``sys.path``, and an editable install's import hook
    is not one."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.sr_cli_study_sweeper.study_sweeper import StudySweeper
    from hydra_plugins.sr_cli_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)
    Plugins.instance().register(StudySweeper)


def train_main() -> None:
    """``sr-train [overrides...]``: train a model (see ``conf/train.yaml``)."""
    register_resolvers()
    register_sweeper()
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
