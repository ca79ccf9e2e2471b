"""``sr-report RUN_DIRS...``: one self-contained HTML page comparing training runs.

The page itself is :func:`sr_cli.report.page.build_report` (crops, difference maps, spectra,
the metric table and the training curves of every run).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sr_cli.errors import exit_on_user_error
from sr_cli.report.page import build_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-report", description="One self-contained HTML page comparing sr-train runs."
    )
    parser.add_argument("runs", nargs="+", help="sr-train run directories (or .ckpt files)")
    parser.add_argument("-o", "--output", default="report", help="output folder (default: report)")
    parser.add_argument("--images", default=None, help="validation images (default: the run's)")
    parser.add_argument("--crop", type=int, default=96, help="side of the HR crops (96)")
    parser.add_argument("--max-images", type=int, default=6, help="at most this many images (6)")
    parser.add_argument("--title", default="sr-cli report")
    parser.add_argument("--no-ema", action="store_true", help="use the raw generator, not the EMA")
    parser.add_argument("--mos", default=None, help="mos.csv of sr-rate --results: MOS column")
    parser.add_argument(
        "--checkpoint",
        default="last",
        help="which checkpoint of a run folder: last (the final state, default) or best "
        "(chosen on the run's validation images)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-report RUN_DIR... [-o OUT] [--images DIR]``."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error("sr-report"):
        path = build_report(
            args.runs,
            args.output,
            images=args.images,
            crop=args.crop,
            max_images=args.max_images,
            prefer_ema=not args.no_ema,
            title=args.title,
            mos=args.mos,
            checkpoint=args.checkpoint,
        )
    print(f"sr-report: wrote {path}", file=sys.stderr)


if __name__ == "__main__":  # python -m sr_cli.commands.report
    main()
