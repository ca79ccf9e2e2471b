"""``sr-study NAME|FILE.yaml [preset=cpu] [seeds=N] [out=DIR] [overrides...]``: run a study.

A study (``conf/study/NAME.yaml``, or your own ``path/to/my.yaml``) trains its arms over its
seeds, evaluates their final generators and bicubic on held-out images, and writes
``results.md`` / ``results.json`` with each arm's intervals and the verdict computed from its
declared criteria (:mod:`sr_cli.study`). Rerunning skips finished runs.

Options (``key=value``; everything else is an sr-train override for every job):

``preset=``      cpu (default) | full | smoke | any preset of the file
``seeds=N``      training seeds per arm (default: the preset's)
``out=DIR``      where studies and the shared warm starts go (default ``studies``)
``train=false``  evaluate what is finished, train nothing
``trust_study=true``  accept overrides a study file may not carry (code, hydra, paths): only for
                 a file you trust
``rate=true``    after the results, open a blind rating session (sr-rate) over the arms
``hydra/launcher=joblib``, ``hydra.launcher.*``, ``cluster=slurm``, ``cluster.*``
                 how the jobs are launched (as for ``sr-train -m``)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from sr_cli.errors import ConfigError, exit_on_user_error

USAGE = (
    "usage: sr-study NAME|FILE.yaml [preset=cpu|full|smoke] [seeds=N] [out=DIR] [train=false] "
    "[rate=true] [trust_study=true] [hydra/launcher=joblib|cluster=slurm ...] "
    "[sr-train overrides...]"
)


@dataclass
class StudyArgs:
    name: str
    preset: str = "cpu"
    seeds: int | None = None
    out: str = "studies"
    train: bool = True
    rate: bool = False
    trusted: bool = False
    extra: list[str] = field(default_factory=list)
    launch: list[str] = field(default_factory=list)


def _bool(arg: str) -> bool:
    key, _, value = arg.partition("=")
    if value.lower() not in ("true", "false"):
        raise ConfigError(f"sr-study: {key}={value!r} must be true or false")
    return value.lower() == "true"


def parse_args(argv: Sequence[str]) -> StudyArgs:
    from sr_cli.config import rewrite_overrides
    from sr_cli.study.spec import study_names
    from sr_cli.study.sweeper import launch_args

    args = list(argv)
    if not args or args[0] in ("-h", "--help") or "=" in args[0]:
        raise ConfigError(f"{USAGE}; studies: {', '.join(study_names())}")
    out = StudyArgs(args[0])
    rest = []
    for arg in args[1:]:
        key, _, value = arg.partition("=")
        if key == "preset":
            out.preset = value
        elif key == "seeds":
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"sr-study: seeds={value!r} must be a positive integer")
            out.seeds = int(value)
        elif key == "out":
            out.out = value
        elif key == "train":
            out.train = _bool(arg)
        elif key == "rate":
            out.rate = _bool(arg)
        elif key == "trust_study":
            out.trusted = _bool(arg)
        elif arg.startswith("-"):
            raise ConfigError(f"sr-study takes no option {arg!r}; {USAGE}")
        else:
            rest.append(arg)
    out.launch = launch_args(rest)
    out.extra = rewrite_overrides([a for a in rest if a not in out.launch])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_error("sr-study"):
        from sr_cli.environment import quiet_startup, setup_environment
        from sr_cli.study.runner import run_study

        quiet_startup()
        a = parse_args(argv)
        setup_environment()
        say = lambda m: print(f"sr-study: {m}", flush=True)  # noqa: E731
        try:
            info = run_study(
                a.name,
                a.preset,
                a.extra,
                a.out,
                say=say,
                train=a.train,
                seeds=a.seeds,
                trusted=a.trusted,
                launch=a.launch,
            )
        except KeyboardInterrupt as stop:
            print(f"sr-study: {stop or 'interrupted'}", file=sys.stderr)
            sys.exit(130)
        if a.rate:
            from sr_cli.study.rating import rate_study

            rate_study(info, say=say)


if __name__ == "__main__":  # python -m sr_cli.commands.study
    main()
