"""The sweep summary: ``summary.csv`` and ``summary.md`` in the sweep folder of every multirun.

One row per job: its overrides (those the sweep varies), status, iterations,
the best value of every validation metric and the error's first line when it failed.

Status:
* ``finished``: the job returned.
* ``failed``: it raised; ``error`` holds the exception's first line.
* ``preempted``: a stop signal (SIGTERM, SIGUSR1, SIGINT) saved a resumable checkpoint and ended
  it (``error`` names the signal).
* ``pruned``: the Optuna pruner of ``hparams_search=optuna`` stopped it early
  (:mod:`sr_cli.train.pruning`); the sweeper records its trial as pruned.
* ``running``: started and not ended (still running, or killed without a chance to say so).

:class:`SweepSummary` is a Hydra callback (``conf/hydra/default.yaml``). ``on_job_end`` runs in the
job's own process (which, with the joblib or submitit launchers, is not the sweep's): it writes
``job_status.json`` into the job folder and rewrites the summary from every job folder on disk,
under a file lock. So the summary is complete even when a failed job makes Hydra end the sweep
with an error before ``on_multirun_end`` (which rewrites it once more).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
SUMMARY_FILES = ("summary.csv", "summary.md")
#: Validation metrics where lower is better (the rest: higher is better).
LOWER_IS_BETTER = ("lpips", "dists", "gmsd", "brisque", "niqe", "loss")

#: The run folder of the job that just ran in this process (``train`` may continue an earlier
#: folder under ``resume=auto``); set by the ``sr-train`` task, read by ``on_job_end``.
last_run_dir: Path | None = None


# --------------------------------------------------------------------------- records
def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def record_job(job_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into the job's ``job_status.json`` (atomically)."""
    path = Path(job_dir) / STATUS_FILE
    record = _read_json(path) or {}
    record.update(fields)
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path.parent.mkdir(parents=True, exist_ok=True)
    from sr_cli.serialization import atomic_write  # (loads torch: not for reading a sweep)

    atomic_write(path, lambda f: f.write(json.dumps(record, indent=2, default=str).encode()))


def record_preempted(job_dir: Path, signum: int, run_dir: Path | None = None) -> None:
    record_job(
        job_dir,
        status="preempted",
        error=f"stopped by {signal.Signals(signum).name}",
        run_dir=str(run_dir) if run_dir else None,
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- rows
def read_curve(run_dir: Path, metric: str) -> dict[int, float]:
    """``{iteration: value}`` of ``metric`` in ``<run_dir>/metrics.csv`` (empty when absent).

    The CSV logger's ``step`` of a validation row is Lightning's step, the iteration it ran after
    minus one (as in the sweep summary's ``iterations``)."""
    path = Path(run_dir) / "metrics.csv"
    curve: dict[int, float] = {}
    if not path.is_file():
        return curve
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            text, step = row.get(metric), row.get("step")
            if not text or not step:
                continue
            try:
                value, it = float(text), int(float(step))
            except ValueError:
                continue
            if not math.isnan(value):
                curve[it + 1] = value
    return curve


def _best_metrics(run_dir: Path) -> dict[str, float]:
    """Best value of every ``<set>/<metric>`` column of ``metrics.csv`` (bicubic references and
    per-step training values excluded)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    best: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, text in row.items():
                if not key or "/" not in key or not text:
                    continue
                split, name = key.split("/", 1)
                if split in ("train", "lr") or name.startswith("bicubic_"):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isnan(value):
                    continue
                lower = any(word in name for word in LOWER_IS_BETTER)
                old = best.get(key)
                if old is None or (value < old if lower else value > old):
                    best[key] = value
    return best


def _iterations(run_dir: Path, summary: dict | None) -> int | None:
    if summary and summary.get("iteration") is not None:
        return int(summary["iteration"])
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    steps = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                steps.append(int(float(row.get("step") or "nan")))
            except ValueError:
                continue
    return max(steps) + 1 if steps else None


def _job_folders(sweep_dir: Path) -> list[Path]:
    folders = [
        p
        for p in sweep_dir.iterdir()
        if p.is_dir() and ((p / ".hydra").is_dir() or (p / STATUS_FILE).is_file())
    ]

    def num(p: Path) -> tuple[int, str]:
        record = _read_json(p / STATUS_FILE) or {}
        if isinstance(record.get("num"), int):
            return record["num"], p.name
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30), p.name

    return sorted(folders, key=num)


def _overrides(job_dir: Path) -> list[str]:
    record = _read_json(job_dir / STATUS_FILE) or {}
    if isinstance(record.get("overrides"), list):
        return [str(o) for o in record["overrides"]]
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path) or []]


def collect_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per job folder of ``sweep_dir``."""
    jobs = _job_folders(Path(sweep_dir))
    overrides = {job: _overrides(job) for job in jobs}
    common = set.intersection(*(set(o) for o in overrides.values())) if len(jobs) > 1 else set()
    rows = []
    for job in jobs:
        record = _read_json(job / STATUS_FILE) or {}
        run_dir = Path(record.get("run_dir") or job)
        summary = _read_json(run_dir / "summary.json")
        status = record.get("status")
        if status is None:  # no record: the task's own summary is all there is
            if summary is None:
                status = "running"
            else:
                status = {"interrupted": "preempted", "pruned": "pruned"}.get(
                    summary.get("status"), "finished"
                )
        swept = record.get("swept") or [o for o in overrides[job] if o not in common]
        row: dict[str, Any] = {
            "job": record.get("num", job.name.split("_", 1)[0]),
            "name": job.name,
            "overrides": " ".join(swept),
            "status": status,
            "iterations": _iterations(run_dir, summary),
            "objective": record.get("objective"),
        }
        best = (summary or {}).get("best") or {}
        monitor = next((k for k in best if k != "iteration"), None)
        row["best_iteration"] = best.get("iteration") if monitor else None
        row.update({f"best {k}": v for k, v in _best_metrics(run_dir).items()})
        pruned = record.get("pruned") or (summary or {}).get("pruned")
        row["error"] = record.get("error") or (
            f"pruned at iteration {pruned.get('iteration')}"
            if status == "pruned" and pruned
            else ""
        )
        row["run_dir"] = os.path.relpath(run_dir, sweep_dir) if run_dir.is_dir() else str(run_dir)
        rows.append(row)
    return rows


_FIRST = ["job", "name", "overrides", "status", "iterations", "objective", "best_iteration"]
_LAST = ["error", "run_dir"]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    metrics = sorted({k for r in rows for k in r if k not in _FIRST + _LAST})
    return [*_FIRST, *metrics, *_LAST]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in writer.fieldnames})
    return buf.getvalue()


def render_markdown(rows: list[dict[str, Any]], title: str) -> str:
    columns = _columns(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        f"# Sweep {title}",
        "",
        f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@contextmanager
def _locked(sweep_dir: Path):
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_summary(sweep_dir: str | Path) -> Path:
    """(Re)write ``summary.csv`` and ``summary.md`` of ``sweep_dir`` from its job folders."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        rows = collect_rows(sweep_dir)
        text_csv = render_csv(rows)
        text_md = render_markdown(rows, str(sweep_dir))
        from sr_cli.serialization import atomic_write

        atomic_write(sweep_dir / "summary.csv", lambda f: f.write(text_csv.encode()))
        atomic_write(sweep_dir / "summary.md", lambda f: f.write(text_md.encode()))
    return sweep_dir / "summary.csv"


# --------------------------------------------------------------------------- Hydra callback
def _is_multirun(config: DictConfig) -> bool:
    """A multirun job, seen from its first process (a SLURM job of several tasks runs the job in
    each; the others leave the records to it)."""
    from sr_cli.train.slurm import _global_rank

    mode = str(OmegaConf.select(config, "hydra.mode", default=""))
    return mode == "RunMode.MULTIRUN" and _global_rank() == 0


class SweepSummary(Callback):
    """Hydra callback: job records and the sweep's ``summary.csv``/``summary.md``."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        from sr_cli.config import _job_overrides

        global last_run_dir
        last_run_dir = None
        job_dir = Path(config.hydra.runtime.output_dir)
        record_job(
            job_dir,
            num=int(config.hydra.job.num),
            overrides=[str(o) for o in config.hydra.overrides.task],
            swept=_job_overrides(),
            status="running",
            error=None,
            run_dir=None,
            pruned=None,
        )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        from sr_cli.train.lit.callbacks import TrainingInterrupted

        job_dir = Path(config.hydra.runtime.output_dir)
        run_dir = last_run_dir
        try:
            if job_return.status == JobStatus.COMPLETED:
                value = job_return._return_value
                pruned = (_read_json(job_dir / STATUS_FILE) or {}).get("pruned")
                record_job(
                    job_dir,
                    status="pruned" if pruned else "finished",
                    error=None,
                    objective=float(value) if isinstance(value, (int, float)) else None,
                    run_dir=str(run_dir) if run_dir else None,
                )
            else:
                exc = job_return._return_value
                if isinstance(exc, TrainingInterrupted):
                    record_preempted(job_dir, exc.signum, run_dir)
                else:
                    record_job(job_dir, status="failed", error=_error_line(exc))
            write_summary(config.hydra.sweep.dir)
        except Exception as exc:  # the summary never fails a job
            log.warning("could not update the sweep summary: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            path = write_summary(sweep_dir)
            log.info("sweep summary: %s (and summary.md)", path)
        except Exception as exc:
            log.warning("could not write the sweep summary: %s", exc)
