"""``sr-data``: prepare and download SR data sets.

Examples::

    sr-data prepare data/DIV2K/DIV2K_train_HR data/DIV2K/DIV2K_train_HR_sub --lr-scales 2 3 4
    sr-data download div2k --dest data
    sr-data download set5 --from-dir ~/Downloads
    sr-data download --list
    sr-data shard data/DIV2K/DIV2K_train_HR data/div2k_shards --shard-size 200

User errors print one message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sr_cli.errors import ConfigError, SrCliError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sr-data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="crop large HR images into overlapping sub-images (and optional bicubic LR sets)",
        description="Crop every image of SRC into overlapping sub-images <stem>_s001.png in OUT "
        "(DIV2K convention), optionally with LR sets in OUT/LR_bicubic/X{s}/. Resumable: "
        "finished sources are recorded in OUT/.prepare.json and complete outputs are kept.",
    )
    p.add_argument("src", help="folder of HR images")
    p.add_argument("out", help="output folder for the sub-images")
    p.add_argument("--crop-size", "--crop", type=int, default=480, help="sub-image side (480)")
    p.add_argument("--step", type=int, default=240, help="stride between sub-images (240)")
    p.add_argument(
        "--thresh-size",
        type=int,
        default=0,
        help="add a last crop flush with the border when the remainder exceeds this (0)",
    )
    p.add_argument(
        "--lr-scales",
        type=int,
        nargs="*",
        default=[],
        metavar="S",
        help="also write MATLAB-bicubic LR sub-images for these scales, e.g. 2 3 4",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (1)")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable or too large images with a warning"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse source images whose header claims more pixels, before decoding them "
        "(default 100000000; 0 = no limit)",
    )
    p.add_argument(
        "--force", action="store_true", help="ignore the manifest and re-check every output"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "shard",
        help="write a folder of HR images as WebDataset shards for data=stream training",
        description="Write every image of SRC (original bytes, no re-encoding) into WebDataset "
        "tar shards OUT/shard-000000.tar, ... and OUT/manifest.json (image count, each shard's "
        "count, size and SHA-256). Train on it with sr-train data=stream data.train_stream=OUT "
        "(or the manifest's URL once OUT is uploaded).",
    )
    s.add_argument("src", help="folder of HR images")
    s.add_argument("out", help="new folder for the shards and manifest.json")
    s.add_argument(
        "--shard-size", type=int, default=1000, help="images per shard (1000)", metavar="N"
    )
    s.add_argument(
        "--shard-bytes",
        type=float,
        default=1e9,
        metavar="B",
        help="close a shard once it holds this many bytes (1e9)",
    )
    s.add_argument(
        "--skip-bad", action="store_true", help="leave out unreadable or too large images, warning"
    )
    s.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images whose header claims more pixels (default 100000000; 0 = no limit)",
    )
    s.add_argument("--force", action="store_true", help="replace a shard set already in OUT")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser(
        "download",
        help="download, verify and extract DIV2K or the benchmark sets",
        description="Download NAME into DEST (default $SR_DATA_DIR or ./data), verify the "
        "checksums and extract. Offline, place the archives by hand (the error says where) "
        "or pass --from-dir.",
    )
    d.add_argument("name", nargs="?", help="data set name (see --list)")
    d.add_argument("--list", action="store_true", help="list the data set names")
    d.add_argument("--dest", default=None, help="data folder (default $SR_DATA_DIR or ./data)")
    d.add_argument(
        "--from-dir",
        default=None,
        metavar="DIR",
        help="take the archives (or extracted folders) from DIR instead of downloading",
    )
    d.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds (10)")
    d.add_argument(
        "--keep-archives", action="store_true", help="keep downloaded archives after extraction"
    )
    d.add_argument("--no-verify", action="store_true", help="do not check the archives' checksums")
    d.add_argument(
        "--max-unpacked-bytes",
        type=float,
        default=50e9,
        metavar="B",
        help="refuse an extraction that would write more bytes (declared or actual; 50e9)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


#: Every numeric option of sr-data -> its default, for the message. All must be positive,
#: except ``--thresh-size``, whose 0 is the documented default (no extra border crop).
#: ``--max-pixels`` (0 = no limit) is checked by :func:`sr_cli.data.images.check_max_pixels`.
NUMERIC = {
    "crop_size": "480",
    "step": "240",
    "thresh_size": "0",
    "lr_scales": None,
    "workers": "1",
    "shard_size": "1000",
    "shard_bytes": "1e9",
    "timeout": "10",
    "max_unpacked_bytes": "50e9",
}
ZERO_ALLOWED = ("thresh_size",)


def check_numbers(args: argparse.Namespace) -> None:
    """One line for a numeric option out of range (negative, zero where 0 means nothing, NaN
    or infinite), before anything is read or written."""
    import math

    for name, default in NUMERIC.items():
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            zero_ok = name in ZERO_ALLOWED
            if math.isfinite(value) and (value > 0 or (zero_ok and value == 0)):
                continue
            need = "a number >= 0" if zero_ok else "positive"
            raise ConfigError(
                f"--{name.replace('_', '-')} {value:g} is out of range: it must be {need}"
                + (f" (default {default})." if default else ".")
            )


def _prepare(args: argparse.Namespace) -> int:
    from sr_cli.data.prepare import prepare

    report = prepare(
        args.src,
        args.out,
        crop_size=args.crop_size,
        step=args.step,
        thresh_size=args.thresh_size,
        lr_scales=args.lr_scales,
        workers=args.workers,
        skip_bad=args.skip_bad,
        force=args.force,
        progress=not args.quiet,
        max_pixels=args.max_pixels,
    )
    done = report.sources - report.skipped_sources - len(report.bad)
    print(
        f"sr-data prepare: {report.sources} source images in {args.src}: {done} processed, "
        f"{report.skipped_sources} already done, {len(report.bad)} skipped as bad; "
        f"{report.written} files written, {report.kept} kept"
        + (f", {report.removed_tmp} stale temporary files removed" if report.removed_tmp else "")
        + f" -> {args.out}"
    )
    return 0


def _shard(args: argparse.Namespace) -> int:
    from sr_cli.data.streaming import write_shards

    report = write_shards(
        args.src,
        args.out,
        shard_size=args.shard_size,
        shard_bytes=args.shard_bytes,
        skip_bad=args.skip_bad,
        max_pixels=args.max_pixels,
        force=args.force,
        progress=not args.quiet,
    )
    print(
        f"sr-data shard: {report.images} images from {args.src} in {report.shards} shards "
        f"({report.bytes / 1e6:.1f} MB)"
        + (f", {len(report.skipped)} skipped as bad" if report.skipped else "")
        + f" -> {report.manifest}\n"
        f"train on it with: sr-train data=stream data.train_stream={args.out}"
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    from sr_cli.data.download import describe, download

    if args.list or not args.name:
        print("data sets:\n  " + "\n  ".join(describe()))
        return 0 if args.list else 2
    lines = download(
        args.name,
        dest=args.dest,
        from_dir=args.from_dir,
        timeout=args.timeout,
        keep_archives=args.keep_archives,
        verify=not args.no_verify,
        progress=not args.quiet,
        max_unpacked_bytes=int(args.max_unpacked_bytes),
    )
    for line in lines:
        print(f"sr-data download: {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sr-data``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        check_numbers(args)
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "shard":
            return _shard(args)
        return _download(args)
    except SrCliError as exc:
        print(f"sr-data {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sr-data {args.command}: interrupted; run it again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
