"""``sr-rate``: rate SR runs blind in the browser, then aggregate the votes.

::

    sr-rate RUN_OR_CKPT... [--set samples|PATH] [--port N] [--host H] [--db URL]
            [--mode pairwise|absolute] [--show-gt] [-o OUT]
    sr-rate --results [RUN_OR_CKPT...] [--db URL] [--session N] [-o OUT]

The first form prepares (or resumes) a session and serves the rating page; the second fits
the scores and writes ``mos.csv`` / ``mos.md`` to ``OUT`` (default ``sr-rate/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_cli.errors import ConfigError, exit_on_user_error
from sr_cli.rate import db


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-rate",
        description="Blind mean-opinion-score sessions for sr-train runs (pairwise or 1-5).",
    )
    p.add_argument("runs", nargs="*", help="sr-train run folders or .ckpt files")
    p.add_argument("--set", default="samples", help="'samples' (bundled val images) or a folder")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/votes.db)")
    p.add_argument("-o", "--output", default="sr-rate", help="crops and results (sr-rate/)")
    p.add_argument("--mode", choices=db.MODES, default="pairwise", help="pairwise (default)")
    p.add_argument("--show-gt", action="store_true", help="show the original as a reference")
    p.add_argument("--crop", type=int, default=128, help="side of a rated region, HR px (128)")
    p.add_argument("--crops", type=int, default=2, help="regions where runs differ most (2)")
    p.add_argument("--random-crops", type=int, default=1, help="random regions per image (1)")
    p.add_argument("--max-images", type=int, default=0, help="use at most N images (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the LQ and the random regions")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not the EMA")
    g = p.add_argument_group("results")
    g.add_argument("--results", action="store_true", help="fit and print the scores, then exit")
    g.add_argument("--session", type=int, default=None, help="session id (default: the latest)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    g.add_argument("--no-wandb", action="store_true", help="do not log the scores to wandb")
    return p


def db_url(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    return db.default_url(str(Path(args.output) / "votes.db"))


def _check_args(args: argparse.Namespace) -> None:
    for name in ("crop", "crops", "random_crops", "max_images", "bootstrap"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    if args.crop < 8:
        raise ConfigError("--crop must be 8 pixels at least")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0-65535)")


# ---------------------------------------------------------------------------- sessions
def prepare(args: argparse.Namespace):
    """Load the runs, create or resume the session and write its crops: a :class:`RateApp`."""
    from sr_cli.rate import crops as C
    from sr_cli.rate.server import RateApp

    if not args.runs:
        raise ConfigError("no run given: sr-rate RUN_OR_CKPT [RUN_OR_CKPT ...] (or --results)")
    if args.mode == "pairwise" and len(args.runs) < 2:
        raise ConfigError("pairwise rating needs two runs at least (or --mode absolute)")
    runs = C.load_runs(list(args.runs), prefer_ema=not args.no_ema)
    folder = C.image_set(args.set)
    config = {
        "mode": args.mode,
        "set": str(folder),
        "files": sorted(p.name for p in folder.rglob("*") if p.is_file()),
        "crop": args.crop,
        "crops": args.crops,
        "random_crops": args.random_crops,
        "max_images": args.max_images,
        "seed": args.seed,
        "ema": not args.no_ema,
        "runs": [r.digest for r in runs],
    }
    fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    engine = db.open_engine(db_url(args))
    sid = db.find_session(engine, fingerprint)
    images = None
    resumed = sid is not None
    if sid is None:
        images = C.super_resolve_set(runs, folder, args.max_images, args.seed)
        rows = C.plan_items(
            images, len(runs), args.mode, args.crop, args.crops, args.random_crops, args.seed
        )
        run_rows = [
            {"idx": k, "name": r.name, "checkpoint": str(r.checkpoint), "digest": r.digest}
            for k, r in enumerate(runs)
        ]
        try:
            sid = db.create_session(engine, fingerprint, args.mode, config, run_rows, rows)
        except Exception:
            sid = db.find_session(engine, fingerprint)  # another sr-rate created it meanwhile
            if sid is None:
                raise
    items = db.session_items(engine, sid)
    crops_dir = out / "crops" / fingerprint[:16]
    roles = ("a", "b", "gt") if args.mode == "pairwise" else ("a", "gt")
    missing = [
        it for it in items if any(not (crops_dir / f"{it.id}_{r}.png").is_file() for r in roles)
    ]
    if missing:
        if images is None:
            images = C.super_resolve_set(runs, folder, args.max_images, args.seed)
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
        f"sr-rate: session {sid} ({args.mode}, {len(runs)} runs, {len(items)} items per rater"
        + (f"; resumed with {n_votes} vote(s) stored" if resumed else "; new")
        + f"), votes in {db_url(args)}",
        file=sys.stderr,
    )
    return RateApp(engine, sid, args.mode, fingerprint, items, crops_dir, show_gt=args.show_gt)


def pick_session(engine, args: argparse.Namespace) -> int:
    """``--session``, else the latest session of the given runs, else the latest one."""
    sessions = db.list_sessions(engine)
    if not sessions:
        raise ConfigError(f"the votes database {db_url(args)!r} has no session yet")
    if args.session is not None:
        if args.session not in {s["id"] for s in sessions}:
            raise ConfigError(
                f"--session {args.session} is not in the database; sessions: "
                + ", ".join(f"{s['id']} ({', '.join(s['runs'])})" for s in sessions)
            )
        return args.session
    if args.runs:
        from sr_cli.evaluate.inference import resolve_checkpoint
        from sr_cli.rate.crops import file_digest

        digests = [file_digest(resolve_checkpoint(p)) for p in args.runs]
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


def results(args: argparse.Namespace) -> Path:
    from sr_cli.rate.aggregate import log_to_wandb, markdown, summarize, write_results

    url = db_url(args)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise ConfigError(
            f"no votes database at {url[len('sqlite:///') :]!r}: rate first, or pass --db / -o"
        )
    engine = db.open_engine(url)
    sid = pick_session(engine, args)
    res = summarize(engine, sid, n_boot=args.bootstrap, seed=args.seed)
    out = Path(args.output)
    csv_path, md_path = write_results(res, out)
    print(markdown(res))
    print(f"sr-rate: wrote {csv_path} and {md_path}", file=sys.stderr)
    if not args.no_wandb:
        log_to_wandb(res, out)
    return csv_path


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-rate RUN_OR_CKPT...`` serves the rating page; ``sr-rate --results`` scores it."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error("sr-rate"):
        _check_args(args)
        if args.results:
            results(args)
            return
        from sr_cli.rate.server import make_server, serve_forever

        app = prepare(args)
        server = make_server(app, args.host, args.port)
    serve_forever(server)


if __name__ == "__main__":  # python -m sr_cli.commands.rate
    main()
