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


def prepare(args: argparse.Namespace):
    """Load the runs, create or resume the session and write its crops: a :class:`RateApp`."""
    from sr_cli.rate.session import open_session

    return open_session(
        args.runs,
        db_url(args),
        image_set=args.set,
        output=args.output,
        mode=args.mode,
        crop=args.crop,
        crops=args.crops,
        random_crops=args.random_crops,
        max_images=args.max_images,
        seed=args.seed,
        prefer_ema=not args.no_ema,
        show_gt=args.show_gt,
    )


def results(args: argparse.Namespace) -> Path:
    from sr_cli.rate.aggregate import (
        check_results_destination,
        log_to_wandb,
        markdown,
        summarize,
        write_results,
    )
    from sr_cli.rate.session import pick_session

    out = Path(args.output)
    check_results_destination(out)  # before anything is fitted
    url = db_url(args)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise ConfigError(
            f"no votes database at {url[len('sqlite:///') :]!r}: rate first, or pass --db / -o"
        )
    engine = db.open_engine(url)
    sid = pick_session(engine, url, args.session, args.runs)
    res = summarize(engine, sid, n_boot=args.bootstrap, seed=args.seed)
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
