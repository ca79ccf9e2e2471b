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

import torch

from sr_cli.errors import ConfigError, DataError, exit_on_user_error
from sr_cli.evaluate.upscaling import (
    DEFAULT_QUALITY,
    PRECISIONS,
    make_forward,
    read_picture,
    upscale_picture,
    write_array,
)

#: Default output folder for image files given on the command line (in the current directory).
FILES_OUTPUT_DIR = "upscaled"


# ---------------------------------------------------------------------------- outputs
def plan_outputs(
    inputs: Sequence[str | Path],
    output: str | Path | None,
    scale: int,
    suffix: str | None = None,
    fmt: str | None = None,
) -> list[tuple[Path, Path]]:
    """``(input file, output file)`` pairs; refuses anything that would overwrite an input.

    * a folder ``photos/`` goes to ``--output`` or to a new folder ``photos_x{scale}/`` beside
      it (same file names);
    * a file ``a.png`` goes to ``--output`` (a file name when it has an image extension and there
      is one input, else a folder) or to ``upscaled/a.png`` in the current directory, never
      next to the input.
    """
    from sr_cli.data.images import IMAGE_EXTENSIONS, list_images

    if not inputs:
        raise ConfigError("no input image or folder given")
    ext = None if fmt is None else "." + fmt.lower().lstrip(".")
    if ext is not None and ext not in IMAGE_EXTENSIONS:
        raise ConfigError(f"--format {fmt!r} is unknown; choose from {list(IMAGE_EXTENSIONS)}")
    out = Path(output).expanduser() if output else None
    one_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        src = Path(item).expanduser()
        if src.is_dir():
            real = src.resolve()  # also for "." or "..": the new folder goes beside it
            out_dir = out if out is not None else real.parent / f"{real.name or 'root'}_x{scale}"
            sfx = suffix or ""
            if out_dir.resolve() == src.resolve() and not sfx:
                raise DataError(
                    f"output folder {str(out_dir)!r} is the input folder: refusing to write into it "
                    "without a --suffix (inputs are never overwritten). Pass --output or --suffix."
                )
            for f in list_images(src, what="input folder"):
                pairs.append((f, out_dir / f"{f.stem}{sfx}{ext or f.suffix}"))
        elif src.is_file():
            if out is not None and one_file and out.suffix.lower() in IMAGE_EXTENSIONS:
                target = out
            else:
                out_dir = out if out is not None else Path(FILES_OUTPUT_DIR)
                sfx = suffix
                if sfx is None:
                    same = out_dir.resolve() == src.parent.resolve()
                    sfx = f"_x{scale}" if same else ""
                target = out_dir / f"{src.stem}{sfx}{ext or src.suffix}"
            pairs.append((src, target))
        else:
            raise DataError(f"input {str(src)!r} does not exist. Check the path.")
    sources = {p.resolve() for p, _ in pairs}
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        key = dst.resolve()
        if key in sources:
            raise DataError(
                f"output {str(dst)!r} would overwrite an input image: refusing. "
                "Pass another --output or a --suffix."
            )
        if key in seen:
            raise DataError(
                f"{str(seen[key])!r} and {str(src)!r} would both be written to {str(dst)!r}; "
                "upscale them to different --output folders."
            )
        seen[key] = src
    return pairs


# ---------------------------------------------------------------------------- CLI
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
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    return device


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
    from sr_cli.data.images import image_size
    from sr_cli.evaluate.inference import load_generator, resolve_checkpoint
    from sr_cli.evaluate.tiling import check_tiling
    from sr_cli.progress import Bar

    check_options(args)
    check_tiling(args.tile, args.overlap)
    device = pick_device(args.device)
    if args.precision != "fp32" and device.type != "cuda":
        raise ConfigError(
            f"--precision {args.precision} needs a CUDA device (got {device}); use --precision fp32"
        )
    loaded = load_generator(resolve_checkpoint(args.checkpoint), prefer_ema=not args.no_ema)
    pairs = plan_outputs(args.inputs, args.output, loaded.scale, args.suffix, args.format)
    for src, _ in pairs:  # every header first: a bomb or a broken file fails before any output
        image_size(src, args.max_pixels)
    generator = loaded.generator.to(device)
    forward = make_forward(generator, device, args.precision)
    written = []
    with Bar(len(pairs), "sr-upscale", unit="image", disable=args.quiet) as bar:
        for src, dst in pairs:
            bar.describe(src.name)
            pic = read_picture(src, args.max_pixels)
            out = upscale_picture(pic, forward, loaded.scale, args.tile, args.overlap)
            write_array(out, dst, args.quality)
            written.append(dst)
            bar.update(1)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """``sr-upscale CHECKPOINT INPUT... [-o OUTPUT] [--tile N] [--overlap N] [--precision P]``."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error("sr-upscale"):
        written = run(args)
    if not args.quiet:
        print(f"sr-upscale: wrote {len(written)} image(s)", file=sys.stderr)


if __name__ == "__main__":  # python -m sr_cli.commands.upscale
    main()
