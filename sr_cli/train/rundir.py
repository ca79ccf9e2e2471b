"""The run folder's history: where a resume continues, the config record, one ``metrics.csv``.

(Who owns the folder, and what a failed start removes: :mod:`sr_cli.train.ownership`.)

* :func:`plan_resume`: ``resume=auto`` continues this folder, else the newest earlier run whose
  recorded name and settings are this run's (:func:`continuable`; another run is never taken
  over: it starts fresh in its own folder and says why), and says so when there is nothing to
  resume; ``resume=PATH`` continues in the folder the checkpoint belongs to. Under SLURM, a
  requeued job continues its own folder as with ``resume=auto`` (:mod:`sr_cli.train.slurm`).
  An unreadable ``last.ckpt`` falls back to the newest readable state, with a warning naming
  both files.
* :func:`check_resume_compatible`: a resume with another model, EMA setting or loss set is a
  one-line error saying what differs.
* :func:`trim_metrics` keeps one ``metrics.csv`` across resumes (rows after the resumed state
  are dropped: they are logged again).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_cli.errors import CheckpointError
from sr_cli.metrics_csv import read_metrics_rows
from sr_cli.serialization import (
    atomic_write,
    file_problem,
    is_readable_checkpoint,
    safe_torch_load,
)
from sr_cli.train.ownership import _rank

log = logging.getLogger(__name__)


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


#: Keys of the config record that say how far or where a run goes, not what it trains: an
#: earlier run that differs from this one only in these is the same run (``resume=auto``).
RUN_CONTROL = (
    "resume",
    "paths",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "logger",
    "speed",
)


def _settings(record: dict) -> dict:
    """The config record without its run-control keys (:data:`RUN_CONTROL`), and with its own
    folder written ``<run folder>`` in the values derived from it (checkpoint folder, ...)."""
    folder = str((record.get("paths") or {}).get("output_dir") or "") or None

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if folder and isinstance(value, str) and (value + "/").startswith(folder + "/"):
            return "<run folder>" + value[len(folder) :]
        return value

    out = plain(record)
    for key in RUN_CONTROL:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def continuable(folder: Path, cfg: DictConfig) -> str | None:
    """``None`` when the run in ``folder`` is this run (its recorded ``run_name`` and settings,
    run-control keys aside, are ``cfg``'s), else why it is not, in a few words."""
    try:
        loaded = OmegaConf.load(folder / "config_resolved.yaml")
        record = OmegaConf.to_container(loaded, resolve=False)  # data: never resolved
    except Exception:  # missing, unreadable or not YAML: nothing says it is this run
        record = None
    if not isinstance(record, dict):
        return "no readable config_resolved.yaml says what it trains"
    current = OmegaConf.to_container(cfg, resolve=True)
    if record.get("run_name") != current.get("run_name"):
        return (
            f"its run name is {record.get('run_name')!r}, this run's is {current.get('run_name')!r}"
        )
    old, new = _settings(record), _settings(current)
    changes = [
        change[1:]
        for key in sorted(set(old) | set(new), key=str)
        for change in _diff(old.get(key), new.get(key), f".{key}")
    ]
    if changes:
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        return "its settings differ: " + "; ".join(changes[:3]) + more
    return None


def plan_resume(resume: str | None, output_dir: Path, cfg: DictConfig | None = None) -> ResumePlan:
    """Decide where the run writes and what it resumes from (see the module docstring).

    ``cfg`` (this run's config) decides whether an earlier run of the same name is this run
    (:func:`continuable`); without it, ``resume=auto`` looks at ``output_dir`` alone."""
    if not resume and _slurm_requeued(output_dir):
        resume = "auto"
    if not resume:
        return ResumePlan(output_dir)
    if resume == "auto":
        earlier = (
            [p for p in _sibling_runs(output_dir) if p != output_dir] if cfg is not None else []
        )
        folders = [output_dir] + sorted(
            earlier,
            key=lambda p: (
                (p / "checkpoints").stat().st_mtime if (p / "checkpoints").is_dir() else 0
            ),
            reverse=True,
        )
        passed: list[str] = []
        for folder in folders:
            ckpt, problems = readable_state(folder)
            if ckpt is None and not problems:
                continue
            if folder != output_dir:
                why = continuable(folder, cfg)
                if why is not None:
                    passed.append(f"{folder} ({why})")
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
        if passed:
            log.warning(
                "resume=auto: not continuing %s: another run is never taken over; starting a "
                "new run in %s",
                ", ".join(passed),
                output_dir,
            )
            return ResumePlan(output_dir)
        log.warning(
            "resume=auto: nothing to resume (no checkpoint in %s%s); starting a new run",
            output_dir,
            " or in earlier runs of the same name" if earlier else "",
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
    Damaged rows are left out with a warning (:func:`~sr_cli.metrics_csv.read_metrics_rows`)
    and the damaged file is kept aside as ``metrics.csv.damaged-<k>``. Returns ``(header, csv
    text)`` for :func:`restore_metrics`."""
    path = run_dir / "metrics.csv"
    if _rank() != 0 or not path.is_file():
        return None
    table = read_metrics_rows(path)
    if table.damaged:
        k = 1
        while (run_dir / f"metrics.csv.damaged-{k}").exists():
            k += 1
        aside = run_dir / f"metrics.csv.damaged-{k}"
        shutil.copy2(path, aside)
        log.warning("%s: the file as it was is kept as %s", path, aside.name)
    if not table.header:
        return None
    rows = table.rows
    if iteration is not None:
        rows = [r for r in rows if not r.get("step") or float(r["step"]) < iteration]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=table.header)
    writer.writeheader()
    writer.writerows(rows)
    return table.header, buf.getvalue()


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
