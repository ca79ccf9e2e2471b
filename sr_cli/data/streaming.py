"""Training on WebDataset shards: HR images streamed from tar files, local or remote.

A data set too big for one disk or for one machine's memory is written once as a *shard set*
with ``sr-data shard HR_FOLDER OUT``: WebDataset tar files (``shard-000000.tar``, ...) that hold
every image's original bytes (``<key>.png`` or ``.jpg`` ..., plus ``<key>.name.txt``, the file
name), and ``manifest.json`` with the image count and each shard's image count, size and
SHA-256. Training reads it with ``data=stream data.train_stream=LOCATION``: a local folder, a
``manifest.json`` path or URL (``https://host/set/manifest.json``), or a ``pipe:`` command that
prints the manifest (``pipe:aws s3 cp s3://bucket/set/manifest.json -``); the shards are found
beside it (in a ``pipe:`` command, ``manifest.json`` is replaced by each shard's name). The
shards are read with ``webdataset`` (local files, http(s) through curl); the set itself (writing
it, its manifest, a shard's raw samples) is :mod:`sr_cli.data.shards`.

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

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sr_cli.data.arrays import patch_item
from sr_cli.data.images import (
    decode_rgb,
)
from sr_cli.data.shards import (  # noqa: F401 - the shard set, re-exported for its callers
    MANIFEST,
    OPTION,
    Shard,
    _shard_samples,
    check_shard_name,
    open_shard_set,
    write_shards,
)
from sr_cli.errors import ConfigError, DataError

# Lightning warns that an IterableDataset's length may be wrong with several workers; each
# worker here yields exactly its share of an epoch (see StreamingHRDataset.__iter__).
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


# --------------------------------------------------------------------------------------------
# Reading


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` RGB (``uint16`` for a 16-bit source, else ``uint8``),
    refusing more than ``max_pixels`` (from the header, before decoding, as for image files:
    :func:`~sr_cli.data.images.open_image`)."""
    try:
        return decode_rgb(data, name, warn=False, max_pixels=max_pixels, full_depth=True)
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"cannot decode image {name} ({exc}); replace it in the shard set."
        ) from exc


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
        context: HR pixels of context around each patch, as for ``HRFolderDataset``.
        stream_retries: http(s) shards: failures in a row tolerated on a connection before
            the shard counts as unreadable (it resumes where it stopped: same samples, once).
        stream_backoff: seconds before the first retry, doubled after each failure in a row.

    Items are dicts ``{"gt": (3, P, P) float32, "index": int, "bits": int, "key": str}`` (with
    ``"gt_context"`` and ``"context_box"`` when ``context`` > 0). Set
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
        context: int = 0,
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
        self.context = int(context)
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

    def _crop(self, img: np.ndarray, seed: int, name: str, position: int) -> dict:
        rng = np.random.default_rng(seed)
        h, w = img.shape[:2]
        p = self.patch_size
        if h < p or w < p:
            raise DataError(
                f"image {name} is {h}x{w}, smaller than the HR patch size {p}. Lower "
                "data.patch_size, or set data.skip_bad=true."
            )
        return patch_item(img, rng, p, self.scale, self.context, self.flags, position)

    def _item(self, slot: int, position: int, sample: dict) -> dict:
        ext = next((k for k in sample if not k.startswith("_") and k != "name.txt"), None)
        name = f"{sample.get('__url__')}:{sample['__key__']}"
        if ext is None:
            raise DataError(f"sample {name} holds no image; rewrite the set with `sr-data shard`.")
        img = decode_image(sample[ext], name, self.max_pixels)
        seed = int(
            np.random.SeedSequence([self.seed, slot, position]).generate_state(2, np.uint64)[0] >> 2
        )
        return {**self._crop(img, seed, name, position), "key": sample["__key__"]}

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
