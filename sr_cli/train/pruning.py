"""Optuna pruning for ``hparams_search=optuna``, fed from validation.

A job may run in another process, or on another machine, than the sweeper (joblib, submitit),
away from the sweeper's study, so the job decides itself, with Optuna's own pruners:
:class:`SweepPruning` is a Lightning callback that, after every validation, rebuilds an in-memory
study from the sweep folder on disk:

* every sibling job that finished: a ``COMPLETE`` trial with its objective and, as intermediate
  values, its validation curve (``optimized_metric`` per iteration in its ``metrics.csv``);
* every sibling job that was pruned: a ``PRUNED`` trial with its curve;
* (running, failed and preempted siblings are left out: their curves are incomplete);

then asks the study for a trial for this job, reports this job's own validations so far
(``trial.report(value, iteration)``) and asks the configured pruner ``trial.should_prune()``.

When the pruner says so, the callback stops training cleanly (``trainer.should_stop``; the
checkpoint callback has already written ``last.ckpt`` for this validation), records
``pruned`` in the job's ``job_status.json`` (so the sweep summary shows status ``pruned``) and
the run's ``summary.json`` says ``"status": "pruned"``.

What the sweeper sees (:mod:`sr_cli.train.optuna_sweeper`): the job returns normally, with its
last validation value of ``optimized_metric``; the sweeper reads ``pruned`` from the job's record
and tells Optuna the trial was pruned, with the job's validation curve as its intermediate
values, which is what the sampler then learns from.

Config (``conf/train.yaml``, turned on by ``conf/hparams_search/optuna.yaml``)::

    pruning:
      enabled: true
      direction: null          # null: hydra.sweeper.direction (else maximize/minimize)
      pruner: {_target_: optuna.pruners.MedianPruner, n_startup_trials: 2, n_warmup_steps: 0}
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from sr_cli.errors import ConfigError
from sr_cli.train.sweep import read_curve

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")


def sibling_trials(sweep_dir: Path, own_job_dir: Path, metric: str) -> list[Any]:
    """Frozen Optuna trials of the finished and pruned jobs of ``sweep_dir`` (not this one)."""
    import optuna
    from optuna.trial import TrialState

    from sr_cli.train.sweep import STATUS_FILE, _job_folders, _read_json

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    trials: list[Any] = []
    if not Path(sweep_dir).is_dir():
        return trials
    own = Path(own_job_dir).resolve()
    for job in _job_folders(Path(sweep_dir)):
        if job.resolve() == own:
            continue
        record = _read_json(job / STATUS_FILE) or {}
        status = record.get("status")
        if status not in ("finished", "pruned"):
            continue
        curve = read_curve(Path(record.get("run_dir") or job), metric)
        if not curve:
            continue
        last = curve[max(curve)]
        if status == "finished":
            value = record.get("objective")
            value = float(value) if isinstance(value, (int, float)) else last
            state = TrialState.COMPLETE
        else:
            value, state = None, TrialState.PRUNED
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=value,
                intermediate_values=curve,
            )
        )
    return trials


def should_prune(
    pruner: Any, direction: str, siblings: list[Any], own_curve: dict[int, float]
) -> bool:
    """Whether ``pruner`` prunes a trial with ``own_curve`` among ``siblings`` (a fresh in-memory
    study holds them)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(direction=direction, pruner=pruner)
    for trial in siblings:
        study.add_trial(trial)
    trial = study.ask()
    for step, value in sorted(own_curve.items()):
        trial.report(value, step)
    return bool(trial.should_prune())


def build_pruner(node: Any) -> Any:
    """The configured Optuna pruner (``pruning.pruner``), checked to be one."""
    import optuna
    from hydra.utils import instantiate

    if not node or "_target_" not in node:
        raise ConfigError(
            "pruning.pruner must name an Optuna pruner, e.g. "
            "pruning.pruner._target_=optuna.pruners.MedianPruner"
        )
    target = str(node["_target_"])
    if not target.startswith("optuna.pruners."):
        raise ConfigError(
            f"pruning.pruner._target_={target} is not an Optuna pruner; use one of "
            "optuna.pruners.* (MedianPruner, PercentilePruner, SuccessiveHalvingPruner, ...)"
        )
    pruner = instantiate(node, _convert_="all")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"pruning.pruner._target_={target} is not an Optuna pruner")
    return pruner


class SweepPruning(pl.Callback):
    """Stop a sweep job when an Optuna pruner, given its siblings' curves, says so.

    Args:
        sweep_dir: the multirun folder that holds the job folders.
        job_dir: this job's Hydra folder (where ``job_status.json`` goes).
        monitor: the validation metric (``optimized_metric``, e.g. ``val/psnr_y``).
        direction: ``maximize`` or ``minimize``.
        pruner: an ``optuna.pruners.BasePruner``.
    """

    def __init__(
        self, sweep_dir: Path, job_dir: Path, monitor: str, direction: str, pruner: Any
    ) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(
                f"pruning.direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}"
            )
        self.sweep_dir = Path(sweep_dir)
        self.job_dir = Path(job_dir)
        self.monitor = monitor
        self.direction = direction
        self.pruner = pruner
        self.curve: dict[int, float] = {}
        self.pruned: dict | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # A resumed job starts from the validations it already logged.
        log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
        if log_dir:
            self.curve.update(read_curve(Path(log_dir), self.monitor))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"pruning: validation logged no {self.monitor} (optimized_metric); pick one that "
                "metrics.csv has, or add it with val.extra_metrics=[...]"
            )
        step = int(getattr(pl_module, "iteration", trainer.global_step))
        self.curve[step] = float(value)
        prune, siblings = False, []
        if trainer.is_global_zero:  # one process decides, every process stops (DDP)
            siblings = sibling_trials(self.sweep_dir, self.job_dir, self.monitor)
            prune = should_prune(self.pruner, self.direction, siblings, self.curve)
        if not trainer.strategy.broadcast(prune, src=0):
            return
        self.pruned = {"iteration": step, "value": float(value)}
        if trainer.is_global_zero:
            log.info(
                "pruned by %s at iteration %d (%s=%.4f, %d sibling trials)",
                type(self.pruner).__name__,
                step,
                self.monitor,
                float(value),
                len(siblings),
            )
            from sr_cli.train.sweep import record_job

            record_job(self.job_dir, pruned=self.pruned)
        trainer.should_stop = True


def pruning_callback(cfg: Any, output_dir: Path) -> SweepPruning | None:
    """The callback when ``pruning.enabled`` is set in a multirun job (``None`` otherwise)."""
    from omegaconf import OmegaConf

    if not OmegaConf.select(cfg, "pruning.enabled", default=False):
        return None
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        sweep_dir, job_dir = Path(hydra.sweep.dir), Path(hydra.runtime.output_dir)
        if str(hydra.mode) != "RunMode.MULTIRUN":  # a single run: its folder's siblings
            sweep_dir = job_dir.parent
        default_direction = hydra.sweeper.get("direction") if "sweeper" in hydra else None
    except ValueError:  # no Hydra (a direct train(cfg) call): the run folder is the job's
        sweep_dir, job_dir, default_direction = output_dir.parent, output_dir, None
    direction = OmegaConf.select(cfg, "pruning.direction") or default_direction or "maximize"
    if isinstance(direction, (list, tuple)):
        raise ConfigError("pruning works with one objective; hydra.sweeper.direction is a list")
    direction = str(getattr(direction, "name", direction)).lower()
    return SweepPruning(
        sweep_dir=sweep_dir,
        job_dir=job_dir,
        monitor=str(cfg.get("optimized_metric") or "val/psnr_y"),
        direction=direction,
        pruner=build_pruner(OmegaConf.select(cfg, "pruning.pruner")),
    )


def pruned_status(trainer: pl.Trainer) -> dict | None:
    """``{"iteration", "value"}`` when the run's :class:`SweepPruning` pruned it."""
    for cb in trainer.callbacks:
        if isinstance(cb, SweepPruning) and cb.pruned:
            return cb.pruned
    return None
