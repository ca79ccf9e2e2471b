"""Studies (``sr-study NAME``): re-run the claim behind an idea and say whether it held.

A study is declared in ``conf/study/NAME.yaml`` (plain YAML, read with OmegaConf; not part of
the training config tree):

``claim``
    what the study tests, in words.
``common``, ``presets: {cpu|full|smoke: [...]}``, ``runs: {name: [...]}``
    ``sr-train`` overrides: common ones, the preset's, then each run's (and last the user's
    extra overrides from the ``sr-study`` command line). In a run's ``loss=[...]`` a member
    written ``name?`` is kept only when the weight files ``optional_terms[name]`` are in the
    torch hub cache (and the results say when it was left out). ``$name`` is replaced by
    ``params[preset].name``. A run listed in ``run_requires: {run: weight file}`` is not run
    without that file.
``eval``
    ``dataset`` (a folder; default the bundled validation images) and ``metrics`` (registry names).
``criteria``, ``sanity``
    comparisons of the measured values, judged by :mod:`sr_cli.study.criteria` (the format and
    the verdict rules are there).

Every run is one ``sr-train`` process writing ``<out>/NAME/<preset>/runs/<run>/``. A finished
run (``summary.json`` with status ``finished``; for ``stages=N``, ``stages.json`` with every
stage) is skipped on a rerun; an interrupted one continues from its last checkpoint; a failed one
(exit status not 0) is recorded in ``study_run.json`` with its first error line, skipped on a
rerun (delete that file to retry), and the study goes on. Then every finished run's final
generator (``last.ckpt``; one row per stage) and a bicubic row are evaluated on the same images
with :func:`sr_cli.evaluate.compare.compare` (the routine of ``sr-eval``), an ``sr-report`` page is
built (:func:`sr_cli.report.page.build_report`), and ``results.md`` / ``results.json`` give
the claim, the table, each criterion with its measured values and verdict, and the overall
verdict.

The verdict (:mod:`sr_cli.study.criteria`) is *inconclusive* whenever a sanity criterion (e.g.
the L1 run beats bicubic) does not pass: the budget was then too small to say anything, and the
results name the preset to run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shlex
import string
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_cli.config import config_dir
from sr_cli.errors import ConfigError
from sr_cli.study.criteria import INCONCLUSIVE, PASS, check_criterion, judge, overall

log = logging.getLogger(__name__)

STUDY_RUN_FILE = "study_run.json"
BICUBIC = "bicubic"


# ---------------------------------------------------------------------------- the config
def study_dir() -> Path:
    return config_dir() / "study"


def study_names() -> list[str]:
    return sorted(p.stem for p in study_dir().glob("*.yaml"))


def load_study(name: str) -> DictConfig:
    """``conf/study/NAME.yaml`` (or a study file ``NAME`` ending in ``.yaml``); an unknown name
    is an error listing the studies."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else study_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown study {name!r}; choose one of {study_names()} (conf/study/)")
    cfg = OmegaConf.load(path)
    for key in ("claim", "presets", "runs", "criteria"):
        if key not in cfg:
            raise ConfigError(f"{path}: the study has no {key!r}; see sr_cli/study/runner.py")
    for crit in [*cfg.criteria, *(cfg.get("sanity") or [])]:
        check_criterion(crit, path)
    return cfg


def run_overrides(
    cfg: DictConfig, preset: str, run: str, extra: Sequence[str], cached: Callable[[str], bool]
) -> tuple[list[str], list[str]]:
    """The ``sr-train`` overrides of one run, and notes on optional loss terms left out."""
    if preset not in cfg.presets:
        raise ConfigError(
            f"study has no preset {preset!r}; choose one of {list(cfg.presets)} (preset=...)"
        )
    args = [
        *map(str, cfg.get("common") or []),
        *map(str, cfg.presets[preset] or []),
        *map(str, cfg.runs[run] or []),
        *extra,
    ]
    params = {str(k): str(v) for k, v in ((cfg.get("params") or {}).get(preset) or {}).items()}
    args = [string.Template(a).safe_substitute(params) for a in args]
    notes: list[str] = []
    optional = dict(cfg.get("optional_terms") or {})
    out = []
    for arg in args:
        m = re.fullmatch(r"loss=\[(.*)\]", arg)
        if m and "?" in arg:
            members = []
            for member in (x.strip() for x in m.group(1).split(",") if x.strip()):
                if member.endswith("?"):
                    term = member[:-1]
                    weights = optional.get(term)
                    if weights and not cached(str(weights)):
                        notes.append(
                            f"{term} left out of {run}: its weights {weights} are not in the "
                            "torch hub cache (nothing is downloaded)"
                        )
                        continue
                    member = term
                members.append(member)
            arg = f"loss=[{','.join(members)}]"
        out.append(arg)
    return out, notes


def weights_cached(filename: str) -> bool:
    from sr_cli.metrics.registry import hub_checkpoint

    return hub_checkpoint(filename).is_file()


# ---------------------------------------------------------------------------- runs
@dataclass
class RunRecord:
    """One run of the study: what it is, how it went, and the checkpoints to evaluate."""

    name: str
    directory: Path
    command: list[str]
    status: str = "pending"  # finished | failed | interrupted | skipped-finished ...
    error: str = ""
    seconds: float = 0.0
    skipped: bool = False
    notes: list[str] = field(default_factory=list)

    def checkpoints(self) -> list[tuple[str, Path]]:
        """``(label, last.ckpt)`` of the run, one per stage for ``stages=N`` runs."""
        stages = self.directory / "stages.json"
        if stages.is_file():
            done = json.loads(stages.read_text()).get("completed") or []
            return [
                (f"{self.name}/stage_{r['stage']}", Path(r["last_checkpoint"]))
                for r in done
                if Path(r["last_checkpoint"]).is_file()
            ]
        last = self.directory / "checkpoints" / "last.ckpt"
        return [(self.name, last)] if last.is_file() else []


def run_state(run_dir: Path) -> tuple[str, str]:
    """``(status, error)`` of a run folder: ``finished``, ``failed`` (recorded by a previous
    study), ``started`` (has a checkpoint: resume it) or ``new``."""
    record = run_dir / STUDY_RUN_FILE
    if record.is_file():
        data = json.loads(record.read_text())
        if data.get("status") == "failed":
            return "failed", data.get("error", "")
    stages = run_dir / "stages.json"
    if stages.is_file():
        data = json.loads(stages.read_text())
        if len(data.get("completed") or []) >= int(data.get("stages", 1)):
            return "finished", ""
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "finished":
        return "finished", ""
    if any(run_dir.glob("**/checkpoints/*.ckpt")):
        return "started", ""
    return "new", ""


def first_error_line(stderr: str) -> str:
    """The most telling line of a failed sr-train's stderr: its ``sr-train: ...`` message, else
    the last exception line, else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("sr-train:"):
            return ln
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln):
            return ln
    return lines[-1] if lines else "no error message"


def train_command(args: Sequence[str], run: str, run_dir: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "sr_cli.commands.train", *args, f"name={run}"]
    cmd.append(f"hydra.run.dir={run_dir}")
    if resume:
        # The folder itself (resume=auto would also look at the sibling runs of the study).
        if not (run_dir / "stages.json").is_file():
            cmd.append(f"resume={run_dir}")
    return cmd


def execute_run(record: RunRecord, say: Callable[[str], None]) -> None:
    """Run one sr-train process; record its status and the first line of its error."""
    record.directory.mkdir(parents=True, exist_ok=True)
    say(f"run {record.name}: {shlex.join(record.command[1:])}")
    start = time.monotonic()
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    proc = subprocess.run(record.command, capture_output=True, text=True, env=env)
    record.seconds = time.monotonic() - start
    # sr-train removes a folder it never trained in (a user error): make it again for the record.
    record.directory.mkdir(parents=True, exist_ok=True)
    (record.directory / "study_train.log").write_text(proc.stdout + proc.stderr)
    state, _ = run_state(record.directory)
    if proc.returncode == 0 and state == "finished":
        record.status = "finished"
    else:
        record.status = "failed"
        record.error = first_error_line(proc.stderr) + f" (exit status {proc.returncode})"
        if proc.returncode in (-2, 130):  # Ctrl-C: resumable, not a failure of the run
            record.status = "interrupted"
            return
        (record.directory / STUDY_RUN_FILE).write_text(
            json.dumps({"status": "failed", "error": record.error}, indent=2)
        )
    say(f"run {record.name}: {record.status} in {record.seconds:.0f} s {record.error}".rstrip())


# ---------------------------------------------------------------------------- evaluation
def evaluate_runs(
    records: Sequence[RunRecord], dataset: Path, metrics: Sequence[str], out_dir: Path
) -> tuple[Any, list[str]]:
    """Every finished run's final generator and a bicubic row on ``dataset``, with the shared
    comparison of ``sr-eval``; writes ``results.csv``, ``results_per_image.csv`` and
    ``results.md`` to ``out_dir``. Returns the :class:`Comparison` and the labels evaluated."""
    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.evaluate.compare import (
        checkpoint_rows,
        compare,
        default_lq_config,
        load_checkpoints,
    )
    from sr_cli.evaluate.evaluation import markdown, write_csv, write_per_image_csv
    from sr_cli.metrics.registry import select_metrics
    from sr_cli.rebuild import rebuild

    pairs = [pair for r in records if r.status == "finished" for pair in r.checkpoints()]
    if not pairs:
        return None, []
    loaded, scale = load_checkpoints([p for _, p in pairs], prefer_ema=True)
    deg_cfg = loaded[0].degradation_config or default_lq_config(scale)
    degradation = rebuild(deg_cfg, loaded[0].source, "degradation")
    selection = select_metrics([], list(metrics))
    results, _, _ = compare(
        checkpoint_rows(loaded, degradation, deg_cfg, labels=[label for label, _ in pairs]),
        {dataset.name: open_eval_dataset(dataset, scale)},
        degradation,
        selection.metrics,
        scale,
        unavailable=selection.unavailable,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(results, out_dir / "results.csv")
    write_per_image_csv(results, out_dir / "results_per_image.csv")
    (out_dir / "results.md").write_text(markdown(results))
    return results, [label for label, _ in pairs]


# ---------------------------------------------------------------------------- outputs
def _fmt(metric: str, value: Any) -> str:
    from sr_cli.metrics.registry import get_metric

    return get_metric(metric).format(value)


def results_markdown(info: Mapping[str, Any]) -> str:
    from sr_cli.metrics.registry import header

    metrics = info["metrics"]
    lines = [
        f"# Study `{info['study']}` (preset `{info['preset']}`)",
        "",
        f"**Claim.** {info['claim'].strip()}",
        "",
        f"**Verdict: {info['verdict']}**"
        + (f" ({info['verdict_note']})" if info.get("verdict_note") else ""),
        "",
        f"Measured {info['date']} on `{info['host']}`; wall time {info['wall_seconds'] / 60:.1f} "
        f"min (runs {info['train_seconds'] / 60:.1f} min). Evaluation: {info['images']} image(s) "
        f"of `{info['dataset']}`, final generators (`last.ckpt`).",
        "",
        "## Table",
        "",
        "| run | status | " + " | ".join(header(m) for m in metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for row in info["table"]:
        cells = [
            "unavailable" if m in info["unavailable"] else _fmt(m, row["metrics"].get(m))
            for m in metrics
        ]
        lines.append(f"| {row['label']} | {row['status']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "HF ratio: SR/GT luma power above the LQ Nyquist frequency (1 = as GT, > 1 noise or "
        "invented texture, < 1 blur). Checkerboard: SR/GT power at the 1/scale lattice (pixel "
        "tiling). Transl. incons.: mean |difference| in 8-bit levels between the SR of two LQ "
        "crops shifted by 4 LQ pixels, on their shared region.",
        "",
    ]
    for title, items in (("Criteria", info["criteria"]), ("Sanity checks", info["sanity"])):
        if not items:
            continue
        lines += [f"## {title}", "", "| id | says | left | op | right | margin | verdict | |"]
        lines.append("|---|---|---|---|---|---:|---|---|")
        for v in items:
            lines.append(
                f"| {v['id']} | {v['says']} | {v['left']} | `{v['op']}` | {v['right']} | "
                f"{v['margin']:g} | **{v['verdict']}** | {v['why']} |"
            )
        lines.append("")
    failed = [r for r in info["runs"] if r["status"] not in ("finished",)]
    notes = list(info["notes"])
    notes += [f"run {r['name']}: {r['status']}: {r['error']}" for r in failed if r["error"]]
    notes += [f"{header(m)} unavailable: {why}" for m, why in info["unavailable"].items()]
    notes += [f"{header(m)}: {why}" for m, why in info.get("metric_notes", {}).items()]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Commands", "", "```bash", info["command"]]
    for r in info["runs"]:
        lines.append(shlex.join(["sr-train", *r["command"][3:]]))
    lines += ["```", "", f"Report with crops: [{info['report']}]({info['report']})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the study
def run_study(
    name: str,
    preset: str = "cpu",
    extra: Sequence[str] = (),
    out: str | Path = "studies",
    say: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """Run (or finish) a study and write its report, ``results.md`` and ``results.json``.
    Returns what ``results.json`` holds. ``train=False`` trains nothing: the runs finished so
    far are evaluated and the others listed as not finished."""
    t0 = time.monotonic()
    cfg = load_study(name)
    if name.endswith((".yaml", ".yml")):
        name = Path(name).stem
    root = Path(out) / name / preset
    records: list[RunRecord] = []
    notes: list[str] = []
    for run in cfg.runs:
        args, run_notes = run_overrides(cfg, preset, str(run), list(extra), weights_cached)
        notes += run_notes
        run_dir = root / "runs" / str(run)
        state, error = run_state(run_dir)
        record = RunRecord(
            str(run), run_dir, train_command(args, str(run), run_dir, state == "started")
        )
        record.notes = run_notes
        needs = (cfg.get("run_requires") or {}).get(str(run))
        if needs and not weights_cached(str(needs)):
            record.status = "not run"
            record.error = f"needs {needs} in the torch hub cache (nothing is downloaded)"
            notes.append(f"run {run} not run: {record.error}")
            say(f"run {run}: not run, {record.error}")
        elif state == "finished":
            record.status = "finished"
            say(f"run {run}: finished before, skipping ({run_dir})")
        elif state == "failed":
            record.status, record.error = "failed", error
            say(
                f"run {run}: failed before ({error}), skipping; delete "
                f"{run_dir / STUDY_RUN_FILE} to retry"
            )
        elif not train:
            record.status = "not finished" if state == "started" else "not started"
            record.error = "train=false: not trained by this command"
            say(f"run {run}: {record.status}, not trained (train=false)")
        else:
            if state == "started":
                say(f"run {run}: interrupted before, resuming from its last checkpoint")
            execute_run(record, say)
        records.append(record)
    train_seconds = sum(r.seconds for r in records)

    ev = cfg.get("eval") or {}
    from sr_cli.data import sample_dir

    dataset = Path(str(ev.get("dataset") or sample_dir("val")))
    metrics = list(ev.get("metrics") or ["psnr_y", "ssim_y", "lr_consistency_psnr"])
    say(
        f"evaluating {sum(len(r.checkpoints()) for r in records if r.status == 'finished')} "
        f"generator(s) and bicubic on {dataset}"
    )
    results, labels = evaluate_runs(records, dataset, metrics, root / "eval")

    status_of = {r.name: r.status for r in records}
    table_rows: list[dict[str, Any]] = []
    table: dict[str, dict[str, Any]] = {}
    images = 0
    if results is not None:
        for row in results.rows:
            label = row["model"]
            values = {m: row.get(m) for m in metrics}
            table[label] = values
            images = row["images"]
            status = "baseline" if label == BICUBIC else status_of.get(label.split("/")[0], "")
            table_rows.append(
                {
                    "label": label,
                    "status": status,
                    "metrics": values,
                    "iteration": row.get("iteration"),
                }
            )
    for r in records:
        if r.status != "finished":
            table_rows.append({"label": r.name, "status": r.status, "metrics": {}})

    verdicts = [judge(c, table, status_of) for c in cfg.criteria]
    sanity = [judge(c, table, status_of) for c in (cfg.get("sanity") or [])]
    verdict = overall(verdicts, sanity)
    note = ""
    if any(s.verdict != PASS for s in sanity):
        note = (
            "a sanity check did not pass, so this budget cannot decide the claim; run "
            f"`sr-study {name} preset=full` (GPU, DIV2K)"
        )
    elif verdict == INCONCLUSIVE and preset != "full":
        note = f"differences within the margins at this budget; run `sr-study {name} preset=full`"

    report = root / "report" / "report.html"
    pairs = [p for r in records if r.status == "finished" for _, p in r.checkpoints()]
    if pairs:
        from sr_cli.report.page import build_report

        say(f"writing the report to {report.parent}")
        build_report(pairs, report.parent, images=dataset, title=f"sr-study {name} ({preset})")

    info: dict[str, Any] = {
        "study": name,
        "preset": preset,
        "claim": str(cfg.claim),
        "verdict": verdict,
        "verdict_note": note,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": os.uname().nodename,
        "wall_seconds": time.monotonic() - t0,
        "train_seconds": train_seconds,
        "dataset": str(dataset),
        "images": images,
        "metrics": metrics,
        "unavailable": dict(results.unavailable) if results is not None else {},
        "metric_notes": dict(results.notes) if results is not None else {},
        "table": table_rows,
        "criteria": [v.__dict__ for v in verdicts],
        "sanity": [v.__dict__ for v in sanity],
        "notes": list(dict.fromkeys(notes)),
        "runs": [
            {
                "name": r.name,
                "status": r.status,
                "error": r.error,
                "seconds": r.seconds,
                "directory": str(r.directory),
                "command": [str(c) for c in r.command],
            }
            for r in records
        ],
        "command": shlex.join(
            ["sr-study", name, f"preset={preset}", *extra, *([] if train else ["train=false"])]
        ),
        "report": os.path.relpath(report, root) if pairs else "(no finished run)",
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(info, indent=2, default=str))
    (root / "results.md").write_text(results_markdown(info))
    say(f"verdict: {verdict}" + (f" ({note})" if note else ""))
    say(f"wrote {root / 'results.md'}")
    return info
