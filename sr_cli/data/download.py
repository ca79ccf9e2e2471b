"""``sr-data download NAME``: fetch, verify and extract DIV2K and the SR benchmark sets.

Archives go to ``<dest>/downloads/`` (``dest`` defaults to ``$SR_DATA_DIR`` or ``data``) and are
extracted to the layouts the configs expect::

    <dest>/DIV2K/DIV2K_train_HR/0001.png
    <dest>/DIV2K/DIV2K_train_LR_bicubic/X4/0001x4.png
    <dest>/benchmark/Set5/HR/baby.png
    <dest>/benchmark/Set5/LR_bicubic/X4/babyx4.png

Without network access the command fails at once (short timeout) and says which file to fetch
from which URL and where to put it. A placed archive (at that path, or in ``--from-dir DIR``) is
verified against the recorded SHA-256 and extracted; an already extracted folder placed at the
target path is accepted as is. Extraction goes to a temporary folder next to the target and is
renamed into place, so an interrupted run never leaves a half-extracted data set.

Checksums: the DIV2K SHA-256 values and sizes are those recorded by TensorFlow Datasets
(``tensorflow_datasets/url_checksums/div2k.txt``). The EDSR ``benchmark.tar`` value comes from a
third-party record, not from its authors, who publish none. Manga109 is distributed by its
owners on request only, so it cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sr_cli.errors import DataError

#: Seconds to wait for a connection (and between received blocks) before giving up.
DEFAULT_TIMEOUT = 10.0

DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
TFDS = "TensorFlow Datasets url_checksums/div2k.txt"


@dataclass(frozen=True)
class Archive:
    """One downloadable file.

    Attributes:
        filename: file name of the archive (``.zip``, ``.tar``, ``.tar.gz``).
        url: where to download it.
        sha256: expected SHA-256, or ``None`` when no published value was found (not verified).
        size: expected size in bytes, or ``None``.
        checksum_source: where the checksum comes from.
    """

    filename: str
    url: str
    sha256: str | None
    size: int | None = None
    checksum_source: str = ""


@dataclass(frozen=True)
class Part:
    """A folder of an archive and where it goes under ``dest``."""

    archive: str
    member: str
    target: str


@dataclass(frozen=True)
class DatasetSpec:
    """A name ``sr-data download`` accepts."""

    description: str
    parts: tuple[Part, ...] = ()
    manual: str | None = None


def _div2k(filename: str, size: int, sha256: str) -> Archive:
    return Archive(filename, DIV2K_URL + filename, sha256, size, TFDS)


ARCHIVES: dict[str, Archive] = {
    "div2k_train_hr": _div2k(
        "DIV2K_train_HR.zip",
        3530603713,
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
    ),
    "div2k_valid_hr": _div2k(
        "DIV2K_valid_HR.zip",
        448993893,
        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
    ),
    "div2k_train_lr_x2": _div2k(
        "DIV2K_train_LR_bicubic_X2.zip",
        925390592,
        "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850",
    ),
    "div2k_train_lr_x3": _div2k(
        "DIV2K_train_LR_bicubic_X3.zip",
        427847282,
        "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a",
    ),
    "div2k_train_lr_x4": _div2k(
        "DIV2K_train_LR_bicubic_X4.zip",
        246914039,
        "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
    ),
    "div2k_valid_lr_x2": _div2k(
        "DIV2K_valid_LR_bicubic_X2.zip",
        117763600,
        "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57",
    ),
    "div2k_valid_lr_x3": _div2k(
        "DIV2K_valid_LR_bicubic_X3.zip",
        54513392,
        "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3",
    ),
    "div2k_valid_lr_x4": _div2k(
        "DIV2K_valid_LR_bicubic_X4.zip",
        31505881,
        "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
    ),
    # EDSR authors' benchmark archive: Set5, Set14, B100, Urban100 with LR_bicubic X2/X3/X4.
    "benchmark": Archive(
        "benchmark.tar",
        "https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
        "80c21c333bbf6ceb5308b7243761f8284478274413a97b96f1d63e9045fd93e8",
        250112000,
        "third-party record (the EDSR authors publish no checksum)",
    ),
}


def _div2k_parts(split: str, hr: bool = True, scales: tuple[int, ...] = (2, 3, 4)) -> tuple:
    parts = []
    if hr:
        parts.append(Part(f"div2k_{split}_hr", f"DIV2K_{split}_HR", f"DIV2K/DIV2K_{split}_HR"))
    for s in scales:
        member = f"DIV2K_{split}_LR_bicubic/X{s}"
        parts.append(Part(f"div2k_{split}_lr_x{s}", member, f"DIV2K/{member}"))
    return tuple(parts)


def _bench(name: str) -> Part:
    return Part("benchmark", f"benchmark/{name}", f"benchmark/{name}")


BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100")

DATASETS: dict[str, DatasetSpec] = {
    "div2k": DatasetSpec(
        "DIV2K train + valid: HR and bicubic LR x2, x3, x4 (about 7 GB)",
        _div2k_parts("train") + _div2k_parts("valid"),
    ),
    "div2k-hr": DatasetSpec(
        "DIV2K train + valid HR images only (about 4 GB)",
        _div2k_parts("train", scales=()) + _div2k_parts("valid", scales=()),
    ),
    "div2k-valid": DatasetSpec(
        "DIV2K validation: HR and bicubic LR x2, x3, x4 (about 650 MB)", _div2k_parts("valid")
    ),
    "benchmark": DatasetSpec(
        "Set5, Set14, B100, Urban100 with LR_bicubic X2/X3/X4 (EDSR benchmark.tar, 250 MB)",
        tuple(_bench(n) for n in BENCHMARK_SETS),
    ),
    **{
        n.lower(): DatasetSpec(f"{n} from the EDSR benchmark.tar (250 MB)", (_bench(n),))
        for n in BENCHMARK_SETS
    },
    "bsd100": DatasetSpec("alias of b100", (_bench("B100"),)),
    "manga109": DatasetSpec(
        "Manga109 (distributed by its owners on request, for academic use)",
        (Part("", "", "benchmark/Manga109"),),
        manual=(
            "Manga109 is distributed by its owners on request only (http://www.manga109.org/en/"
            "download.html); sr-data cannot download it. Once you have it, put the images at "
            "{target}/HR/*.png (and LR images, if you have them, at "
            "{target}/LR_bicubic/X4/<name>x4.png), or use the BasicSR layout "
            "{target}/GTmod12 + {target}/LRbicx4. Without LR folders, LR is made with the "
            "MATLAB bicubic during evaluation."
        ),
    ),
}


class _Unavailable(Exception):
    """The network could not be reached."""


def default_dest() -> Path:
    return Path(os.environ.get("SR_DATA_DIR", "data"))


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(path: Path, archive: Archive, check: bool = True) -> bool:
    """Check size and SHA-256 of ``path``. Returns whether it was verified.

    Raises:
        DataError: size or checksum mismatch; the message names the file and both values.
    """
    if not check:
        return False
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise DataError(
            f"{str(path)!r} has {size} bytes, expected {archive.size} ({archive.filename} from "
            f"{archive.url}). The file is incomplete or a different version: delete it and "
            "download it again."
        )
    if archive.sha256 is None:
        warnings.warn(
            f"{archive.filename}: no published checksum is recorded; the file is NOT verified.",
            stacklevel=2,
        )
        return False
    actual = sha256sum(path)
    if actual != archive.sha256.lower():
        raise DataError(
            f"checksum mismatch for {str(path)!r}: SHA-256 {actual}, expected {archive.sha256} "
            f"(source: {archive.checksum_source or 'unknown'}). The file is corrupt or a "
            f"different version: delete it and fetch {archive.url} again (or pass --no-verify "
            "if you trust it)."
        )
    return True


def _norm(name: str) -> str | None:
    """A member name as a safe relative POSIX path, or ``None`` if it escapes the target."""
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or ".." in parts or not parts:
        return None
    return "/".join(parts)


def _under(name: str, member: str) -> bool:
    return not member or name == member or name.startswith(member.rstrip("/") + "/")


#: Default bound on the bytes one extraction may write (``--max-unpacked-bytes``): DIV2K's
#: largest archive unpacks to about 3.5 GB, so 50 GB leaves room and still stops a bomb.
DEFAULT_MAX_UNPACKED = 50_000_000_000


class _Budget:
    """Bytes an extraction may still write; checked against the archive's declared sizes first,
    then against every byte actually written (a header that lies about a size is caught)."""

    def __init__(self, archive: Path, limit: int) -> None:
        self.archive, self.limit, self.declared, self.written = archive, int(limit), 0, 0

    def declare(self, sizes: list[int]) -> None:
        self.declared = sum(max(0, int(s)) for s in sizes)
        if self.declared > self.limit:
            raise DataError(
                f"archive {str(self.archive)!r} declares {self.declared} unpacked bytes, more "
                f"than --max-unpacked-bytes {self.limit}; nothing was extracted. If you trust "
                "it, raise --max-unpacked-bytes."
            )

    def copy(self, src, out) -> None:
        while block := src.read(1 << 20):
            self.written += len(block)
            if self.written > self.limit:
                raise DataError(
                    f"archive {str(self.archive)!r} unpacked more than --max-unpacked-bytes "
                    f"{self.limit} bytes although its headers declare {self.declared}: the "
                    "archive lies about its sizes (a decompression bomb?); extraction stopped "
                    "and removed."
                )
            out.write(block)


def extract_member(
    archive_path: Path, member: str, staging: Path, max_bytes: int = DEFAULT_MAX_UNPACKED
) -> Path:
    """Extract the regular files of ``archive_path`` under folder ``member`` into ``staging``.

    Returns ``staging / member``. Paths that would escape ``staging`` are refused, and at most
    ``max_bytes`` are written (declared sizes and actual bytes, see :class:`_Budget`); on any
    error the caller removes ``staging``.
    """
    budget = _Budget(archive_path, max_bytes)
    count = 0
    name = archive_path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive_path) as zf:
                chosen = []
                for info in zf.infolist():
                    rel = _norm(info.filename)
                    if rel is None:
                        raise DataError(f"{archive_path}: unsafe member path {info.filename!r}")
                    if not info.is_dir() and _under(rel, member):
                        chosen.append((info, rel))
                budget.declare([info.file_size for info, _ in chosen])
                for info, rel in chosen:
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dst, "wb") as out:
                        budget.copy(src, out)
                count = len(chosen)
        else:
            with tarfile.open(archive_path) as tf:
                chosen = []
                for info in tf.getmembers():
                    rel = _norm(info.name)
                    if rel is None:
                        raise DataError(f"{archive_path}: unsafe member path {info.name!r}")
                    if info.isfile() and _under(rel, member):
                        chosen.append((info, rel))
                budget.declare([info.size for info, _ in chosen])
                for info, rel in chosen:  # regular files only: no links, devices or modes
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(info)
                    with src, open(dst, "wb") as out:
                        budget.copy(src, out)
                count = len(chosen)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read archive {str(archive_path)!r} ({exc}): it is corrupt or incomplete. "
            "Delete it and fetch it again."
        ) from exc
    except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
        raise DataError(
            f"archive {str(archive_path)!r} holds a file and a folder of the same name "
            f"({exc.filename}); it is corrupt or not the expected archive."
        ) from exc
    if count == 0:
        raise DataError(
            f"archive {str(archive_path)!r} has no files under {member!r}; is it the right file?"
        )
    return staging / member if member else staging


def fetch(url: str, path: Path, timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> None:
    """Download ``url`` to ``path`` (via ``<path>.part``, renamed when complete)."""
    from sr_cli.progress import Bar

    part = path.with_name(path.name + ".part")
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:  # also socket.timeout, ConnectionError
        raise _Unavailable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    total = int(resp.headers.get("Content-Length") or 0) or None
    bar = Bar(total, path.name, unit="B", disable=not progress)
    try:
        with resp, open(part, "wb") as out:
            while True:
                try:
                    block = resp.read(1 << 20)
                except OSError as exc:
                    raise _Unavailable(f"connection lost: {type(exc).__name__}: {exc}") from exc
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    os.replace(part, path)


def _present(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _install(src_dir: Path, target: Path, staging: Path) -> None:
    """Move an extracted folder into place (same file system: an atomic rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not _present(target):
        shutil.rmtree(target)
    os.replace(src_dir, target)
    shutil.rmtree(staging, ignore_errors=True)


def _staging(dest: Path, key: str) -> Path:
    path = dest / f".extract-{key}.tmp"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def download(
    name: str,
    dest: str | Path | None = None,
    from_dir: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    keep_archives: bool = False,
    verify: bool = True,
    progress: bool = True,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED,
) -> list[str]:
    """Fetch (or take from ``from_dir``), verify and extract data set ``name``.

    Each extraction writes at most ``max_unpacked_bytes`` (declared and actual sizes). A refused
    or failed extraction removes its staging folder (and ``dest``, if this call created it and
    it is empty): nothing half-made is left.

    Returns the lines of a report. Raises :class:`DataError` with instructions for a manual
    download when an archive can neither be found locally nor downloaded.
    """
    if isinstance(max_unpacked_bytes, bool) or not max_unpacked_bytes > 0:
        raise DataError(
            f"--max-unpacked-bytes {max_unpacked_bytes} must be positive (default "
            f"{DEFAULT_MAX_UNPACKED})."
        )
    key = name.lower()
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}.")
    spec = DATASETS[key]
    dest = Path(dest).expanduser() if dest is not None else default_dest()
    dest_abs = dest.resolve()
    src_dir = Path(from_dir).expanduser() if from_dir is not None else None
    if src_dir is not None and not src_dir.is_dir():
        raise DataError(f"--from-dir {str(src_dir)!r} is not a folder.")
    created_dest = not dest_abs.exists()
    try:
        return _download(
            spec,
            key,
            dest_abs,
            src_dir,
            timeout,
            keep_archives,
            verify,
            progress,
            int(max_unpacked_bytes),
        )
    except BaseException:
        for staging in dest_abs.glob(".extract-*.tmp"):
            shutil.rmtree(staging, ignore_errors=True)
        if created_dest:
            _remove_empty_tree(dest_abs)
        raise


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` and the empty folders in it, if nothing else is there."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def _download(spec, key, dest_abs, src_dir, timeout, keep_archives, verify, progress, max_bytes):
    downloads = dest_abs / "downloads"
    report: list[str] = []
    pending = []
    for part in spec.parts:
        target = dest_abs / part.target
        if _present(target):
            report.append(f"{part.target}: already present in {dest_abs}")
        else:
            pending.append(part)
    if not pending:
        return report
    if spec.manual:
        raise DataError(spec.manual.format(target=dest_abs / pending[0].target))

    groups: dict[str, list[Part]] = {}
    for part in pending:
        groups.setdefault(part.archive, []).append(part)
    failed: list[tuple[Archive, list[Part], str]] = []
    offline_reason: str | None = None
    for akey, parts in groups.items():
        archive = ARCHIVES[akey]
        # An extracted folder in --from-dir is copied as is (checksums cover archives only).
        if src_dir is not None:
            remaining = []
            for part in parts:
                found = next(
                    (
                        c
                        for c in (src_dir / part.member, src_dir / PurePosixPath(part.member).name)
                        if _present(c)
                    ),
                    None,
                )
                if found is None:
                    remaining.append(part)
                    continue
                staging = _staging(dest_abs, akey)
                shutil.copytree(found, staging / "copy")
                _install(staging / "copy", dest_abs / part.target, staging)
                report.append(
                    f"{part.target}: copied from extracted folder {found} (not verified: "
                    "checksums cover the archives only)"
                )
            parts = remaining
            if not parts:
                continue
        candidates = ([src_dir / archive.filename] if src_dir else []) + [
            downloads / archive.filename
        ]
        path = next((c for c in candidates if c.is_file()), None)
        downloaded = False
        if path is None:
            if offline_reason is not None:
                failed.append((archive, parts, offline_reason))
                continue
            path = downloads / archive.filename
            try:
                fetch(archive.url, path, timeout=timeout, progress=progress)
            except _Unavailable as exc:
                offline_reason = str(exc)
                failed.append((archive, parts, offline_reason))
                continue
            downloaded = True
        verified = verify_archive(path, archive, check=verify)
        for part in parts:
            staging = _staging(dest_abs, akey)
            extracted = extract_member(path, part.member, staging, max_bytes)
            _install(extracted, dest_abs / part.target, staging)
            note = "verified SHA-256" if verified else "NOT verified"
            report.append(f"{part.target}: extracted from {path} ({note})")
        if downloaded and not keep_archives:
            path.unlink(missing_ok=True)
    if failed:
        raise DataError(_manual_message(key, failed, downloads, dest_abs))
    return report


def _manual_message(
    name: str, failed: list[tuple[Archive, list[Part], str]], downloads: Path, dest: Path
) -> str:
    lines = [
        f"cannot download data set {name!r}: {failed[0][2]} (no network access?).",
        "Fetch these files by hand and put each one at the path shown:",
    ]
    for archive, parts, _ in failed:
        check = (
            f"SHA-256 {archive.sha256}, from {archive.checksum_source or 'unknown source'}"
            if archive.sha256
            else "no published checksum: it will NOT be verified"
        )
        lines.append(f"  {archive.url}")
        lines.append(f"    -> {downloads / archive.filename}   ({check})")
        lines.append(f"    extracts to: {', '.join(str(dest / p.target) for p in parts)}")
    again = f"sr-data download {name} --dest {dest}"
    lines.append(
        f"Then run `{again}` again (or `{again} --from-dir DIR` with the files in DIR): it "
        "verifies the checksums and extracts them. An already extracted folder placed at the "
        "'extracts to' path is used as is."
    )
    return "\n".join(lines)


def describe() -> list[str]:
    """One line per data set name, for ``sr-data download --list``."""
    return [f"{name:12s} {spec.description}" for name, spec in DATASETS.items()]
