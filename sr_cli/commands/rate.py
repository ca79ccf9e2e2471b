"""``sr-rate``: rate SR runs blind in the browser, then aggregate the votes.

::

    sr-rate RUN_OR_CKPT... [--set samples|PATH] [--port N] [--host H] [--db URL]
            [--mode pairwise|absolute] [--show-gt] [-o OUT]
            [--raters NAME,NAME] [--invite NAME] [--public-url URL] [--trusted-proxy ADDR]
    sr-rate --results [RUN_OR_CKPT...] [--db URL] [--session N] [-o OUT]

The first form prepares (or resumes) a session and serves the rating page; the second fits
the scores and writes ``mos.csv`` / ``mos.md`` to ``OUT`` (default ``sr-rate/``).

``--raters`` / ``--invite`` make the session *by invitation*: each rater gets a link of their
own (printed once; only its hash is stored) and only link holders can vote, each as themself.
Serving beyond localhost (``--host 0.0.0.0``) needs invitations. Every start also prints an
admin link to a page with the progress per rater and the live scores.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
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
    r = p.add_argument_group("remote raters")
    r.add_argument(
        "--raters", default=None, help="invite these raters (comma-separated): a link each"
    )
    r.add_argument(
        "--invite",
        action="append",
        default=[],
        metavar="NAME",
        help="a new invite link for NAME (replaces their earlier link); repeatable",
    )
    r.add_argument(
        "--public-url",
        default=None,
        help="address raters open, e.g. https://rate.lab.org/ behind a reverse proxy "
        "(default: this server's address)",
    )
    r.add_argument(
        "--trusted-proxy",
        default=None,
        metavar="ADDR",
        help="the reverse proxy's address: its X-Forwarded-For/-Proto headers are believed",
    )
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
    from sr_cli.rate import invites

    if args.raters:
        invites.parse_names(args.raters)  # bad names fail here, before any work
    for name in args.invite:
        invites.parse_names(name, "--invite")
    if args.public_url is not None and not args.public_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--public-url {args.public_url!r} must start with https:// (or http://), e.g. "
            "--public-url https://rate.lab.org/"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def link_base(server, public_url: str | None) -> str:
    """The address links start with: ``--public-url``, else the server's own (this machine's
    name when it listens on every interface)."""
    from sr_cli.rate.server import address

    if public_url:
        return public_url.rstrip("/") + "/"
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", "::", ""):
        return f"http://{socket.getfqdn()}:{port}/"
    return address(server)


def invite(args: argparse.Namespace, app) -> dict[str, str]:
    """Make the invite links ``--raters`` / ``--invite`` ask for: ``{name: token}``."""
    from sr_cli.rate import invites

    names = invites.parse_names(args.raters) if args.raters else []
    renew = [n for arg in args.invite for n in invites.parse_names(arg, "--invite")]
    made = invites.ensure(app.engine, app.session_id, names, renew)
    if not is_loopback(args.host) and not app.by_invitation:
        raise ConfigError(
            f"--host {args.host} lets other machines vote: invite the raters with "
            "--raters alice,bob (or --invite NAME), so that each votes with a link of their own"
        )
    return made


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


def expand_study(args: argparse.Namespace) -> None:
    """``sr-rate <study folder>``: rate the study's arms on its evaluation images, with the votes
    in the study's own ``rate/`` folder (where ``sr-study`` finds them for the MOS column)."""
    from sr_cli.study.rating import is_study_folder, study_rating_inputs

    if len(args.runs) == 1 and is_study_folder(args.runs[0]):
        runs, image_set, out = study_rating_inputs(args.runs[0])
        args.runs, args.output = runs, str(out)
        if args.set == "samples":
            args.set = image_set


def log_to_stderr() -> None:
    """The server's log (refused requests) as ``sr-rate: ...`` lines on stderr."""
    import logging

    logger = logging.getLogger("sr_cli.rate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sr-rate: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-rate RUN_OR_CKPT...`` serves the rating page; ``sr-rate --results`` scores it."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error("sr-rate"):
        _check_args(args)
        expand_study(args)
        if args.results:
            results(args)
            return
        from sr_cli.rate import invites
        from sr_cli.rate.server import make_server, serve_forever

        log_to_stderr()
        app = prepare(args)
        made = invite(args, app)
        server = make_server(app, args.host, args.port, args.trusted_proxy)
        admin = invites.issue(app.engine, app.session_id, invites.ADMIN, role="admin")
    base = link_base(server, args.public_url)
    lines = [
        f"sr-rate: invite link for {name}: {base}#invite={token}" for name, token in made.items()
    ]
    earlier = [n for n in invites.invited(app.engine, app.session_id) if n not in made]
    if earlier:
        lines.append(
            f"sr-rate: {len(earlier)} rater(s) keep the links made earlier: {', '.join(earlier)} "
            "(--invite NAME makes a new one)"
        )
    lines.append(f"sr-rate: admin page (progress, live scores): {base}admin#admin={admin}")
    serve_forever(server, lines=lines, on_stop=lambda: invites.revoke(app.engine, admin))


if __name__ == "__main__":  # python -m sr_cli.commands.rate
    main()
