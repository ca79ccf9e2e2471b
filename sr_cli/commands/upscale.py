"""``sr-upscale``: super-resolve image files or folders with an sr-train checkpoint.

* Any image size: the generator runs on overlapping tiles blended seamlessly
  (:mod:`sr_cli.evaluate.tiling`), and the output is assembled strip by strip, so memory is bounded by
  the tile size and the image width.
* The alpha channel is kept: it is upscaled separately with MATLAB bicubic interpolation.
* The bit depth is kept where the format allows: a 16-bit PNG gives a 16-bit PNG (grayscale,
  gray + alpha, RGB or RGBA); grayscale stays grayscale.
* Outputs never land in a data folder by default: a folder ``photos/`` goes to a new folder
  ``photos_x4/`` beside it, image files go to ``upscaled/`` in the current directory. Inputs
  are never overwritten: an output path equal to an input, or an output folder equal to the
  input folder without a ``--suffix``, is refused.
* Inputs are checked before decoding: an image whose header claims more than ``--max-pixels``
  pixels (default 100 megapixels; a tiny PNG can claim 12000x12000) is refused.

Examples::

    sr-upscale outputs/esrgan/2024-05-01_12-00-00 photo.png          # -> upscaled/photo.png
    sr-upscale best.ckpt photos/ --tile 256 --overlap 16             # -> photos_x4/
    sr-upscale best.ckpt photos/ -o big/ --precision fp16            # CUDA only
    sr-upscale best.ckpt photo.png -o photo_big.jpg --quality 90     # JPEG quality (default 95)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_cli.errors import ConfigError, exit_on_user_error
from sr_cli.evaluate.upscaling import (
    DEFAULT_QUALITY,
    FILES_OUTPUT_DIR,
    PRECISIONS,
    upscale_files,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-upscale",
        description="Super-resolve image files or folders with an sr-train checkpoint.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by sr-train, or its run directory")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument(
        "-o",
        "--output",
        help="output folder (or file name, for one input file); default: a new folder, "
        f"<folder>_x<scale>/ for a folder, ./{FILES_OUTPUT_DIR}/ for image files",
    )
    parser.add_argument(
        "--suffix",
        default=None,
        help="appended to output file names (default: none in a new "
        "folder, _x<scale> next to the input)",
    )
    parser.add_argument("--format", default=None, help="output format (default: the input's)")
    parser.add_argument(
        "--quality",
        type=int,
        default=DEFAULT_QUALITY,
        help=f"JPEG/WebP output quality, 1-100 (default {DEFAULT_QUALITY})",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse input images whose header claims more pixels, before decoding them "
        "(default 100000000; 0 = no limit)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=256,
        help="LQ tile side in pixels; 0 = whole image (default 256)",
    )
    parser.add_argument(
        "--overlap", type=int, default=16, help="LQ pixels shared by neighbouring tiles (16)"
    )
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-ema", action="store_true", help="use the raw generator, not the EMA")
    parser.add_argument(
        "--checkpoint",
        dest="which",
        default="last",
        help="which checkpoint of a run folder: last (the final state, default) or best "
        "(chosen on the run's validation images)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def check_options(args: argparse.Namespace) -> None:
    """One-line errors for numeric options that cannot work (before the checkpoint is loaded)."""
    from sr_cli.data.images import check_max_pixels

    if args.tile < 0:
        raise ConfigError(
            f"--tile {args.tile} is negative; give the LQ tile side in pixels (e.g. --tile 256), "
            "or --tile 0 for the whole image in one pass."
        )
    if args.overlap < 0:
        raise ConfigError(f"--overlap {args.overlap} is negative; use e.g. --overlap 16.")
    if args.tile and args.overlap >= args.tile:
        raise ConfigError(
            f"--overlap {args.overlap} must be smaller than --tile {args.tile}; "
            "use e.g. --tile 256 --overlap 16."
        )
    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality {args.quality} is out of range; use 1-100 (default 95).")
    check_max_pixels(args.max_pixels, "--max-pixels")


def run(args: argparse.Namespace) -> list[Path]:
    """Upscale as the parsed arguments say; returns the written files."""
    check_options(args)
    return upscale_files(
        args.checkpoint,
        args.inputs,
        args.output,
        suffix=args.suffix,
        fmt=args.format,
        quality=args.quality,
        max_pixels=args.max_pixels,
        tile=args.tile,
        overlap=args.overlap,
        precision=args.precision,
        device=args.device,
        prefer_ema=not args.no_ema,
        quiet=args.quiet,
        which=args.which,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-upscale CHECKPOINT INPUT... [-o OUTPUT] [--tile N] [--overlap N] [--precision P]``."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error("sr-upscale"):
        written = run(args)
    if not args.quiet:
        print(f"sr-upscale: wrote {len(written)} image(s)", file=sys.stderr)


if __name__ == "__main__":  # python -m sr_cli.commands.upscale
    main()
