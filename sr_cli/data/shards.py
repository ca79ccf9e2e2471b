"""A WebDataset shard set: writing it (``sr-data shard``), opening it from its manifest, and a
shard's raw samples. Training on it is :mod:`sr_cli.data.streaming`.

A manifest is data, never code: each shard name in it must be a plain file name
(:data:`SHARD_NAME`, e.g. ``shard-000000.tar``), or the set is refused before anything is read.
A ``pipe:`` command is the user's own, from their command line: it is split into words once
(``shlex``) and run as an argument list, without a shell, for the manifest and for every shard
(each word with ``manifest.json`` in it gets the shard's name instead), so nothing read from a
file is ever interpreted by a shell. A command that needs a shell says so itself
(``pipe:sh -c '... manifest.json ...'``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sr_cli.data.images import check_max_pixels, image_size, list_images
from sr_cli.errors import ConfigError, DataError

MANIFEST = "manifest.json"
FORMAT = "sr-cli-webdataset-shards"
SHARD_PATTERN = "shard-%06d.tar"
#: Where the option lives, for error messages.
OPTION = "data.train_stream"
#: A shard name in a manifest: a plain file name beside the manifest (no folder, no leading dot).
SHARD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
SHARD_NAME_RULE = "[A-Za-z0-9._-]+, no leading dot, no /"


# --------------------------------------------------------------------------------------------
# Writing a shard set


@dataclass
class ShardReport:
    """What :func:`write_shards` did."""

    images: int
    shards: int
    bytes: int
    skipped: list[str]
    manifest: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shards(
    src: str | Path,
    out: str | Path,
    shard_size: int = 1000,
    shard_bytes: float = 1e9,
    skip_bad: bool = False,
    max_pixels: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> ShardReport:
    """Write the images of ``src`` as WebDataset shards in ``out``, with ``manifest.json``.

    Each image keeps its original bytes (no re-encoding): sample ``<key>`` holds
    ``<key>.<ext>`` and ``<key>.name.txt``, the original file name; keys are the images'
    sorted positions (``00000000``, ...). A shard closes after ``shard_size`` images or once it
    holds ``shard_bytes`` bytes. Shards are written under a temporary name and renamed when
    complete; the manifest is written last, so a folder with a manifest is a complete set.

    Args:
        src: folder of HR images.
        out: new folder for the shards (an existing shard set is replaced only with ``force``).
        shard_size: images per shard.
        shard_bytes: bytes after which a shard is closed.
        skip_bad: skip images whose header cannot be read, or which are over ``max_pixels``,
            with a warning, instead of failing.
        max_pixels: largest image accepted (``None``: 100 MP; ``0``: no limit).
        force: replace the shards and manifest already in ``out``.
        progress: show a progress bar.
    """
    import webdataset as wds

    check_max_pixels(max_pixels, "--max-pixels")
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: use at least 1 image per shard.")
    if not shard_bytes > 0:
        raise ConfigError(f"--shard-bytes {shard_bytes:g}: use a positive size, e.g. 1e9.")
    src, out = Path(src).expanduser(), Path(out).expanduser()
    files = list_images(src, what="source folder")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ConfigError(
            f"output folder {str(out)!r} is inside the source folder {str(src)!r}; "
            "write the shards to a folder of their own."
        )
    from sr_cli.serialization import atomic_write_text, check_output_dir, check_output_file

    check_output_dir(out, "output folder")  # before anything is read
    if out.exists() and any(out.iterdir()):
        if not force and (out / MANIFEST).exists():
            raise ConfigError(
                f"{str(out)!r} already holds a shard set ({MANIFEST}); pass --force to rewrite "
                "it, or choose another output folder."
            )
        if not force:
            raise ConfigError(
                f"output folder {str(out)!r} is not empty; choose a new folder (or --force to "
                "write into it, replacing any shard-*.tar)."
            )
        olds = [*out.glob("shard-*.tar"), *out.glob("shard-*.tar.partial"), out / MANIFEST]
        for old in olds:  # --force replaces files, never a folder, FIFO or device
            check_output_file(old, "--force would replace", folder=False)
        for old in olds:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    shards: list[dict] = []
    counts: list[int] = [0]

    def finished(fname: str) -> None:
        final = Path(fname[: -len(".partial")])
        os.replace(fname, final)
        shards.append(
            {
                "name": final.name,
                "count": counts[-1],
                "bytes": final.stat().st_size,
                "sha256": _sha256(final),
            }
        )
        counts.append(0)

    from sr_cli.progress import Bar

    skipped: list[str] = []
    written = 0
    bar = Bar(len(files), "sr-data shard", unit="image", disable=not progress)
    writer = wds.ShardWriter(
        str(out / (SHARD_PATTERN + ".partial")),
        maxcount=shard_size,
        maxsize=shard_bytes,
        post=finished,
        verbose=0,
        encoder=False,
        mtime=0,
    )
    try:
        for i, path in enumerate(files):
            bar.update(1)
            try:
                image_size(path, max_pixels)  # header readable and within the pixel limit
            except DataError as exc:
                if not skip_bad:
                    raise DataError(f"{exc} (or pass --skip-bad to leave it out)") from exc
                warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
                skipped.append(str(path))
                continue
            ext = path.suffix.lower().lstrip(".")
            writer.write(
                {
                    "__key__": f"{i:08d}",
                    ext: path.read_bytes(),
                    "name.txt": path.name.encode("utf-8"),
                }
            )
            counts[-1] += 1
            written += 1
    finally:
        bar.close()
        writer.close()
    if not written:
        for shard in out.glob("shard-*.tar"):
            shard.unlink()
        raise DataError(f"no usable images in {str(src)!r}; nothing written.")
    # ShardWriter opens its first shard at once; an empty trailing shard (none is written
    # unless every image was skipped after a rollover) is dropped.
    for empty in [s for s in shards if s["count"] == 0]:
        (out / empty["name"]).unlink()
        shards.remove(empty)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "count": written,
        "source": str(src),
        "shards": shards,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return ShardReport(
        images=written,
        shards=len(shards),
        bytes=sum(s["bytes"] for s in shards),
        skipped=skipped,
        manifest=out / MANIFEST,
    )


# --------------------------------------------------------------------------------------------
# Opening a shard set


@dataclass(frozen=True)
class Shard:
    """One shard: where it is (``url``: a path, a URL, or ``pipe:`` and the command that prints
    it), its count, size and hash from the manifest, and for a ``pipe:`` shard the command as
    an argument list (``argv``), run without a shell."""

    url: str
    count: int
    bytes: int
    sha256: str
    argv: tuple[str, ...] | None = None


def _is_url(location: str) -> bool:
    return location.startswith("pipe:") or urlparse(location).scheme not in ("", "file")


def _manifest_url(location: str) -> str:
    if location.startswith("pipe:"):
        if MANIFEST not in location:
            raise ConfigError(
                f"{OPTION}={location!r}: a pipe: command must print the shard set's {MANIFEST} "
                f"(e.g. pipe:aws s3 cp s3://bucket/set/{MANIFEST} -); {MANIFEST} is then replaced "
                "by each shard's name."
            )
        return location
    if location.endswith(".json"):
        return location
    return location.rstrip("/") + "/" + MANIFEST


def _pipe_argv(location: str) -> list[str]:
    """The words of a ``pipe:`` command (run as an argument list, never by a shell)."""
    try:
        argv = shlex.split(location.removeprefix("pipe:"))
    except ValueError as exc:
        raise ConfigError(
            f"{OPTION}={location!r}: cannot split the pipe: command into words ({exc}); check "
            "its quotes."
        ) from None
    if not any(MANIFEST in word for word in argv):
        raise ConfigError(f"{OPTION}={location!r}: no word of the pipe: command names {MANIFEST}.")
    return argv


def check_shard_name(name: object, manifest: str) -> str:
    """``name`` if it is a plain file name (:data:`SHARD_NAME`); else a one-line error naming
    the manifest, the name and the rule."""
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 200 else repr(name)[:200] + "..."
        raise DataError(
            f"shard manifest {manifest}: the shard name {shown} is not a plain file name "
            f"({SHARD_NAME_RULE}); a manifest names files beside it and nothing else. Rewrite "
            "the set with `sr-data shard`."
        )
    return name


def _shard_of(murl: str, argv: list[str] | None, entry: object) -> Shard:
    """The shard that a manifest entry describes (its name checked first)."""
    if not isinstance(entry, dict) or not {"name", "count", "bytes", "sha256"} <= set(entry):
        raise DataError(
            f"shard manifest {murl}: an entry is not a shard (name, count, bytes, sha256); "
            "rewrite the set with `sr-data shard`."
        )
    name = check_shard_name(entry["name"], murl)
    try:
        count, size, sha = int(entry["count"]), int(entry["bytes"]), str(entry["sha256"])
    except (TypeError, ValueError):
        raise DataError(
            f"shard manifest {murl}: shard {name} has a count or size that is not a number; "
            "rewrite the set with `sr-data shard`."
        ) from None
    if argv is not None:
        words = tuple(word.replace(MANIFEST, name) for word in argv)
        return Shard("pipe:" + shlex.join(words), count, size, sha, argv=words)
    url = murl.rsplit("/", 1)[0] + "/" + name if "/" in murl else name
    return Shard(url, count, size, sha)


def _read_manifest(murl: str, argv: list[str] | None) -> bytes:
    import webdataset as wds

    if argv is None:
        with wds.gopen(murl, "rb") as fh:
            return fh.read()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise OSError(f"`{shlex.join(argv)}` exited with status {done.returncode}")
    return done.stdout


def open_shard_set(location: str, skip_bad: bool = False) -> list[Shard]:
    """The shards of the set at ``location`` (folder, manifest path or URL, ``pipe:`` command).

    Local shards are checked against the manifest's sizes (a truncated shard fails here, or is
    left out with a warning when ``skip_bad``); remote ones are checked while they are read.

    Raises:
        ConfigError: no readable manifest at ``location``.
        DataError: a shard name that is not a plain file name, a malformed entry, a local shard
            that is missing or whose size differs from the manifest's.
    """
    location = str(location)
    if not _is_url(location):
        location = str(Path(location.removeprefix("file://")).expanduser())
    murl = _manifest_url(location)
    argv = _pipe_argv(murl) if murl.startswith("pipe:") else None
    fix = (
        f"write a shard set with `sr-data shard HR_FOLDER OUT` and set {OPTION}=OUT (a folder, "
        f"its {MANIFEST} as a path or URL, or pipe:CMD printing it)"
    )
    try:
        manifest = json.loads(_read_manifest(murl, argv))
    except Exception as exc:  # noqa: BLE001 - any failure to fetch/parse is the same user error
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{OPTION}={location!r}: cannot read {murl} ({reason}); {fix}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{OPTION}={location!r}: {murl} is not an sr-cli shard manifest; {fix}.")
    entries = manifest.get("shards")
    if not isinstance(entries, list):
        raise DataError(f"shard manifest {murl}: no list of shards; {fix}.")
    listed = [_shard_of(murl, argv, entry) for entry in entries]  # every name checked first
    shards: list[Shard] = []
    for shard in listed:
        if not _is_url(shard.url):
            path = Path(shard.url)
            size = path.stat().st_size if path.is_file() else None
            if size != shard.bytes:
                what = (
                    "listed in the manifest is missing"
                    if size is None
                    else f"is {size} bytes, not {shard.bytes} as its manifest says"
                )
                msg = (
                    f"shard {str(path)!r} {what} (truncated or altered); "
                    "rewrite the set with `sr-data shard`, or set data.skip_bad=true to train "
                    "without it."
                )
                if not skip_bad:
                    raise DataError(msg)
                warnings.warn(f"skipping {msg}", stacklevel=2)
                continue
        shards.append(shard)
    if not shards:
        raise DataError(f"{OPTION}={location!r}: no usable shards left; {fix}.")
    return shards


# --------------------------------------------------------------------------------------------
# A shard's raw samples


@contextmanager
def _tar_sources(shard: Shard, retries: int, backoff: float) -> Iterator[Iterator[dict]]:
    """``{"url", "stream"}`` of one shard for webdataset's tar reader. An http(s) shard is read
    through a :class:`~sr_cli.data.resumable.ResumableHTTPReader` (``retries`` failures in a
    row, exponential ``backoff``), so a dropped connection costs a retry, not the shard, and
    every sample comes out once, in order. A ``pipe:`` shard's command runs as an argument list
    (no shell; no retry: the command may do its own); its exit status is checked once the tar
    is read, and it is stopped when the reader stops early. A local file is opened as it is."""
    from webdataset.tariterators import url_opener

    from sr_cli.data.resumable import open_resumable

    def reraise(exc: Exception) -> bool:
        raise exc

    if shard.argv is None and urlparse(shard.url).scheme in ("http", "https"):
        stream = open_resumable(shard.url, shard.bytes, retries, backoff)
        try:
            yield iter([{"url": shard.url, "stream": stream}])
        finally:
            stream.close()
        return
    if shard.argv is None:
        yield url_opener([{"url": shard.url}], handler=reraise)
        return
    proc = subprocess.Popen(list(shard.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        yield iter([{"url": shard.url, "stream": proc.stdout}])
        while proc.stdout.read(1 << 16):  # the rest of the tar's last record
            pass
        if proc.wait() != 0:
            raise OSError(f"`{shlex.join(shard.argv)}` exited with status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()


def _shard_samples(
    shard: Shard, skip_bad: bool, retries: int = 5, backoff: float = 1.0
) -> Iterator[dict]:
    """The raw samples of one shard; a truncated or unreadable shard raises, or is cut short
    with a warning when ``skip_bad``. An http(s) shard survives dropped connections
    (:func:`_tar_sources`)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def reraise(exc: Exception) -> bool:
        raise exc

    count = 0
    try:
        with _tar_sources(shard, retries, backoff) as sources:
            files = tar_file_expander(sources, handler=reraise)
            for sample in group_by_keys(files, handler=reraise):
                count += 1
                yield sample
        if count != shard.count:
            raise DataError(f"it ended after {count} of its {shard.count} images")
    except Exception as exc:  # noqa: BLE001 - tar, pipe and network errors alike
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        reason = reason.split(" @ <", 1)[0]  # webdataset appends the stream's repr
        retry = (
            f" (raise data.stream_retries, now {retries}, for a flaky network)"
            if urlparse(shard.url).scheme in ("http", "https")
            else ""
        )
        msg = (
            f"shard {shard.url} is truncated or unreadable ({reason}); rewrite the set with "
            f"`sr-data shard`{retry}, or set data.skip_bad=true to skip the rest of it."
        )
        if not skip_bad:
            raise DataError(msg) from None
        warnings.warn(f"skipping: {msg}", stacklevel=2)
