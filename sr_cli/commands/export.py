"""``sr-export CHECKPOINT``: write the generator as ONNX (or as community weights) and check it.

The export itself is :func:`sr_cli.evaluate.export.export`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sr_cli.errors import exit_on_user_error
from sr_cli.evaluate.export import FORMATS, OPSET, export


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-export CHECKPOINT [-o model.onnx] [--opset 18] [--no-check]``."""
    parser = argparse.ArgumentParser(
        prog="sr-export", description="Export an sr-train generator to ONNX."
    )
    parser.add_argument(
        "checkpoint", help="a .ckpt written by sr-train, its run directory, or published weights"
    )
    parser.add_argument(
        "-o", "--output", help="output file (default: next to the checkpoint, .onnx/.pth/...)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (default), or pth/safetensors: weights in the layout spandrel detects",
    )
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--no-ema", action="store_true", help="export the raw generator")
    args = parser.parse_args(argv)
    with exit_on_user_error("sr-export"):
        report = export(
            args.checkpoint,
            args.output,
            opset=args.opset,
            check=not args.no_check,
            atol=args.atol,
            prefer_ema=not args.no_ema,
            fmt=args.format,
        )
    if report.layout:
        print(f"sr-export: wrote {report.path} (x{report.scale}, {report.layout})")
        if report.detected:
            print(f"sr-export: spandrel detects {report.detected} x{report.scale}")
        for (h, w), diff in report.max_abs_diff.items():
            print(f"sr-export: spandrel vs sr-cli at {h}x{w}: max abs diff {diff:.2e}")
        if report.skipped:
            print(f"sr-export: check skipped: {report.skipped}")
        return
    print(f"sr-export: wrote {report.path} (x{report.scale}, opset {args.opset})")
    for (b, h, w), diff in report.max_abs_diff.items():
        print(f"sr-export: ONNX Runtime vs PyTorch at {b}x3x{h}x{w}: max abs diff {diff:.2e}")
    if report.skipped:
        print(f"sr-export: runtime check skipped: {report.skipped}")


if __name__ == "__main__":  # python -m sr_cli.commands.export
    main()
