"""The run folder: who owns it, where a resume continues, what a failed start leaves behind.

* :class:`RunLock`: one ``sr-train`` per run folder (``.lock`` holds the owner's pid and host;
  a lock whose process is gone is taken over with a warning).
* :func:`plan_resume`: ``resume=auto`` continues the newest run of the same name (or this
  folder) and says so when there is nothing to resume; ``resume=PATH`` continues in the folder
  the checkpoint belongs to. Under SLURM, a requeued job continues its own folder as with
  ``resume=auto`` (:mod:`sr_cli.train.slurm`). An unreadable ``last.ckpt`` falls back to the
  newest readable state, with a warning naming both files.
* :func:`check_resume_compatible`: a resume with another model, EMA setting or loss set is a
  one-line error saying what differs.
* :func:`trim_metrics` keeps one ``metrics.csv`` across resumes (rows after the resumed state
  are dropped: they are logged again).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.serialization import (
    atomic_write,
    file_problem,
    is_readable_checkpoint,
    safe_torch_load,
)

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: What Hydra puts in a new run folder before the task starts.
HYDRA_FILES = (".hydra",)


def _rank() -> int:
    from pytorch_lightning.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# --------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive ownership of a run folder for the life of one training process (rank 0)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        if _rank() != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("pid") == os.getpid():
                    return self  # re-entered by the same process (stages)
                if owner and (owner.get("host") != me["host"] or _pid_alive(int(owner["pid"]))):
                    raise ConfigError(
                        f"run folder {self.path.parent} is in use by sr-train (pid "
                        f"{owner.get('pid')} on {owner.get('host')}); wait for it to finish, stop "
                        f"it, or write elsewhere (hydra.run.dir=...). If that process is gone, "
                        f"delete {self.path}."
                    ) from None
                log.warning(
                    "taking over the stale lock %s (pid %s is not running)",
                    self.path,
                    owner.get("pid") if owner else "?",
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ConfigError(f"could not lock the run folder {self.path.parent}; delete {self.path}")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# --------------------------------------------------------------------------- folder state
def is_unused(run_dir: Path) -> bool:
    """True when the folder holds nothing but what Hydra creates before a run (and logs)."""
    if not run_dir.is_dir():
        return True
    for entry in run_dir.iterdir():
        if entry.name in HYDRA_FILES or entry.name == LOCK_NAME or entry.suffix == ".log":
            continue
        return False
    return True


def training_started(run_dir: Path) -> bool:
    return (run_dir / "checkpoints").is_dir() or (run_dir / "metrics.csv").is_file()


def remove_if_unused(run_dir: Path) -> None:
    """Delete a run folder that never got past the start (and empty parents up to ``outputs``)."""
    if _rank() != 0 or not run_dir.is_dir() or not is_unused(run_dir):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    for _ in range(2):
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
        parent = parent.parent


def check_writable(run_dir: Path) -> None:
    """Fail before any compute when the run folder cannot be written."""
    if _rank() != 0:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = (
            "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror
        )
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({reason}); choose a writable place with "
            "hydra.run.dir=... (or paths.output_dir=...)."
        ) from exc


def write_config_record(run_dir: Path, resolved: dict, resumed: bool) -> None:
    """``config_resolved.yaml``; on a resume with changed settings the previous record is kept as
    ``config_resolved.before-resume-<k>.yaml``."""
    if _rank() != 0:
        return
    path = run_dir / "config_resolved.yaml"
    text = OmegaConf.to_yaml(resolved)
    if resumed and path.is_file() and path.read_text() != text:
        k = 1
        while (run_dir / f"config_resolved.before-resume-{k}.yaml").exists():
            k += 1
        path.rename(run_dir / f"config_resolved.before-resume-{k}.yaml")
    atomic_write(path, lambda f: f.write(text.encode()))


# --------------------------------------------------------------------------- resume
@dataclass
class ResumePlan:
    """Where a run writes and which checkpoint (if any) it continues from."""

    output_dir: Path
    checkpoint: str | None = None
    meta: dict | None = None
    iteration: int = 0


def _run_dir_of(ckpt: Path) -> Path | None:
    folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    if folder is not None and (folder / "config_resolved.yaml").is_file():
        return folder
    return None


def _sibling_runs(output_dir: Path) -> list[Path]:
    """Earlier runs of the same name: ``outputs/<name>/*`` for a run, ``multirun/<name>/*/<job>``
    for a sweep job (the same job of earlier sweeps)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        mode = HydraConfig.get().mode
    except Exception:
        return []
    if mode == RunMode.MULTIRUN:
        return [p / output_dir.name for p in output_dir.parent.parent.iterdir() if p.is_dir()]
    return [p for p in output_dir.parent.iterdir() if p.is_dir()]


def readable_state(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest readable checkpoint of a run folder (``last.ckpt``, else ``iter_<N>.ckpt``
    newest first, else ``best.ckpt``) and warnings about the unreadable ones."""
    ckpt_dir = run_dir / "checkpoints"
    candidates = [ckpt_dir / "last.ckpt", *sorted(ckpt_dir.glob("iter_*.ckpt"), reverse=True)]
    candidates.append(ckpt_dir / "best.ckpt")
    problems: list[str] = []
    for cand in candidates:
        if not cand.is_file():
            continue
        reason = is_readable_checkpoint(cand)
        if reason is None:
            return cand, problems
        problems.append(f"{cand} is unreadable ({reason})")
    return None, problems


def plan_resume(resume: str | None, output_dir: Path) -> ResumePlan:
    """Decide where the run writes and what it resumes from (see the module docstring)."""
    if not resume and _slurm_requeued(output_dir):
        resume = "auto"
    if not resume:
        return ResumePlan(output_dir)
    if resume == "auto":
        folders = [output_dir] + sorted(
            (p for p in _sibling_runs(output_dir) if p != output_dir),
            key=lambda p: (
                (p / "checkpoints").stat().st_mtime if (p / "checkpoints").is_dir() else 0
            ),
            reverse=True,
        )
        for folder in folders:
            ckpt, problems = readable_state(folder)
            if ckpt is None and not problems:
                continue
            if ckpt is None:
                raise CheckpointError(
                    f"resume=auto: no readable checkpoint in {folder / 'checkpoints'}: "
                    + "; ".join(problems)
                )
            if problems:
                log.warning("resume=auto: %s; falling back to %s", "; ".join(problems), ckpt)
            if folder != output_dir:
                log.warning("resume=auto: continuing the run in %s", folder)
            return _with_meta(ResumePlan(folder, str(ckpt)))
        log.warning(
            "resume=auto: nothing to resume (no checkpoint in %s%s); starting a new run",
            output_dir,
            " or in earlier runs of the same name" if _sibling_runs(output_dir) else "",
        )
        return ResumePlan(output_dir)
    path = Path(resume).expanduser()
    if path.is_dir():
        ckpt, problems = readable_state(path)
        if ckpt is None:
            raise CheckpointError(
                f"resume={resume}: no readable checkpoint in {path / 'checkpoints'}"
                + (": " + "; ".join(problems) if problems else "")
            )
        path = ckpt
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"resume checkpoint {str(path)!r} {problem}. Pass the path of a .ckpt written by "
            "sr-train (e.g. outputs/<name>/<time>/checkpoints/last.ckpt), a run folder, or resume=auto."
        )
    reason = is_readable_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"resume checkpoint {str(path)!r} is unreadable ({reason}).")
    run_dir = _run_dir_of(path)
    if run_dir is None:
        log.warning(
            "resume=%s is not inside an sr-train run folder; this run writes to %s",
            path,
            output_dir,
        )
        return _with_meta(ResumePlan(output_dir, str(path)))
    if run_dir.resolve() != output_dir.resolve():
        log.warning("resume: continuing the run in %s (the checkpoint's folder)", run_dir)
    return _with_meta(ResumePlan(run_dir, str(path)))


def _slurm_requeued(output_dir: Path) -> bool:
    """Under SLURM, a folder of this job (``slurm-<job id>``, or any folder once SLURM says the
    job was restarted) that already holds a checkpoint is this job's, before its requeue."""
    from sr_cli.train.slurm import slurm_job_id

    job = slurm_job_id()
    if job is None:
        return False
    ours = f"slurm-{job}" in (output_dir.name, output_dir.parent.name)
    restarted = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
    if not (ours or restarted) or not any((output_dir / "checkpoints").glob("*.ckpt")):
        return False
    log.warning("SLURM job %s was requeued: continuing the run in %s", job, output_dir)
    return True


def _with_meta(plan: ResumePlan) -> ResumePlan:
    ckpt = safe_torch_load(plan.checkpoint)
    plan.meta = ckpt.get("sr_cli") or {}
    plan.iteration = int(plan.meta.get("iteration", 0))
    return plan


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{prefix}.{key}")
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def check_resume_compatible(plan: ResumePlan, cfg: DictConfig) -> None:
    """A resume must train the same model, with the same EMA setting and loss terms."""
    from sr_cli.train.lit.checkpoint import optimizer_changes

    meta = plan.meta or {}
    current = OmegaConf.to_container(cfg, resolve=True)
    problems: list[str] = []
    if "model" in meta:
        problems += _diff(
            (meta["model"] or {}).get("generator"),
            current["model"].get("generator"),
            "model.generator",
        )
    if "ema" in meta and bool(meta["ema"]) != bool((current.get("ema") or {}).get("enabled")):
        problems.append(f"ema.enabled: {bool(meta['ema'])} -> {not bool(meta['ema'])}")
    if "loss" in meta:
        old, new = sorted(meta["loss"] or {}), sorted(current.get("loss") or {})
        if old != new:
            problems.append(f"loss terms: {'+'.join(old)} -> {'+'.join(new)}")
    if problems:
        raise CheckpointError(
            f"resume from {plan.checkpoint}: the run differs from the checkpoint ("
            + "; ".join(problems)
            + "). Resume with the same settings, or start a new run from its weights with "
            "model.pretrained=<checkpoint>."
        )
    optimizer_changes(meta.get("optim"), current.get("optim"))  # refuses another optimizer class


def trim_metrics(run_dir: Path, iteration: int | None) -> tuple[list[str], str] | None:
    """Keep one ``metrics.csv`` across a resume: the rows of the iterations before the resumed
    state (a row's step is its iteration; later ones are logged again by the resumed run).
    Returns ``(header, csv text)`` for :func:`restore_metrics`."""
    path = run_dir / "metrics.csv"
    if _rank() != 0 or not path.is_file():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if iteration is not None:
        rows = [r for r in rows if not r.get("step") or float(r["step"]) < iteration]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return header, buf.getvalue()


def restore_metrics(csv_logger, kept: tuple[list[str], str] | None) -> None:
    """Put the kept rows back after Lightning's CSV logger cleared the file, and make it append."""
    writer = csv_logger.experiment  # creating it deletes metrics.csv
    if kept is None:
        return
    header, text = kept
    atomic_write(writer.metrics_file_path, lambda f: f.write(text.encode()))
    writer.metrics_keys = sorted(header)


# --------------------------------------------------------------------------- loggers
def _wandb_loggers(trainer) -> list:
    try:
        from pytorch_lightning.loggers import WandbLogger
    except ImportError:  # pragma: no cover
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def define_wandb_summaries(trainer, cfg: DictConfig) -> None:
    """The wandb summary of the monitored metric is its best value, not its last."""
    monitor = OmegaConf.select(cfg, "callbacks.checkpoint.monitor", default=None)
    mode = OmegaConf.select(cfg, "callbacks.checkpoint.mode", default="max")
    for lg in _wandb_loggers(trainer):
        if trainer.is_global_zero and monitor:
            lg.experiment.define_metric(monitor, summary=mode)


def finish_loggers(trainer) -> None:
    """The end of a run for its loggers: TensorBoard gets ``best/<monitor>`` (wandb's summary of
    it), and this job's wandb run ends, so the next job of a sweep (or stage) starts its own."""
    from sr_cli.train.lit.callbacks import run_checkpoints

    ckpts = run_checkpoints(trainer)
    for lg in trainer.loggers:
        log_best = getattr(lg, "log_best", None)
        if callable(log_best) and ckpts is not None and ckpts.best_iteration is not None:
            # the step of that validation's numbers (a row's step is its iteration - 1)
            log_best(ckpts.monitor, ckpts.best_score, max(int(ckpts.best_iteration) - 1, 0))
    for lg in _wandb_loggers(trainer):
        if lg._experiment is not None and trainer.is_global_zero:
            lg.experiment.finish()
            lg._experiment = None
