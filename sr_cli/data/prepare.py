"""``sr-data prepare``: crop large HR images into overlapping sub-images, optionally with LR sets.

Decoding a 2K PNG for every 128-pixel patch dominates training time on DIV2K; cropping the
images once into overlapping sub-images (480 px, step 240) is the usual remedy. The positions
along each axis follow the DIV2K ``extract_subimages`` convention::

    range(0, length - crop + 1, step), plus length - crop if the remainder > thresh_size

An axis shorter than ``crop`` is kept whole (one position, a smaller sub-image). Sub-images are
named ``<stem>_s001.png`` (row-major, 1-based) directly in the output folder. With
``lr_scales``, each sub-image is mod-cropped to the scale, downscaled with the MATLAB bicubic
(:func:`sr_cli.degradations.resize.imresize`) and rounded to 8 bits, into
``<out>/LR_bicubic/X{s}/<stem>_s001x{s}.png``, which :class:`~sr_cli.data.paired.PairedFolderDataset`
pairs with the HR sub-image.

The run is resumable and never leaves half-written files: every PNG is written to a temporary
file in the same folder and renamed; existing complete outputs are kept; source images that
were fully processed are recorded in ``<out>/.prepare.json`` with the size and SHA-256 of every
output file; stale temporary files of an interrupted run are removed. A rerun verifies the
recorded outputs: a source with a missing, truncated or altered output is processed again, and
only the outputs that differ from the record are rewritten (byte-identical to the originals:
PNG encoding is deterministic).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sr_cli.data.images import list_images, read_image, save_image
from sr_cli.errors import DataError

MANIFEST = ".prepare.json"


def crop_positions(length: int, crop: int, step: int, thresh_size: int = 0) -> list[int]:
    """Start offsets of the crops along one axis (DIV2K ``extract_subimages`` convention).

    Example:
        >>> crop_positions(600, 480, 240)
        [0, 120]
        >>> crop_positions(1000, 480, 240)
        [0, 240, 480, 520]
    """
    if crop <= 0 or step <= 0:
        raise ValueError(f"crop ({crop}) and step ({step}) must be positive")
    if length <= crop:
        return [0]
    positions = list(range(0, length - crop + 1, step))
    if length - (positions[-1] + crop) > thresh_size:
        positions.append(length - crop)
    return positions


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of an ``(H, W, 3)`` uint8 image as the benchmarks make it.

    Mod-crop to ``scale``, MATLAB ``imresize(hr, 1/scale, 'bicubic')`` on the 0-255 values,
    round half away from zero and clip to uint8.
    """
    import torch

    from sr_cli.degradations.resize import imresize

    hr = np.array(  # a writable copy for torch
        hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
    )
    x = torch.from_numpy(hr).permute(2, 0, 1).to(torch.float64)
    y = imresize(x, scale=1.0 / scale).clamp_(0, 255)
    y = torch.floor(y + 0.5)
    return y.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared folder was made with; a resumed run must use the same."""

    crop_size: int = 480
    step: int = 240
    thresh_size: int = 0
    lr_scales: tuple[int, ...] = ()

    def key(self) -> dict:
        d = asdict(self)
        d["lr_scales"] = sorted(self.lr_scales)
        return d


@dataclass
class PrepareReport:
    """Counts of one ``prepare`` run."""

    sources: int = 0
    skipped_sources: int = 0
    written: int = 0
    kept: int = 0
    bad: list[str] = field(default_factory=list)
    removed_tmp: int = 0


def lr_dir(out: Path, scale: int) -> Path:
    return out / "LR_bicubic" / f"X{scale}"


#: What the manifest records of one output file: ``[size in bytes, SHA-256 hex digest]``.
FileRecord = list


def file_record(path: Path) -> FileRecord:
    """``[size, sha256]`` of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return [path.stat().st_size, digest.hexdigest()]


def matches_record(path: Path, record: FileRecord | None) -> bool:
    """``path`` exists with the recorded size (checked first, cheaply) and checksum."""
    if record is None or not path.is_file():
        return False
    try:
        return path.stat().st_size == record[0] and file_record(path) == list(record)
    except (OSError, IndexError, TypeError):
        return False


def _complete(path: Path, size: tuple[int, int], record: FileRecord | None = None) -> bool:
    """``path`` exists, has the expected ``(h, w)`` and passes PNG's own integrity check; with a
    ``record`` from the manifest, it must also have the recorded size and checksum."""
    if not path.is_file():
        return False
    if record is not None and not matches_record(path, record):
        return False
    try:
        with Image.open(path) as im:
            if (im.height, im.width) != size:
                return False
            im.verify()
    except Exception:  # any decoding problem means "write it again"
        return False
    return True


def _outputs(stem: str, h: int, w: int, s: PrepareSettings) -> list[tuple[str, int, int, int]]:
    """``(name, top, left, size_h, size_w)`` of every sub-image of an ``h x w`` source."""
    ys = crop_positions(h, s.crop_size, s.step, s.thresh_size)
    xs = crop_positions(w, s.crop_size, s.step, s.thresh_size)
    out = []
    k = 0
    for y in ys:
        for x in xs:
            k += 1
            out.append((f"{stem}_s{k:03d}", y, x, min(s.crop_size, h), min(s.crop_size, w)))
    return out


def process_image(
    src: str,
    out: str,
    settings: PrepareSettings,
    recorded: dict[str, FileRecord] | None = None,
    max_pixels: int | None = None,
) -> tuple[str, int, int, dict[str, FileRecord]]:
    """Crop one source image into ``out``; returns ``(source name, written, kept, records)``.

    Outputs that already exist and are complete are kept, so an interrupted image resumes; an
    output with an entry in ``recorded`` (``{path relative to out: [size, sha256]}``) is kept
    only if it still matches it. ``records`` holds the same for every output now on disk.
    """
    src_p, out_p = Path(src), Path(out)
    recorded = recorded or {}
    img = read_image(src_p, max_pixels=max_pixels)
    h, w = img.shape[:2]
    written = kept = 0
    records: dict[str, FileRecord] = {}

    def ensure(path: Path, size: tuple[int, int], make) -> None:
        nonlocal written, kept
        rel = path.relative_to(out_p).as_posix()
        if _complete(path, size, recorded.get(rel)):
            kept += 1
        else:
            save_image(make(), path)
            written += 1
        records[rel] = file_record(path)

    for name, y, x, ch, cw in _outputs(src_p.stem, h, w, settings):
        sub = np.ascontiguousarray(img[y : y + ch, x : x + cw])
        ensure(out_p / f"{name}.png", (ch, cw), lambda sub=sub: sub)
        for scale in settings.lr_scales:
            ensure(
                lr_dir(out_p, scale) / f"{name}x{scale}.png",
                (ch // scale, cw // scale),
                lambda sub=sub, scale=scale: bicubic_lr(sub, scale),
            )
    return src_p.name, written, kept, records


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


class Manifest:
    """``<out>/.prepare.json``: the settings and the source images already done, each with the
    ``[size, sha256]`` of its output files (``{"done": {src: {"outputs": {rel: record}}}}``)."""

    def __init__(self, out: Path, settings: PrepareSettings, force: bool) -> None:
        self.path = out / MANIFEST
        self.out = out
        self.settings = settings
        self.done: dict[str, dict] = {}
        if self.path.is_file() and not force:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            old = data.get("settings")
            if old is not None and old != settings.key():
                raise DataError(
                    f"{str(out)!r} was prepared with different settings ({old}); now asked for "
                    f"{settings.key()}. Use a new output folder, or pass --force to redo it."
                )
            # Entries of older manifests (a bare list of names) carry no checksums: redone.
            self.done = {
                k: v
                for k, v in dict(data.get("done", {})).items()
                if isinstance(v, dict) and isinstance(v.get("outputs"), dict)
            }

    def recorded(self, name: str) -> dict[str, FileRecord]:
        """``{output path relative to out: [size, sha256]}`` recorded for source ``name``."""
        entry = self.done.get(name)
        return dict(entry["outputs"]) if entry else {}

    def is_done(self, name: str, out: Path) -> bool:
        """Source ``name`` was finished and every output still has its recorded size and
        checksum (a truncated or altered output makes the source be processed again)."""
        outputs = self.recorded(name)
        return bool(outputs) and all(
            matches_record(out / rel, record) for rel, record in outputs.items()
        )

    def mark(self, name: str, records: dict[str, FileRecord]) -> None:
        self.done[name] = {"outputs": records}
        from sr_cli.serialization import atomic_write_text

        text = json.dumps({"settings": self.settings.key(), "done": self.done}, indent=1)
        atomic_write_text(self.path, text)


def _remove_stale_tmp(folders: Iterable[Path]) -> int:
    n = 0
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                n += 1
    return n


def prepare(
    src: str | Path,
    out: str | Path,
    crop_size: int = 480,
    step: int = 240,
    thresh_size: int = 0,
    lr_scales: Sequence[int] = (),
    workers: int = 1,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool = True,
    max_pixels: int | None = None,
) -> PrepareReport:
    """Crop every image of ``src`` into overlapping sub-images in ``out`` (see module doc).

    Args:
        src: folder of HR images (e.g. ``DIV2K_train_HR``).
        out: output folder (e.g. ``DIV2K_train_HR_sub``); created if needed.
        crop_size, step, thresh_size: the sub-image grid (DIV2K convention: 480, 240, 0).
        lr_scales: also write bicubic LR sub-images for these scales.
        workers: processes; ``1`` works in this process.
        skip_bad: skip unreadable source images with a warning instead of failing.
        force: ignore the manifest (re-check every output, even with other settings).
        progress: show a progress bar.
        max_pixels: refuse (or with ``skip_bad``, skip) source images whose header claims more
            pixels, before decoding them (``None``: 100 megapixels; ``0``: no limit).

    Raises:
        DataError: missing/empty ``src``, unreadable image (without ``skip_bad``), bad
            settings, or ``out`` prepared before with other settings.
    """
    from sr_cli.data.images import check_max_pixels
    from sr_cli.progress import Bar

    check_max_pixels(max_pixels, "--max-pixels")
    lr_scales = tuple(sorted({int(s) for s in lr_scales}))
    for s in lr_scales:
        if s < 1:
            raise DataError(f"--lr-scales must be positive integers, got {s}")
        if crop_size % s:
            raise DataError(
                f"--crop-size {crop_size} is not a multiple of LR scale {s}; the LR sub-images "
                f"would not align. Use e.g. --crop-size {crop_size - crop_size % s or s}."
            )
    if crop_size <= 0 or step <= 0 or thresh_size < 0:
        raise DataError(
            f"--crop-size ({crop_size}) and --step ({step}) must be positive and "
            f"--thresh-size ({thresh_size}) non-negative."
        )
    settings = PrepareSettings(int(crop_size), int(step), int(thresh_size), lr_scales)
    src_p, out_p = Path(src).expanduser(), Path(out).expanduser()
    files = list_images(src_p, what="source folder")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(
                f"{str(stems[f.stem])!r} and {str(f)!r} have the same name stem, so their "
                "sub-images would overwrite each other. Rename or remove one of them."
            )
        stems[f.stem] = f
    if src_p.resolve() == out_p.resolve():
        raise DataError(f"output folder {str(out_p)!r} must differ from the source folder.")
    from sr_cli.serialization import check_output_dir

    check_output_dir(out_p, "output folder")  # before anything is decoded
    out_p.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(sources=len(files))
    report.removed_tmp = _remove_stale_tmp([out_p] + [lr_dir(out_p, s) for s in lr_scales])
    manifest = Manifest(out_p, settings, force)
    todo = [f for f in files if not manifest.is_done(f.name, out_p)]
    report.skipped_sources = len(files) - len(todo)

    def handle(path: Path, result=None, exc: BaseException | None = None) -> None:
        if exc is not None:
            if isinstance(exc, DataError) and skip_bad:
                warnings.warn(f"skipping {path}: {exc}", stacklevel=3)
                report.bad.append(str(path))
                return
            raise exc
        name, written, kept, records = result
        report.written += written
        report.kept += kept
        manifest.mark(name, records)

    bar = Bar(
        len(files),
        "sr-data prepare",
        unit="image",
        initial=report.skipped_sources,
        disable=not progress,
    )
    try:
        if workers <= 1 or len(todo) <= 1:
            for path in todo:
                try:
                    result = process_image(
                        str(path), str(out_p), settings, manifest.recorded(path.name), max_pixels
                    )
                except DataError as exc:
                    handle(path, exc=exc)
                else:
                    handle(path, result)
                bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker
            ) as pool:
                futures = {
                    pool.submit(
                        process_image,
                        str(p),
                        str(out_p),
                        settings,
                        manifest.recorded(p.name),
                        max_pixels,
                    ): p
                    for p in todo
                }
                try:
                    for fut in as_completed(futures):
                        exc = fut.exception()
                        handle(futures[fut], None if exc else fut.result(), exc)
                        bar.update(1)
                except BaseException:
                    for fut in futures:
                        fut.cancel()  # do not wait for the queued images
                    raise
    finally:
        bar.close()
    return report


def expected_count(h: int, w: int, crop_size: int = 480, step: int = 240, thresh: int = 0) -> int:
    """Number of sub-images of an ``h x w`` image."""
    return math.prod(len(crop_positions(n, crop_size, step, thresh)) for n in (h, w))
