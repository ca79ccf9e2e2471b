"""``sr-study``: train a study's arms over its seeds, evaluate them in one pass, decide the claim.

1. The study file is read and checked (:mod:`sr_cli.study.spec`), and expanded into jobs:
   every arm and every warm start it uses, once per seed (:mod:`sr_cli.study.plan`).
2. Jobs that finished before are skipped, interrupted ones resume, failed ones are reported.
   The rest is handed to ``sr-train -m`` with the study sweeper (:mod:`sr_cli.study.sweeper`),
   which launches them in dependency waves through the launcher the user picked (basic,
   ``hydra/launcher=joblib``, ``cluster=slurm``, ...). A warm start is trained once per seed and
   reused by every arm, every study and every rerun whose config hashes the same.
3. Every finished run's final generator (``last.ckpt``, never a checkpoint selected on the
   evaluation images) and bicubic are evaluated on the evaluation images in one pass
   (:func:`sr_cli.evaluate.compare.compare`, the routine of ``sr-eval``).
4. Each arm gets its mean with a t-interval over seeds and a bootstrap interval over images;
   each criterion is decided on the intervals of its difference (:mod:`sr_cli.study.criteria`).
5. ``results.md`` / ``results.json``, an ``sr-report`` page, and the MOS column when ``sr-rate``
   votes exist for the study (``sr-study NAME rate=true`` opens the session).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sr_cli.errors import ConfigError
from sr_cli.study import plan as planning
from sr_cli.study.criteria import BICUBIC, judge, overall
from sr_cli.study.intervals import PASS, bootstrap_interval, t_interval
from sr_cli.study.spec import Study, load_study

#: The user's own overrides that would break a study's bookkeeping.
RESERVED_EXTRA = ("seed", "name", "resume", "init_from", "hydra.run.dir", "hydra.sweep.dir")
DEFAULT_EVAL = "heldout"


def weights_cached(filename: str) -> bool:
    from sr_cli.metrics.registry import hub_checkpoint

    return hub_checkpoint(filename).is_file()


def check_extra(extra: Sequence[str]) -> list[str]:
    for arg in extra:
        key = arg.partition("=")[0].lstrip("+~")
        if key in RESERVED_EXTRA:
            hint = "use seeds=N" if key == "seed" else "sr-study sets it for every job"
            raise ConfigError(f"sr-study: {arg!r} cannot be set for a study ({hint})")
    return list(extra)


# ---------------------------------------------------------------------------- evaluation sets
def eval_sets(study: Study, preset: str) -> dict[str, Path]:
    """``{name: folder}`` of the preset's evaluation images (default: ``heldout``)."""
    from sr_cli.data.heldout import HELDOUT_NAMES, heldout_dir

    spec = study.preset(preset).eval or study.eval.get("dataset") or DEFAULT_EVAL
    names = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, Path] = {}
    for name in map(str, names):
        if name in HELDOUT_NAMES:
            out[name] = heldout_dir()
            continue
        bench = _benchmark_folder(name)
        if bench is not None:
            out[name] = bench
            continue
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"study {study.name} preset {preset}: evaluation set {name!r} is neither "
                "heldout, a benchmark name (set5, set14, b100/bsd100, urban100) nor a folder"
            )
        out[path.name] = path
    return out


def _benchmark_folder(name: str) -> Path | None:
    from sr_cli.data.download import BENCHMARK_SETS, default_dest

    aliases = {n.lower(): n for n in BENCHMARK_SETS} | {"bsd100": "B100"}
    if name.lower() not in aliases:
        return None
    folder = default_dest() / "benchmark" / aliases[name.lower()]
    if not folder.is_dir():
        raise ConfigError(
            f"evaluation set {name} is not at {folder}; fetch it with `sr-data download "
            f"{name.lower()}` (or set SR_DATA_DIR to the folder that holds benchmark/)"
        )
    return folder


# ---------------------------------------------------------------------------- training
def _say_states(plan: planning.StudyPlan, states: Mapping[str, tuple[str, str]], say) -> None:
    for jid, job in plan.jobs.items():
        state, error = states[jid]
        what = f"{job.kind} {job.name} seed {job.seed}"
        if state == "finished":
            say(f"{what}: finished before, skipping ({job.run_dir})")
        elif state in ("failed", "diverged"):
            say(
                f"{what}: {state} before ({error}), skipping; delete "
                f"{Path(job.run_dir) / planning.STUDY_RUN_FILE} to retry"
            )
        elif state == "started":
            say(f"{what}: interrupted before, resuming from its last checkpoint")


def train_jobs(
    plan: planning.StudyPlan,
    jobs: Sequence[planning.PlannedJob],
    launch: Sequence[str],
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Train ``jobs`` with ``sr-train -m hydra/sweeper=study`` and return their statuses."""
    from sr_cli.study.sweeper import read_statuses

    launch_dir = plan.root / planning.LAUNCH_DIR
    launch_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.overrides = [*job.overrides, *planning.resume_override(job)]
    planning.write_plan(plan, jobs, launch_dir / "plan.json")
    cmd = [
        sys.executable,
        "-m",
        "sr_cli.commands.train",
        "-m",
        "hydra/sweeper=study",
        f"hydra.sweeper.plan={launch_dir / 'plan.json'}",
        f"hydra.sweep.dir={launch_dir}",
        *launch,
    ]
    say(f"training {len(jobs)} job(s): {shlex.join(['sr-train', *cmd[3:]])}")
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    log_path = launch_dir / "train.log"
    with (
        log_path.open("a") as log,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if line.startswith(("sr-train:", "[")) and ("study:" in line or "Error" in line):
                say(line.rstrip().split("] - ")[-1])
        code = proc.wait()
    statuses = read_statuses(launch_dir)
    if code in (130, -2, 143, -15):
        raise KeyboardInterrupt("training stopped by a signal; rerun the same command to resume")
    for job in jobs:
        st = statuses.get(job.id)
        if st is None and code != 0:
            st = {"status": "failed", "error": _last_error(log_path) + f" (exit status {code})"}
        if st and st.get("status") in ("failed", "diverged", "not run"):
            _record_failure(job, st)
    return statuses


def _last_error(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("sr-train:") or "Error" in ln.split(":")[0]:
            return ln
    return lines[-1] if lines else "no error message"


def _record_failure(job: planning.PlannedJob, status: Mapping[str, Any]) -> None:
    from sr_cli.serialization import atomic_write

    if status.get("status") == "not run":
        return  # its warm start failed: nothing of its own to record
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status["status"], "error": status.get("error", "")}
    atomic_write(
        run_dir / planning.STUDY_RUN_FILE, lambda f: f.write(json.dumps(record, indent=2).encode())
    )


# ---------------------------------------------------------------------------- measurements
def checkpoints_of(plan: planning.StudyPlan) -> list[tuple[str, int, Path]]:
    """``(arm label, seed, last.ckpt)`` of every finished arm run; a ``stages=N`` run gives one
    label per stage (``arm/stage_k``)."""
    out = []
    for r in plan.arm_runs:
        state, _ = planning.run_state(r.run_dir)
        if state != "finished":
            continue
        stages = planning.stage_dirs(r.run_dir)
        if stages:
            for k, folder in stages:
                out.append((f"{r.arm}/stage_{k}", r.seed, folder / "checkpoints" / "last.ckpt"))
        else:
            out.append((r.arm, r.seed, Path(r.run_dir) / "checkpoints" / "last.ckpt"))
    return out


def evaluate(
    items: Sequence[tuple[str, int, Path]], sets: Mapping[str, Path], metrics: Sequence[str]
) -> tuple[dict, Any]:
    """Every checkpoint and bicubic on every set, in one pass. Returns
    ``values[arm][seed][image][metric]`` (bicubic under seed ``-1``) and the comparison."""
    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.evaluate.compare import (
        checkpoint_rows,
        compare,
        default_lq_config,
        load_checkpoints,
    )
    from sr_cli.metrics.registry import select_metrics
    from sr_cli.rebuild import rebuild

    loaded, scale = load_checkpoints([p for _, _, p in items], prefer_ema=True)
    deg_cfg = loaded[0].degradation_config or default_lq_config(scale)
    degradation = rebuild(deg_cfg, loaded[0].source, "degradation")
    labels = [f"{arm}/seed_{seed}" for arm, seed, _ in items]
    selection = select_metrics([], list(metrics))
    results, _, _ = compare(
        checkpoint_rows(loaded, degradation, deg_cfg, labels=labels),
        {name: open_eval_dataset(folder, scale) for name, folder in sets.items()},
        degradation,
        selection.metrics,
        scale,
        unavailable=selection.unavailable,
    )
    by_label = {label: (arm, seed) for label, (arm, seed, _) in zip(labels, items)}
    by_label[BICUBIC] = (BICUBIC, -1)
    values: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for row in results.per_image:
        arm, seed = by_label[row["model"]]
        image = f"{row['dataset']}/{row['image']}"
        values.setdefault(arm, {}).setdefault(seed, {})[image] = {
            m: row.get(m) for m in metrics if row.get(m) is not None
        }
    return values, results


def arm_table(
    values: Mapping, arms: Sequence[str], metrics: Sequence[str], targets: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Per arm and metric: the mean, its t-interval over seeds and its bootstrap interval over
    images. A metric with a target (HF power, lattice power: GT = 0 dB) is shown as the distance
    ``|x - target|`` per image."""
    rows = []
    for arm in arms:
        per_seed = values.get(arm) or {}
        if not per_seed:
            continue
        cells = {}
        for m in metrics:
            target = targets.get(m)
            seed_means, per_image = [], {}
            for _, images in sorted(per_seed.items()):
                vals = {}
                for image, ms in images.items():
                    v = ms.get(m)
                    if v is None or not math.isfinite(float(v)):
                        continue
                    v = float(v) if target is None else abs(float(v) - target)
                    vals[image] = v
                    per_image.setdefault(image, []).append(v)
                if vals:
                    seed_means.append(sum(vals.values()) / len(vals))
            if not seed_means:
                continue
            cells[m] = {
                "seeds": asdict(t_interval(seed_means)),
                "images": asdict(bootstrap_interval([sum(v) / len(v) for v in per_image.values()])),
                "per_seed": seed_means,
            }
        rows.append({"arm": arm, "seeds": len(per_seed), "metrics": cells})
    return rows


def _arm_labels(items: Sequence[tuple[str, int, Path]], study: Study) -> list[str]:
    labels = list(dict.fromkeys(arm for arm, _, _ in items))
    order = list(study.arms)
    labels.sort(key=lambda a: (order.index(a.split("/")[0]) if a.split("/")[0] in order else 99, a))
    return [BICUBIC, *labels]


def statuses_of(plan: planning.StudyPlan) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for r in plan.arm_runs:
        state, _ = planning.run_state(r.run_dir)
        out.setdefault(r.arm, {})[r.seed] = {"started": "interrupted", "new": "pending"}.get(
            state, state
        )
    return out


# ---------------------------------------------------------------------------- MOS
def mos_scores(root: Path, arms: Mapping[str, str]) -> dict[str, dict[str, float]] | None:
    """``{arm: {score, lo, hi, votes}}`` from the study's rating session, when it has votes
    (``arms``: ``{arm: checkpoint}`` of the rated generators)."""
    db_path = root / "rate" / "votes.db"
    if not db_path.is_file():
        return None
    from sr_cli.rate import db
    from sr_cli.rate.aggregate import summarize

    engine = db.open_engine(db.default_url(str(db_path)))
    sessions = db.list_sessions(engine)
    if not sessions:
        return None
    try:
        res = summarize(engine, sessions[-1]["id"])
    except ConfigError:
        return None  # no vote yet
    by_ckpt = {str(Path(c).resolve()): arm for arm, c in arms.items()}
    out = {}
    for k, run in enumerate(res.runs):
        arm = by_ckpt.get(str(Path(str(run.get("checkpoint", ""))).resolve()))
        if arm is not None:
            out[arm] = {
                "score": float(res.score[k]),
                "lo": float(res.ci_low[k]),
                "hi": float(res.ci_high[k]),
                "votes": int(res.votes_per_run[k]),
            }
    return out or None


# ---------------------------------------------------------------------------- the study
def run_study(
    name: str,
    preset: str = "cpu",
    extra: Sequence[str] = (),
    out: str | Path = "studies",
    say: Callable[[str], None] = print,
    train: bool = True,
    seeds: int | None = None,
    trusted: bool = False,
    launch: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or finish) a study; write its results and report. Returns ``results.json``."""
    from sr_cli.study.plane import draw_study_plane, with_plane_metrics
    from sr_cli.study.results import metric_targets, write_results

    t0 = time.monotonic()
    study = load_study(name, trusted=trusted)
    extra = check_extra(extra)
    plan = planning.make_plan(study, preset, Path(out).resolve(), extra, seeds, weights_cached)
    sets = eval_sets(study, preset)
    pending, states = planning.pending_jobs(plan)
    fresh = all(state == "new" for state, _ in states.values())
    _say_states(plan, states, say)
    statuses: dict[str, Any] = {}
    if pending and train:
        statuses = train_jobs(plan, pending, launch, say)
    elif pending:
        say(f"train=false: {len(pending)} job(s) not trained by this command")
    train_seconds = time.monotonic() - t0

    metrics = list(study.eval.get("metrics") or ["psnr_y", "ssim_y", "lr_consistency_psnr"])
    items = checkpoints_of(plan)
    values: dict = {}
    results = None
    if items:
        say(
            f"evaluating {len(items)} generator(s) and bicubic on {', '.join(map(str, sets.values()))}"
        )
        values, results = evaluate(items, sets, with_plane_metrics(metrics))
    arm_status = statuses_of(plan)
    verdicts = [judge(c, values, arm_status) for c in study.criteria]
    sanity = [judge(c, values, arm_status) for c in study.sanity]
    verdict = overall(verdicts, sanity)
    note = ""
    if any(s.verdict != PASS for s in sanity):
        note = "a sanity check did not pass, so this budget cannot decide the claim"
    report = _report(plan, items, sets, study, preset, say)
    labels = _arm_labels(items, study)
    plane = (
        draw_study_plane(values, labels, plan.root, f"sr-study {study.name} ({preset})", say)
        if values
        else None
    )
    info: dict[str, Any] = {
        "study": study.name,
        "file": str(study.path),
        "seed_idea": study.seed_idea,
        "preset": preset,
        "claim": study.claim,
        "verdict": verdict,
        "verdict_note": note,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "wall_seconds": time.monotonic() - t0,
        "train_seconds": train_seconds,
        "fresh": fresh and train,
        "seeds": plan.seeds,
        "eval_sets": {k: str(v) for k, v in sets.items()},
        "images": len(next(iter(values.get(BICUBIC, {}).values()), {})) if values else 0,
        "metrics": metrics,
        "unavailable": dict(results.unavailable) if results is not None else {},
        "metric_notes": dict(results.notes) if results is not None else {},
        "table": arm_table(values, labels, metrics, metric_targets(metrics)),
        "criteria": [v.to_dict() for v in verdicts],
        "sanity": [v.to_dict() for v in sanity],
        "notes": plan.notes,
        "statuses": {a: {str(s): st for s, st in v.items()} for a, v in arm_status.items()},
        "plan": planning.as_mapping(plan),
        "warm_starts": _warm_summary(plan, study),
        "protocol": _protocol(study, preset, plan),
        "mos": mos_scores(plan.root, _first_seed_checkpoints(plan, items)),
        "command": shlex.join(
            ["sr-study", str(name), f"preset={preset}"]
            + ([f"seeds={seeds}"] if seeds is not None else [])
            + list(extra)
            + list(launch)
            + ([] if train else ["train=false"])
        ),
        "report": os.path.relpath(report, plan.root) if report else "",
        "plane": plane,
        "sweep_statuses": statuses,
        "results_dir": str(plan.root),
        "rating_runs": _first_seed_checkpoints(plan, items),
    }
    write_results(info, plan.root)
    say(f"verdict: {verdict}" + (f" ({note})" if note else ""))
    say(f"wrote {plan.root / 'results.md'}")
    return info


def _warm_summary(plan: planning.StudyPlan, study: Study) -> list[dict[str, Any]]:
    used: dict[str, dict[str, Any]] = {}
    for job in plan.jobs.values():
        if job.kind != "warm":
            continue
        entry = used.setdefault(
            job.name,
            {"name": job.name, "key": job.key, "folder": str(Path(job.run_dir).parent), "by": []},
        )
        entry.setdefault("seeds", []).append(job.seed)
    for arm_name, arm in study.arms.items():
        if arm.depends_on in used:
            how = "is" if arm.is_warm else "continues" if arm.continues else "starts from"
            used[arm.depends_on]["by"].append(f"{arm_name} ({how})")
    for w in study.warm_starts.values():
        if w.depends_on in used and w.name in used:
            used[w.depends_on]["by"].append(f"warm start {w.name}")
    return list(used.values())


def _protocol(study: Study, preset: str, plan: planning.StudyPlan) -> dict[str, Any]:
    p = study.preset(preset)
    return {
        "common": study.common,
        "preset": p.overrides,
        "params": p.params,
        "arms": {
            a: {
                "overrides": arm.overrides,
                "from": arm.start_from,
                "continue": arm.continues,
                "is": arm.is_warm,
            }
            for a, arm in study.arms.items()
        },
        "warm_starts": {
            w: {"overrides": j.overrides, "from": j.start_from, "continue": j.continues}
            for w, j in study.warm_starts.items()
        },
        "commands": {jid: shlex.join(["sr-train", *j.overrides]) for jid, j in plan.jobs.items()},
    }


def _first_seed_checkpoints(plan, items) -> dict[str, str]:
    """``{arm: last.ckpt}`` of the first seed: what the report shows and raters compare."""
    firsts: dict[str, str] = {}
    for arm, seed, ckpt in items:
        if arm not in firsts and seed == min(plan.seeds):
            firsts[arm] = str(ckpt)
    return firsts


def _report(plan, items, sets, study, preset, say) -> Path | None:
    """An sr-report page with one generator per arm (the first seed's final generator)."""
    firsts = {arm: Path(c) for arm, c in _first_seed_checkpoints(plan, items).items()}
    if not firsts:
        return None
    from sr_cli.report.page import build_report

    out = plan.root / "report"
    say(f"writing the report to {out}")
    return build_report(
        list(firsts.values()),
        out,
        images=next(iter(sets.values())),
        title=f"sr-study {study.name} ({preset}), seed {min(plan.seeds)}",
    )
