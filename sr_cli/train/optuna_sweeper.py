"""``hparams_search=optuna``: a Hydra sweeper on today's Optuna whose search survives its process.

The study lives in an Optuna storage (default: ``optuna.db`` in the sweep folder, any
``sqlite:///`` or other RDB URL through ``hydra.sweeper.storage``), so a search that stopped
halfway (killed, preempted, out of time) resumes when the same command runs again with the same
storage and study name:

* trials that finished (``COMPLETE``, or ``PRUNED`` by :mod:`sr_cli.train.pruning`) count toward
  ``n_trials`` and are never trained again;
* a trial whose job was interrupted (its sweeper process is gone: the trial is still ``RUNNING``
  in the storage; or the job was stopped by a signal) is marked ``FAIL`` and run again with the
  same parameters, the same job number (so the same job folder) and ``resume=auto``: it continues
  from its ``last.ckpt``;
* the new jobs go to the search's first sweep folder (recorded in the study), numbered after the
  earlier ones, so ``summary.csv`` and the pruner see every trial of the search.

A job that raises marks its trial ``FAIL`` (with the error as the ``sr_cli_error`` user attribute)
and ends the sweep with that error, as with every sr-train sweep; a rerun samples new
parameters in its place. A job that the pruner stopped is told to Optuna as ``PRUNED``, with its
validation curve as intermediate values, so the sampler learns from it as from any pruned trial.

Hydra instantiates only plugins whose class lives under ``hydra_plugins``: the sweeper the configs
name is :class:`hydra_plugins.sr_cli_sweeper.OptunaSweeper`, a subclass of :class:`OptunaSweeper`
(``conf/hydra/sweeper/sr_optuna.yaml``). One sweeper process per study at a time: a rerun treats
the ``RUNNING`` trials of a sweeper process of this host that is gone as interrupted (those of
another host are left alone and counted as running).

The search space is Hydra's sweep grammar, in ``hydra.sweeper.params`` and on the command line:
``choice(a,b)`` (categorical), ``range(1,9,2)`` (integers or a float grid), ``interval(lo,hi)``
(uniform), ``tag(log, interval(lo,hi))`` (log scale), ``tag(int, interval(lo,hi))`` (integers).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from sr_cli.errors import ConfigError, SrCliError, exit_on_user_error

log = logging.getLogger(__name__)

#: Trial user attributes: the Hydra job number (its folder ``<num>_<name>``), the trial whose
#: interrupted job a trial continues, the error of a job that raised, the sweeper that ran it.
JOB = "sr_cli_job"
RETRY_OF = "sr_cli_retry_of"
ERROR = "sr_cli_error"
SWEEPER = "sr_cli_sweeper"
#: Study user attribute: the sweep folder of the search's first run.
SWEEP_DIR = "sr_cli_sweep_dir"
DIRECTIONS = ("maximize", "minimize")


# --------------------------------------------------------------------------- search space
def distribution(override: Any) -> Any:
    """The Optuna distribution of one parsed Hydra sweep override."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    tags = set(getattr(value, "tags", ()) or ())
    if override.is_interval_sweep():
        log_scale = "log" in tags
        if "int" in tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(override.sweep_iterator())
    if override.is_range_sweep() and not value.shuffle and len(values) > 1:
        step = value.step
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=int(step))
        return FloatDistribution(float(min(values)), float(max(values)), step=float(step))
    # Numbers stay numbers; anything else is kept as its override text, which Hydra parses back
    # to the same value (a string with a space, a list of loss terms, a dict).
    return CategoricalDistribution(
        [v if isinstance(v, bool | int | float) else Transformer.str(v) for v in values]
    )


def search_space(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``({key: distribution}, fixed overrides)`` from Hydra overrides: the sweeps become the
    search space, every other override is passed to each job as it is. A later override of a
    key replaces an earlier one (the command line after ``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    dims: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for text, override in zip(overrides, parsed):
        key = override.get_key_element()
        dims.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            dims[key] = distribution(override)
        else:
            fixed[key] = text
    return dims, list(fixed.values())


def param_override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's grammar (a sampled float keeps its full precision)."""
    if isinstance(value, bool) or value is None:
        return f"{key}={'null' if value is None else str(value).lower()}"
    return f"{key}={value}"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- trials
def _sweeper_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _sweeper_gone(trial: Any) -> bool:
    """Whether the sweeper process that launched a ``RUNNING`` trial has ended (this host only;
    a trial without the record, or of another host, counts as alive)."""
    host, _, pid = str(trial.user_attrs.get(SWEEPER, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def job_folder(ret: Any) -> Path | None:
    """The folder of the job behind a Hydra ``JobReturn``."""
    out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    out = out or getattr(ret, "working_dir", None)
    return Path(out) if out else None


def job_record(sweep_dir: Path, num: Any) -> dict:
    """The ``job_status.json`` of job ``num`` of ``sweep_dir`` (``{}`` when there is none)."""
    from sr_cli.train.sweep import STATUS_FILE, _read_json

    if num is None or not Path(sweep_dir).is_dir():
        return {}
    for folder in sorted(Path(sweep_dir).glob(f"{int(num)}_*")):
        record = _read_json(folder / STATUS_FILE) or {}
        if record.get("num") == int(num):
            return record
    return {}


def job_outcome(ret: Any, metric: str) -> tuple[str, float | None, dict[int, float], Any]:
    """``(state, value, curve, error)`` of a launched job: state ``complete``, ``pruned``,
    ``interrupted`` or ``failed``; the curve is its ``metric`` per validation iteration."""
    from hydra.core.utils import JobStatus

    from sr_cli.train.sweep import STATUS_FILE, _read_json, read_curve

    folder = job_folder(ret)
    record = (_read_json(folder / STATUS_FILE) if folder else None) or {}
    run_dir = record.get("run_dir") or folder
    curve = read_curve(Path(run_dir), metric) if run_dir else {}
    if ret.status != JobStatus.COMPLETED:
        exc = ret._return_value
        # (a TrainingInterrupted needs the Lightning wing loaded: no need to load it to ask)
        lit = sys.modules.get("sr_cli.train.lit.callbacks")
        stopped = lit is not None and isinstance(exc, lit.TrainingInterrupted)
        return ("interrupted" if stopped else "failed"), None, curve, exc
    value = ret._return_value
    if record.get("pruned") or record.get("status") == "pruned":
        return "pruned", None, curve, None
    if not isinstance(value, (int, float)) or math.isnan(float(value)):
        return "failed", None, curve, ConfigError(f"the job returned no {metric} ({value!r})")
    return "complete", float(value), curve, None


class OptunaSweeper(Sweeper):
    """Hydra sweeper: Optuna's ask-and-tell over the configured launcher, batches of ``n_jobs``.

    Args:
        sampler: an ``optuna.samplers`` ``_target_`` node (``null``: Optuna's default, TPE).
        direction: ``maximize`` or ``minimize`` the value each job returns (``optimized_metric``).
        storage: an Optuna storage URL (``sqlite:///path.db``), ``null``: in memory (no resume).
        study_name: the study in that storage; the same name resumes it.
        n_trials: finished trials (complete or pruned) the study should hold in the end.
        n_jobs: trials launched at once (with ``cluster=joblib|slurm|...``).
        params: the search space, ``{key: sweep}`` in Hydra's grammar.
    """

    def __init__(
        self,
        sampler: Any = None,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: Any = None,
    ) -> None:
        # (checked in sweep(), where a bad value is one line for the user, not Hydra's report)
        self.sampler_cfg = sampler
        self.direction = str(direction).lower()
        self.storage = str(storage) if storage else None
        self.study_name = str(study_name) if study_name else None
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params or {}
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ----------------------------------------------------------------- study
    def _sampler(self) -> Any:
        import optuna
        from hydra.utils import instantiate

        node = self.sampler_cfg
        if not node:
            return None
        if isinstance(node, optuna.samplers.BaseSampler):
            return node
        target = str(node.get("_target_", ""))
        if not target.startswith("optuna.samplers."):
            raise ConfigError(
                f"hydra.sweeper.sampler._target_={target or '(none)'} is not an Optuna sampler; "
                "use one of optuna.samplers.* (TPESampler, RandomSampler, CmaEsSampler, ...)"
            )
        sampler = instantiate(node, _convert_="all")
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ConfigError(f"hydra.sweeper.sampler._target_={target} is not an Optuna sampler")
        return sampler

    def _open_study(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.storage and self.storage.startswith("sqlite:///"):
            Path(self.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.create_study(
                storage=self.storage,
                study_name=self.study_name,
                sampler=self._sampler(),
                direction=self.direction,
                load_if_exists=True,
            )
        except SrCliError:
            raise
        except ValueError as exc:  # e.g. the stored study optimizes the other direction
            raise ConfigError(f"hydra.sweeper: study {self.study_name!r}: {exc}") from None

    def _sweep_dir(self, study: Any) -> Path:
        """The search's sweep folder: the one recorded in the study when it still exists (a
        resumed search keeps its jobs together), else this run's, recorded for the next."""
        assert self.config is not None
        here = Path(str(self.config.hydra.sweep.dir)).absolute()
        recorded = study.user_attrs.get(SWEEP_DIR)
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
        study.set_user_attr(SWEEP_DIR, str(here))
        return here

    def _recover(self, study: Any, sweep_dir: Path) -> None:
        """Settle the trials a sweeper that is gone left ``RUNNING`` (from their job records: a
        job that finished is told as such, any other is interrupted), then queue a continuation
        of every interrupted trial that has none yet (same parameters and job number)."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False):
            if t.state != TrialState.RUNNING:
                continue
            if not _sweeper_gone(t):
                log.warning(
                    "trial %d (job %s) is running in sweeper %s; left alone",
                    t.number,
                    t.user_attrs.get(JOB),
                    t.user_attrs.get(SWEEPER),
                )
                continue
            record = job_record(sweep_dir, t.user_attrs.get(JOB))
            objective = record.get("objective")
            if record.get("status") == "finished" and isinstance(objective, (int, float)):
                study.tell(t.number, float(objective))
            elif record.get("status") == "pruned":
                study.tell(t.number, state=TrialState.PRUNED)
            else:
                log.warning(
                    "trial %d (job %s) was interrupted; continuing it",
                    t.number,
                    t.user_attrs.get(JOB),
                )
                study.tell(t.number, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        continued = {t.user_attrs.get(RETRY_OF) for t in trials}
        for t in trials:
            if (
                t.state == TrialState.FAIL
                and ERROR not in t.user_attrs
                and t.number not in continued
            ):
                study.enqueue_trial(
                    t.params, user_attrs={RETRY_OF: t.number, JOB: t.user_attrs.get(JOB)}
                )

    # ----------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> list[Any]:
        assert self.config is not None and self.launcher is not None
        from optuna.trial import TrialState

        with exit_on_user_error("sr-train"):  # a bad setting: one line, exit status 2
            dims, fixed = self._check(arguments)
            study = self._open_study()
        metric = str(self.config.get("optimized_metric") or "val/psnr_y")
        sweep_dir = self._sweep_dir(study)
        extra: list[str] = []
        if sweep_dir != Path(str(self.config.hydra.sweep.dir)).absolute():
            log.info("resuming study %r in %s", study.study_name, sweep_dir)
            with open_dict(self.config):
                self.config.hydra.sweep.dir = str(sweep_dir)
            extra = [f"hydra.sweep.dir={_quote(str(sweep_dir))}"]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._recover(study, sweep_dir)

        returns: list[Any] = []
        while True:
            trials = study.get_trials(deepcopy=False)
            counted = sum(
                t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.RUNNING and not _sweeper_gone(t))
                for t in trials
            )
            room = min(self.n_jobs, self.n_trials - counted)
            if room <= 0:
                break
            next_job = 1 + max(
                (int(t.user_attrs[JOB]) for t in trials if t.user_attrs.get(JOB) is not None),
                default=-1,
            )
            batch = self._ask(study, dims, room, next_job)
            for group in _consecutive(batch):
                jobs = [self._job_overrides(t, dims, fixed, extra) for t in group]
                self.validate_batch_is_legal(jobs)
                results = self.launcher.launch(jobs, initial_job_idx=int(group[0].user_attrs[JOB]))
                returns.append(results)
                self._tell(study, group, results, metric)
        self._write_results(study, sweep_dir)
        return returns

    def _check(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The settings checked, and the search space with the overrides every job gets."""
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction must be maximize or minimize, got {self.direction!r}"
            )
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key} must be a whole number >= 1, got {value!r}")
        params = OmegaConf.to_container(OmegaConf.create(dict(self.params)), resolve=True)
        overrides = [
            f"{k}={v}" if isinstance(v, str) else param_override(k, v) for k, v in params.items()
        ]
        dims, fixed = search_space([*overrides, *arguments])
        if not dims:
            raise ConfigError(
                "hydra.sweeper.params holds no search space; give one, e.g. "
                "'hydra.sweeper.params={optim.generator.lr: tag(log, interval(1e-5, 1e-3))}'"
            )
        return dims, fixed

    def _ask(self, study: Any, dims: dict[str, Any], room: int, next_job: int) -> list[Any]:
        batch = []
        for _ in range(room):
            trial = study.ask(fixed_distributions=dims)
            if trial.user_attrs.get(JOB) is None:
                trial.set_user_attr(JOB, next_job)
                next_job += 1
            trial.set_user_attr(SWEEPER, _sweeper_id())
            batch.append(trial)
        return batch

    @staticmethod
    def _job_overrides(trial: Any, dims: dict, fixed: list[str], extra: list[str]) -> list[str]:
        sampled = [param_override(k, trial.params[k]) for k in dims]
        resume = ["resume=auto"] if trial.user_attrs.get(RETRY_OF) is not None else []
        return [*fixed, *sampled, *resume, *extra]

    def _tell(self, study: Any, trials: list[Any], results: list[Any], metric: str) -> None:
        from optuna.trial import TrialState

        failure: tuple[Any, BaseException] | None = None
        for trial, ret in zip(trials, results):
            state, value, curve, exc = job_outcome(ret, metric)
            for step, v in sorted(curve.items()):
                trial.report(v, step)
            if state == "complete":
                study.tell(trial, value)
            elif state == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                if state == "failed":
                    trial.set_user_attr(ERROR, f"{type(exc).__name__}: {exc}".splitlines()[0])
                study.tell(trial, state=TrialState.FAIL)
                failure = failure or (ret, exc)
        if failure is not None:  # the sweep ends with the job's error, as every sr-train sweep
            ret, exc = failure
            _ = ret.return_value  # re-raises a job's exception with its traceback
            raise exc

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done:
            log.warning("study %r has no complete trial yet", study.study_name)
            return
        best = study.best_trial
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": self.storage,
            "best_params": dict(best.params),
            "best_value": best.value,
            "best_job": best.user_attrs.get(JOB),
            "trials": {
                s.name.lower(): n
                for s in TrialState
                if (n := sum(t.state == s for t in study.get_trials(deepcopy=False)))
            },
        }
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info("best trial (job %s): %s = %s", results["best_job"], best.params, best.value)


def _consecutive(trials: list[Any]) -> list[list[Any]]:
    """The trials split into runs of consecutive job numbers (one launch each: Hydra numbers a
    launch's jobs from its first)."""
    groups: list[list[Any]] = []
    for t in sorted(trials, key=lambda t: int(t.user_attrs[JOB])):
        if groups and int(t.user_attrs[JOB]) == int(groups[-1][-1].user_attrs[JOB]) + 1:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups
