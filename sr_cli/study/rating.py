"""Blind rating of a study's arms: ``sr-study NAME rate=true`` or ``sr-rate <study folder>``.

The session rates one generator per arm (the first seed's final generator, as in the report)
on the study's evaluation images, blind and pairwise, with the votes kept in the study's own
``rate/votes.db``. Once votes exist, the next ``sr-study`` run (``train=false`` is enough) shows
each arm's MOS with its bootstrap interval in ``results.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sr_cli.errors import ConfigError

RATE_DIR = "rate"


def rating_runs(info: Mapping[str, Any]) -> dict[str, str]:
    """``{arm: checkpoint}``: the first seed's final generator of every arm measured."""
    return dict(info.get("rating_runs") or {})


def is_study_folder(path: str | Path) -> bool:
    p = Path(path)
    try:
        return p.is_dir() and "study" in json.loads((p / "results.json").read_text())
    except (OSError, ValueError):
        return False


def study_rating_inputs(folder: str | Path) -> tuple[list[str], str, Path]:
    """``(checkpoints, image set, rate folder)`` of a study folder (``<out>/<study>/<preset>``)."""
    folder = Path(folder)
    info = json.loads((folder / "results.json").read_text())
    runs = rating_runs(info)
    if len(runs) < 2:
        raise ConfigError(
            f"{folder}: the study has {len(runs)} finished arm(s); rating compares two or more"
        )
    sets = list((info.get("eval_sets") or {}).values())
    if not sets:
        raise ConfigError(f"{folder}/results.json names no evaluation images")
    return list(runs.values()), str(sets[0]), folder / RATE_DIR


def rate_study(
    info: Mapping[str, Any],
    say: Callable[[str], None] = print,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Open (or resume) the study's rating session and serve it until Ctrl-C."""
    from sr_cli.rate import db
    from sr_cli.rate.server import make_server, serve_forever
    from sr_cli.rate.session import open_session

    root = Path(str(info["results_dir"]))
    runs, image_set, out = study_rating_inputs(root)
    app = open_session(runs, db.default_url(str(out / "votes.db")), image_set, out)
    server = make_server(app, host, port)
    say(f"rating the arms of {root}: open the address below; Ctrl-C stops")
    serve_forever(server)
