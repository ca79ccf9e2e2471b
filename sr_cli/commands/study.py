"""``sr-study NAME [preset=cpu|full|smoke] [out=DIR] [overrides...]``: run a study.

A study (``conf/study/NAME.yaml``) trains its runs (one ``sr-train`` each; extra overrides go to
every run), evaluates them with a bicubic row on the same images, builds an ``sr-report`` page
and writes ``results.md`` / ``results.json`` with the verdict computed from its declared
criteria (:mod:`sr_cli.study`). Rerunning skips finished runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sr_cli.errors import ConfigError, exit_on_user_error

USAGE = (
    "usage: sr-study NAME [preset=cpu|full|smoke] [out=DIR] [train=false] [sr-train overrides...]"
)


def parse_args(argv: Sequence[str]) -> tuple[str, str, str, list[str], bool]:
    """``(name, preset, out, extra overrides, train)`` from the command line (``train=false``:
    evaluate the runs finished so far, train nothing)."""
    from sr_cli.config import rewrite_overrides
    from sr_cli.study.runner import study_names

    args = list(argv)
    if not args or args[0] in ("-h", "--help") or "=" in args[0]:
        raise ConfigError(f"{USAGE}; studies: {', '.join(study_names())}")
    name, preset, out, extra, train = args[0], "cpu", "studies", [], True
    for arg in args[1:]:
        if arg in ("train=false", "train=true"):
            train = arg == "train=true"
        elif arg.startswith("preset="):
            preset = arg.split("=", 1)[1]
        elif arg.startswith("out="):
            out = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise ConfigError(f"sr-study takes no option {arg!r}; {USAGE}")
        else:
            extra.append(arg)
    return name, preset, out, rewrite_overrides(extra), train


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_error("sr-study"):
        from sr_cli.environment import quiet_startup, setup_environment
        from sr_cli.study.runner import run_study

        quiet_startup()

        name, preset, out, extra, train = parse_args(argv)
        setup_environment()
        say = lambda m: print(f"sr-study: {m}", flush=True)  # noqa: E731
        run_study(name, preset, extra, out, say=say, train=train)


if __name__ == "__main__":  # python -m sr_cli.commands.study
    main()
