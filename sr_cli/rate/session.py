"""An ``sr-rate`` session: prepared (or resumed) from the runs and the image set, with its crops
on disk, and found again in the votes database for the results.

A session is keyed by the fingerprint of everything that defines it (mode, image set, crop
plan, seed, EMA and the runs' checkpoint digests), so the same command resumes it, from any
number of ``sr-rate`` processes sharing one database.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_cli.errors import ConfigError
from sr_cli.rate import db
from sr_cli.rate.app import RateApp


def open_session(
    runs: Sequence[str | Path],
    url: str,
    image_set: str = "samples",
    output: str | Path = "sr-rate",
    mode: str = "pairwise",
    crop: int = 128,
    crops: int = 2,
    random_crops: int = 1,
    max_images: int = 0,
    seed: int = 0,
    prefer_ema: bool = True,
    show_gt: bool = False,
) -> RateApp:
    """Load the runs, create or resume the session (in the votes database at ``url``) and write
    its crops to ``output``: a :class:`~sr_cli.rate.app.RateApp` to serve."""
    from sr_cli.rate import crops as C
    from sr_cli.serialization import check_output_dir

    if not runs:
        raise ConfigError("no run given: sr-rate RUN_OR_CKPT [RUN_OR_CKPT ...] (or --results)")
    if mode == "pairwise" and len(runs) < 2:
        raise ConfigError("pairwise rating needs two runs at least (or --mode absolute)")
    out = check_output_dir(Path(output), "-o")  # before any run is loaded
    loaded = C.load_runs(list(runs), prefer_ema=prefer_ema)
    folder = C.image_set(image_set)
    config = {
        "mode": mode,
        "set": str(folder),
        "files": sorted(p.name for p in folder.rglob("*") if p.is_file()),
        "crop": crop,
        "crops": crops,
        "random_crops": random_crops,
        "max_images": max_images,
        "seed": seed,
        "ema": prefer_ema,
        "runs": [r.digest for r in loaded],
    }
    fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        engine = db.open_engine(url)
    except Exception:
        if created:  # a refused database leaves no empty output folder behind
            _remove_if_empty(out)
        raise
    sid = db.find_session(engine, fingerprint)
    images = None
    resumed = sid is not None
    if sid is None:
        images = C.super_resolve_set(loaded, folder, max_images, seed)
        rows = C.plan_items(images, len(loaded), mode, crop, crops, random_crops, seed)
        run_rows = [
            {"idx": k, "name": r.name, "checkpoint": str(r.checkpoint), "digest": r.digest}
            for k, r in enumerate(loaded)
        ]
        try:
            sid = db.create_session(engine, fingerprint, mode, config, run_rows, rows)
        except Exception:
            sid = db.find_session(engine, fingerprint)  # another sr-rate created it meanwhile
            if sid is None:
                raise
    items = db.session_items(engine, sid)
    crops_dir = out / "crops" / fingerprint[:16]
    roles = ("a", "b", "gt") if mode == "pairwise" else ("a", "gt")
    missing = [
        it for it in items if any(not (crops_dir / f"{it.id}_{r}.png").is_file() for r in roles)
    ]
    if missing:
        if images is None:
            images = C.super_resolve_set(loaded, folder, max_images, seed)
        by_name = {name: (gt, srs) for name, gt, srs in images}
        for it in missing:
            gt, srs = by_name[it.image]
            sources = {"a": srs[it.run_a], "gt": gt}
            if it.run_b is not None:
                sources["b"] = srs[it.run_b]
            for role, img in sources.items():
                C.write_crop(img, it.y, it.x, it.size, crops_dir / f"{it.id}_{role}.png")
    n_votes = len(db.session_votes(engine, sid))
    print(
        f"sr-rate: session {sid} ({mode}, {len(loaded)} runs, {len(items)} items per rater"
        + (f"; resumed with {n_votes} vote(s) stored" if resumed else "; new")
        + f"), votes in {url}",
        file=sys.stderr,
    )
    return RateApp(engine, sid, mode, fingerprint, items, crops_dir, show_gt=show_gt)


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if nothing (but an empty votes database sqlite left) is in it."""
    for leftover in ("votes.db", "votes.db-wal", "votes.db-shm", "votes.db-journal"):
        p = folder / leftover
        if p.is_file() and p.stat().st_size == 0:
            p.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass


def pick_session(
    engine, url: str, session: int | None = None, runs: Sequence[str | Path] = ()
) -> int:
    """``--session``, else the latest session of the given runs, else the latest one (of the
    votes database at ``url``)."""
    sessions = db.list_sessions(engine)
    if not sessions:
        raise ConfigError(f"the votes database {url!r} has no session yet")
    if session is not None:
        if session not in {s["id"] for s in sessions}:
            raise ConfigError(
                f"--session {session} is not in the database; sessions: "
                + ", ".join(f"{s['id']} ({', '.join(s['runs'])})" for s in sessions)
            )
        return session
    if runs:
        from sr_cli.evaluate.inference import resolve_checkpoint
        from sr_cli.rate.crops import file_digest

        digests = [file_digest(resolve_checkpoint(p)) for p in runs]
        matching = [
            s["id"]
            for s in sessions
            if [r["digest"] for r in db.session_info(engine, s["id"])["runs"]] == digests
        ]
        if not matching:
            raise ConfigError(
                "no session of these runs (in this order) in the database; drop the runs to "
                "take the latest session, or pass --session N"
            )
        return matching[-1]
    if len(sessions) > 1:
        print(
            f"sr-rate: {len(sessions)} sessions in the database; showing the latest "
            f"({sessions[-1]['id']}); choose with --session N",
            file=sys.stderr,
        )
    return sessions[-1]["id"]
