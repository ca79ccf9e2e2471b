"""A Hydra sweeper that trains a study's jobs through whatever launcher is configured.

``sr-study`` writes the jobs still to train into ``launch/plan.json`` and runs::

    sr-train -m hydra/sweeper=study hydra.sweeper.plan=<plan.json> hydra.sweep.dir=<launch>
             [the user's launcher options: hydra/launcher=joblib, cluster=slurm, ...]

The sweeper hands the jobs to the launcher in waves: first every job whose dependencies are met
(warm starts and arms trained from scratch), then the arms that start from a warm start once
it has finished, and so on. The launcher runs each wave as it runs any sweep: one after the
other in this process (basic), ``n_jobs`` at a time in worker processes (joblib), or as SLURM
jobs (submitit). A job whose warm start failed is not launched. The statuses of all jobs are
written to ``launch/jobs.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sr_cli.serialization import atomic_write

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"


class StudySweeper(Sweeper):
    """Launch the jobs of a study plan in dependency waves (see the module docstring)."""

    def __init__(self, plan: str | None = None) -> None:
        self.plan = plan
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from sr_cli.study.plan import read_plan

        if not self.plan:
            from sr_cli.errors import ConfigError

            raise ConfigError("hydra/sweeper=study needs hydra.sweeper.plan=<plan.json>")
        jobs = {j["id"]: j for j in read_plan(self.plan)}
        base = [a for a in arguments if not a.startswith("hydra.sweeper.")]
        done: set[str] = set()
        failed: dict[str, str] = {}
        pending = dict(jobs)
        statuses: dict[str, dict[str, Any]] = {}
        index = 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        while pending:
            blocked = [j for j in pending.values() if any(d in failed for d in j["depends_on"])]
            for j in blocked:
                why = next(d for d in j["depends_on"] if d in failed)
                failed[j["id"]] = f"not run: {why} did not finish"
                statuses[j["id"]] = {"status": "not run", "error": failed[j["id"]]}
                del pending[j["id"]]
            ready = [
                j
                for j in pending.values()
                if all(d in done or d not in jobs for d in j["depends_on"])
            ]
            if not ready:
                break
            batch = [[*base, *j["overrides"], f"hydra.sweep.subdir={j['run_dir']}"] for j in ready]
            log.info(
                "study: launching %d job(s): %s", len(ready), ", ".join(j["id"] for j in ready)
            )
            returns = self.launcher.launch(batch, initial_job_idx=index)
            index += len(ready)
            for j, ret in zip(ready, returns, strict=True):
                del pending[j["id"]]
                if ret.status == JobStatus.COMPLETED:
                    done.add(j["id"])
                    statuses[j["id"]] = {"status": "finished"}
                else:
                    error = _error_line(ret._return_value)
                    failed[j["id"]] = error
                    statuses[j["id"]] = {"status": _failure_kind(ret._return_value), "error": error}
            _write_statuses(sweep_dir, statuses)
        return statuses


def _error_line(exc: Any) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _failure_kind(exc: Any) -> str:
    from sr_cli.errors import NonFiniteLossError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NonFiniteLossError):
            return "diverged"
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return "failed"


def _write_statuses(sweep_dir: Path, statuses: dict[str, dict[str, Any]]) -> None:
    path = sweep_dir / JOBS_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    old.update(statuses)
    atomic_write(path, lambda f: f.write(json.dumps(old, indent=2).encode()))


def read_statuses(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((Path(sweep_dir) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def launch_args(sequence: Sequence[str]) -> list[str]:
    """The options of the user's command line that choose or tune the launcher; they go to the
    sweep, not to the jobs' overrides."""
    keys = ("hydra/launcher=", "hydra.launcher.", "cluster=", "cluster.", "+hydra.launcher.")
    return [a for a in sequence if a.startswith(keys)]
