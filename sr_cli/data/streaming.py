"""Training on WebDataset shards: HR images streamed from tar files, local or remote.

A data set too big for one disk or for one machine's memory is written once as a *shard set*
with ``sr-data shard HR_FOLDER OUT``: WebDataset tar files (``shard-000000.tar``, ...) that hold
every image's original bytes (``<key>.png`` or ``.jpg`` ..., plus ``<key>.name.txt``, the file
name), and ``manifest.json`` with the image count and each shard's image count, size and
SHA-256. Training reads it with ``data=stream data.train_stream=LOCATION``: a local folder, a
``manifest.json`` path or URL (``https://host/set/manifest.json``), or a ``pipe:`` command that
prints the manifest (``pipe:aws s3 cp s3://bucket/set/manifest.json -``); the shards are found
beside it (in a ``pipe:`` command, ``manifest.json`` is replaced by each shard's name). The
shards are opened with ``webdataset`` (local files, http(s) through curl, ``pipe:`` commands).

Why WebDataset rather than ``litdata``: sr-cli keys the training sample stream on the
iteration, so that a run resumed from any checkpoint sees exactly what the uninterrupted run
saw (``SeededSampler``). litdata's resumable state (``StreamingDataLoader.state_dict``) is
per-loader state that Lightning would have to save beside ours and that assumes its own
shuffling; plain tar shards with a manifest of per-shard counts let the stream be a pure
function of ``(seed, iteration)`` instead, and need no conversion step beyond copying bytes.
WebDataset itself keeps no state, so the schedule below is what makes resume exact:

* The shards of pass ``k`` are put in a seeded order (``seed, k``) and dealt round-robin to
  ``ranks x workers`` *slots*; a slot reads only its own shards, so no two workers or ranks
  ever read the same image in a pass, and together they read every image once.
* A slot reads its shards in blocks of ``shuffle_shards``, interleaving the shards of a block
  and shuffling through a buffer of ``shuffle_buffer`` images, both drawn from a generator
  seeded with ``(seed, pass, slot, block)``; the buffer is emptied at the end of each block.
* Training batch ``t`` of a rank comes from slot ``t mod workers`` of that rank, as its
  ``t // workers``-th batch, and the crop and flips of a sample are drawn from a seed derived
  from ``(seed, slot, position)``. A worker asked to start at batch ``t`` skips whole blocks
  by the manifest's counts and reads (without decoding) at most one block up to its position.

Workers are started afresh for every epoch (so that each learns its position from the
iteration), and each then re-reads, without decoding, at most one block to reach it.

So a resumed run gets bit-identical batches, provided the shard set, ``data.num_workers`` and
the number of processes are the same. A shard that turns out truncated breaks that guarantee
only with ``data.skip_bad=true`` (the skipped images shift the stream).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sr_cli.data.arrays import augment, to_tensor
from sr_cli.data.images import _to_rgb8, check_max_pixels, image_size, list_images, open_image
from sr_cli.errors import ConfigError, DataError

# Lightning warns that an IterableDataset's length may be wrong with several workers; each
# worker here yields exactly its share of an epoch (see StreamingHRDataset.__iter__).
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

MANIFEST = "manifest.json"
FORMAT = "sr-cli-webdataset-shards"
SHARD_PATTERN = "shard-%06d.tar"
#: Where the option lives, for error messages.
OPTION = "data.train_stream"


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
    url: str
    count: int
    bytes: int
    sha256: str


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


def _shard_url(manifest_url: str, name: str) -> str:
    if manifest_url.startswith("pipe:"):
        return manifest_url.replace(MANIFEST, name)
    return manifest_url.rsplit("/", 1)[0] + "/" + name if "/" in manifest_url else name


def open_shard_set(location: str, skip_bad: bool = False) -> list[Shard]:
    """The shards of the set at ``location`` (folder, manifest path or URL, ``pipe:`` command).

    Local shards are checked against the manifest's sizes (a truncated shard fails here, or is
    left out with a warning when ``skip_bad``); remote ones are checked while they are read.

    Raises:
        ConfigError: no readable manifest at ``location``.
        DataError: a local shard is missing or its size differs from the manifest's.
    """
    import webdataset as wds

    location = str(location)
    if not _is_url(location):
        location = str(Path(location.removeprefix("file://")).expanduser())
    murl = _manifest_url(location)
    fix = (
        f"write a shard set with `sr-data shard HR_FOLDER OUT` and set {OPTION}=OUT (a folder, "
        f"its {MANIFEST} as a path or URL, or pipe:CMD printing it)"
    )
    try:
        with wds.gopen(murl, "rb") as fh:
            raw = fh.read()
        manifest = json.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch/parse is the same user error
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{OPTION}={location!r}: cannot read {murl} ({reason}); {fix}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{OPTION}={location!r}: {murl} is not an sr-cli shard manifest; {fix}.")
    shards: list[Shard] = []
    for entry in manifest["shards"]:
        shard = Shard(
            _shard_url(murl, entry["name"]),
            int(entry["count"]),
            int(entry["bytes"]),
            entry["sha256"],
        )
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
# Reading


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` uint8 RGB, refusing more than ``max_pixels`` (from the
    header, before decoding, as for image files: :func:`~sr_cli.data.images.open_image`)."""
    with open_image(data, max_pixels, name=name) as im:
        try:
            im.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                f"cannot decode image {name} ({exc}); replace it in the shard set."
            ) from exc
        return np.ascontiguousarray(_to_rgb8(im, Path(name), warn=False))


def _shard_samples(
    shard: Shard, skip_bad: bool, retries: int = 5, backoff: float = 1.0
) -> Iterator[dict]:
    """The raw samples of one shard; a truncated or unreadable shard raises, or is cut short
    with a warning when ``skip_bad``. An http(s) shard survives dropped connections
    (:func:`~sr_cli.data.resumable.tar_samples`)."""
    from sr_cli.data.resumable import tar_samples

    count = 0
    try:
        for sample in tar_samples(shard.url, shard.bytes, retries, backoff):
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


class StreamingHRDataset(IterableDataset):
    """Random HR patches from a WebDataset shard set, in a stream keyed on the iteration.

    The crops and flips are those of :class:`~sr_cli.data.datasets.HRFolderDataset`; LQ is made
    on the training device. See the module docstring for the order of the samples.

    Args:
        shards: the shard set (:func:`open_shard_set`).
        patch_size, scale, hflip, vflip, rot90: as for ``HRFolderDataset``.
        batch_size: batch size per process (a worker yields whole batches).
        iters_per_epoch: batches per rank and epoch.
        seed: seeds the shard order, the shuffle and the crops.
        shuffle_shards: shards read together, interleaved (the unit of the shuffle).
        shuffle_buffer: images held in the shuffle buffer.
        skip_bad: skip undecodable or too-small images and truncated shards with a warning.
        max_pixels: refuse images over this many pixels (``None``: 100 MP; ``0``: no limit).
        rank, world_size: this process and the number of processes.
        stream_retries: http(s) shards: failures in a row tolerated on a connection before
            the shard counts as unreadable (it resumes where it stopped: same samples, once).
        stream_backoff: seconds before the first retry, doubled after each failure in a row.

    Items are dicts ``{"gt": (3, P, P) float32, "index": int, "key": str}``. Set
    :attr:`start_batch` (the rank's number of batches already trained) before iterating.
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        patch_size: int,
        scale: int,
        batch_size: int,
        iters_per_epoch: int,
        seed: int = 0,
        shuffle_shards: int = 4,
        shuffle_buffer: int = 1000,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        skip_bad: bool = False,
        max_pixels: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        stream_retries: int = 5,
        stream_backoff: float = 1.0,
    ) -> None:
        if patch_size % scale:
            raise DataError(
                f"data.patch_size={patch_size} is not a multiple of scale={scale}; "
                f"use e.g. data.patch_size={patch_size - patch_size % scale or scale * 8}."
            )
        if (
            isinstance(stream_retries, bool)
            or not isinstance(stream_retries, int)
            or (stream_retries < 0)
        ):
            raise ConfigError(f"data.stream_retries={stream_retries!r}: use a whole number >= 0.")
        if not isinstance(stream_backoff, (int, float)) or not stream_backoff >= 0:
            raise ConfigError(f"data.stream_backoff={stream_backoff!r}: use seconds >= 0, e.g. 1.")
        if shuffle_shards < 1 or shuffle_buffer < 1:
            raise ConfigError(
                f"data.shuffle_shards={shuffle_shards}, data.shuffle_buffer={shuffle_buffer}: "
                "both must be at least 1."
            )
        self.shards = list(shards)
        self.patch_size = int(patch_size)
        self.scale = int(scale)
        self.batch_size = int(batch_size)
        self.iters_per_epoch = int(iters_per_epoch)
        self.seed = int(seed)
        self.shuffle_shards = int(shuffle_shards)
        self.shuffle_buffer = int(shuffle_buffer)
        self.flags = (hflip, vflip, rot90)
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.stream_retries = int(stream_retries)
        self.stream_backoff = float(stream_backoff)
        self.start_batch = 0

    def __len__(self) -> int:
        return self.iters_per_epoch * self.batch_size

    # -- the schedule ------------------------------------------------------------------------

    def check_slots(self, workers: int) -> None:
        """Every slot (rank x worker) needs a shard of its own in each pass."""
        slots = self.world_size * max(1, workers)
        if len(self.shards) < slots:
            raise ConfigError(
                f"{OPTION}: the shard set has {len(self.shards)} usable shards, fewer than the "
                f"{self.world_size} process(es) x {max(1, workers)} worker(s) = {slots} readers "
                "that each need shards of their own; rewrite it with smaller shards "
                "(`sr-data shard --shard-size N`) or lower data.num_workers."
            )

    def _blocks(self, slot: int, slots: int, k: int) -> list[list[Shard]]:
        order = np.random.default_rng([self.seed, k]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[slot::slots]]
        b = self.shuffle_shards
        return [mine[i : i + b] for i in range(0, len(mine), b)]

    def _block_samples(self, block: list[Shard], rng: np.random.Generator) -> Iterator[dict]:
        """The samples of a block: its shards interleaved at random, through the buffer."""
        sources = [
            _shard_samples(s, self.skip_bad, self.stream_retries, self.stream_backoff)
            for s in block
        ]
        buffer: list[dict] = []
        while sources:
            i = int(rng.integers(len(sources)))
            try:
                buffer.append(next(sources[i]))
            except StopIteration:
                sources.pop(i)
                continue
            if len(buffer) >= self.shuffle_buffer:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        while buffer:
            j = int(rng.integers(len(buffer)))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()

    def slot_stream(self, slot: int, slots: int, start: int = 0) -> Iterator[tuple[int, dict]]:
        """Endless ``(position, raw sample)`` of one slot, from sample position ``start``."""
        k, position = 0, 0
        while True:
            blocks = self._blocks(slot, slots, k)
            for b, block in enumerate(blocks):
                n = sum(s.count for s in block)
                if position + n <= start:  # skip a whole block unread
                    position += n
                    continue
                rng = np.random.default_rng([self.seed, k, slot, b])
                for sample in self._block_samples(block, rng):
                    if position >= start:
                        yield position, sample
                    position += 1
            k += 1

    # -- the items ---------------------------------------------------------------------------

    def _crop(self, img: np.ndarray, seed: int, name: str) -> np.ndarray:
        rng = np.random.default_rng(seed)
        h, w = img.shape[:2]
        p = self.patch_size
        if h < p or w < p:
            raise DataError(
                f"image {name} is {h}x{w}, smaller than the HR patch size {p}. Lower "
                "data.patch_size, or set data.skip_bad=true."
            )
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        return augment(img[top : top + p, left : left + p], rng, *self.flags)

    def _item(self, slot: int, position: int, sample: dict) -> dict:
        ext = next((k for k in sample if not k.startswith("_") and k != "name.txt"), None)
        name = f"{sample.get('__url__')}:{sample['__key__']}"
        if ext is None:
            raise DataError(f"sample {name} holds no image; rewrite the set with `sr-data shard`.")
        img = decode_image(sample[ext], name, self.max_pixels)
        seed = int(
            np.random.SeedSequence([self.seed, slot, position]).generate_state(2, np.uint64)[0] >> 2
        )
        patch = self._crop(img, seed, name)
        return {"gt": to_tensor(patch), "index": position, "key": sample["__key__"]}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        self.check_slots(workers)
        first = self.start_batch + worker
        end = self.start_batch + self.iters_per_epoch
        batches = len(range(first, end, workers))
        if batches == 0:
            return
        local = first % workers
        slot = self.rank * workers + local
        slots = self.world_size * workers
        stream = self.slot_stream(slot, slots, start=(first // workers) * self.batch_size)
        wanted = batches * self.batch_size
        for position, sample in stream:
            try:
                item = self._item(slot, position, sample)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                warnings.warn(f"skipping: {exc}", stacklevel=2)
                continue
            yield item
            wanted -= 1
            if wanted == 0:
                return


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`StreamingHRDataset` that positions the stream on each pass.

    ``start_batch()`` (the rank's batches already trained) is read in the main process when an
    epoch's iterator is made, before the workers start; the workers are therefore not
    persistent (they are forked for each epoch with the stream's new position).
    """

    def __init__(self, dataset: StreamingHRDataset, start_batch: Callable[[], int], **kwargs):
        kwargs["persistent_workers"] = False
        super().__init__(dataset, batch_size=dataset.batch_size, drop_last=True, **kwargs)
        self.start_batch = start_batch
        dataset.check_slots(self.num_workers)

    def __iter__(self):
        self.dataset.start_batch = int(self.start_batch())
        return super().__iter__()
