"""From a study file to jobs: every arm and every warm start, once per seed, with its folder.

Folders (``out`` is ``sr-study ... out=DIR``, default ``studies``)::

    <out>/warm_starts/<warm>-<hash>/seed_<s>/      a warm start, shared by every arm, study and
                                                   rerun whose config hashes the same
    <out>/<study>/<preset>/runs/<arm>/seed_<s>/    an arm
    <out>/<study>/<preset>/launch/                 the multirun that trained them (plan.json,
                                                   summary.csv / summary.md)

A warm start's hash covers its overrides (common + preset + its own + the user's extra ones,
after ``$param`` substitution, last value per key, sorted) and the hash of the warm start it
starts from, never its seed: seed ``s`` of a warm start is always ``.../seed_<s>``. Changing
anything that changes what it trains gives a new folder; a rerun finds the old one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sr_cli.study.spec import Job, Study, config_hash, optional_members, substitute

STUDY_RUN_FILE = "study_run.json"
LAUNCH_DIR = "launch"
WARM_DIR = "warm_starts"


@dataclass
class PlannedJob:
    """One ``sr-train`` job of a study."""

    id: str  # "warm:<name>:<seed>" or "arm:<name>:<seed>"
    kind: str  # warm | arm
    name: str
    seed: int
    run_dir: str
    overrides: list[str]
    depends_on: list[str] = field(default_factory=list)
    key: str = ""  # warm starts: the config hash
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArmRun:
    """Where one (arm, seed) of the table comes from."""

    arm: str
    seed: int
    run_dir: Path
    job_id: str  # the job that trains it (a warm start's, for ``is:`` arms)


@dataclass
class StudyPlan:
    study: str
    preset: str
    seeds: list[int]
    root: Path
    jobs: dict[str, PlannedJob]
    arm_runs: list[ArmRun]
    notes: list[str]
    not_run: dict[str, str]  # arm -> why it is not run (missing weights)


def warm_id(name: str, seed: int) -> str:
    return f"warm:{name}:{seed}"


def arm_id(name: str, seed: int) -> str:
    return f"arm:{name}:{seed}"


def _job_overrides(
    study: Study, preset: str, job: Job, extra: Sequence[str], cached: Callable[[str], bool]
) -> tuple[list[str], list[str]]:
    p = study.preset(preset)
    args = substitute([*study.common, *p.overrides, *job.overrides], p.params)
    args, notes = optional_members(args, study.optional_terms, cached)
    return [*args, *extra], notes


def make_plan(
    study: Study,
    preset: str,
    out: Path,
    extra: Sequence[str] = (),
    seeds: int | None = None,
    cached: Callable[[str], bool] = lambda _: True,
) -> StudyPlan:
    """Every job of ``study`` at ``preset`` (see the module docstring)."""
    p = study.preset(preset)
    seed_list = list(range(int(seeds if seeds is not None else p.seeds)))
    root = Path(out) / study.name / preset
    jobs: dict[str, PlannedJob] = {}
    notes: list[str] = []
    not_run: dict[str, str] = {}
    keys: dict[str, str] = {}

    def warm_key(name: str) -> str:
        if name not in keys:
            job = study.warm_starts[name]
            args, _ = _job_overrides(study, preset, job, extra, cached)
            parent = warm_key(job.depends_on) if job.depends_on else ""
            keys[name] = config_hash(args, {"from": parent, "mode": _mode(job)})
        return keys[name]

    def warm_dir(name: str, seed: int) -> Path:
        return Path(out) / WARM_DIR / f"{name}-{warm_key(name)}" / f"seed_{seed}"

    def add_warm(name: str, seed: int) -> str:
        jid = warm_id(name, seed)
        if jid in jobs:
            return jid
        job = study.warm_starts[name]
        args, job_notes = _job_overrides(study, preset, job, extra, cached)
        deps: list[str] = []
        if job.depends_on:
            deps.append(add_warm(job.depends_on, seed))
            args.append(_start_override(job, warm_dir(job.depends_on, seed)))
        jobs[jid] = PlannedJob(
            jid,
            "warm",
            name,
            seed,
            str(warm_dir(name, seed)),
            [*args, f"seed={seed}", f"name={name}"],
            deps,
            warm_key(name),
            [f"warm start {name}: {n}" for n in job_notes],
        )
        notes.extend(jobs[jid].notes)
        return jid

    arm_runs: list[ArmRun] = []
    for arm_name, arm in study.arms.items():
        needs = study.run_requires.get(arm_name)
        if needs and not cached(needs):
            not_run[arm_name] = f"needs {needs} in the torch hub cache (nothing is downloaded)"
            notes.append(f"arm {arm_name} not run: {not_run[arm_name]}")
            continue
        for seed in seed_list:
            if arm.is_warm:
                jid = add_warm(arm.is_warm, seed)
                arm_runs.append(ArmRun(arm_name, seed, warm_dir(arm.is_warm, seed), jid))
                continue
            args, job_notes = _job_overrides(study, preset, arm, extra, cached)
            deps = []
            if arm.depends_on:
                deps.append(add_warm(arm.depends_on, seed))
                args.append(_start_override(arm, warm_dir(arm.depends_on, seed)))
            run_dir = root / "runs" / arm_name / f"seed_{seed}"
            jid = arm_id(arm_name, seed)
            jobs[jid] = PlannedJob(
                jid,
                "arm",
                arm_name,
                seed,
                str(run_dir),
                [*args, f"seed={seed}", f"name={arm_name}"],
                deps,
                notes=[f"arm {arm_name}: {n}" for n in job_notes],
            )
            notes.extend(jobs[jid].notes)
            arm_runs.append(ArmRun(arm_name, seed, run_dir, jid))
    return StudyPlan(
        study.name, preset, seed_list, root, jobs, arm_runs, list(dict.fromkeys(notes)), not_run
    )


def _mode(job: Job) -> str:
    return "continue" if job.continues else "from" if job.start_from else "scratch"


def _start_override(job: Job, parent_dir: Path) -> str:
    ckpt = parent_dir / "checkpoints" / "last.ckpt"
    if job.continues:
        return f"init_from={ckpt}"
    return f"model.pretrained={ckpt}"


# ---------------------------------------------------------------------------- states
def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_state(run_dir: str | Path) -> tuple[str, str]:
    """``(state, error)`` of a job's folder:

    * ``finished``: ``summary.json`` says so (for ``stages=N``, ``stages.json`` has every stage);
    * ``failed`` / ``diverged``: a previous study recorded it (``study_run.json``);
    * ``started``: it has a checkpoint (it is resumed);
    * ``new``.
    """
    run_dir = Path(run_dir)
    record = _read_json(run_dir / STUDY_RUN_FILE)
    if record and record.get("status") in ("failed", "diverged"):
        return str(record["status"]), str(record.get("error", ""))
    stages = _read_json(run_dir / "stages.json")
    if stages is not None:
        done = stages.get("completed") or []
        if len(done) >= int(stages.get("stages", 1)):
            return "finished", ""
    summary = _read_json(run_dir / "summary.json")
    if summary and summary.get("status") == "finished" and stages is None:
        return "finished", ""
    if any(run_dir.glob("**/checkpoints/*.ckpt")):
        return "started", ""
    return "new", ""


def pending_jobs(plan: StudyPlan) -> tuple[list[PlannedJob], dict[str, tuple[str, str]]]:
    """The jobs still to train (new or started, whose dependencies did not fail), and the state
    of every job."""
    states = {jid: run_state(job.run_dir) for jid, job in plan.jobs.items()}
    pending = []
    for jid, job in plan.jobs.items():
        state, _ = states[jid]
        if state in ("new", "started"):
            pending.append(job)
    return pending, states


def resume_override(job: PlannedJob) -> list[str]:
    """A started job continues in its own folder (``resume=<folder>``; ``init_from`` only
    seeds a new folder)."""
    state, _ = run_state(job.run_dir)
    if state != "started" or (Path(job.run_dir) / "stages.json").is_file():
        return []
    overrides = [o for o in job.overrides if not o.startswith("init_from=")]
    job.overrides = overrides
    return [f"resume={job.run_dir}"]


def stage_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """``[(stage, folder)]`` of a ``stages=N`` run, from its ``stages.json``."""
    data = _read_json(Path(run_dir) / "stages.json") or {}
    out = []
    for r in data.get("completed") or []:
        ckpt = Path(str(r.get("last_checkpoint", "")))
        if ckpt.is_file():
            out.append((int(r["stage"]), ckpt.parent.parent))
    return out


def seconds_of(run_dir: Path) -> float:
    """Training wall time recorded in ``summary.json`` (``nan`` when unknown)."""
    summary = _read_json(Path(run_dir) / "summary.json") or {}
    value = summary.get("train_seconds")
    return float(value) if isinstance(value, (int, float)) else math.nan


def write_plan(plan: StudyPlan, jobs: Sequence[PlannedJob], path: Path) -> None:
    from sr_cli.serialization import atomic_write

    payload = {"study": plan.study, "preset": plan.preset, "jobs": [j.to_dict() for j in jobs]}
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))


def read_plan(path: str | Path) -> list[dict[str, Any]]:
    data = _read_json(Path(path))
    if not data or not isinstance(data.get("jobs"), list):
        from sr_cli.errors import ConfigError

        raise ConfigError(f"{path}: not a study plan written by sr-study")
    return data["jobs"]


def as_mapping(plan: StudyPlan) -> Mapping[str, Any]:
    return {
        "seeds": plan.seeds,
        "jobs": {jid: j.to_dict() for jid, j in plan.jobs.items()},
        "arm_runs": [
            {"arm": r.arm, "seed": r.seed, "run_dir": str(r.run_dir), "job": r.job_id}
            for r in plan.arm_runs
        ],
    }
