"""Datasets of HR images. Workers only decode and crop; LQ is made on the training device.

Randomness is a pure function of ``(seed, epoch, position)``: the :class:`SeededSampler` hands
each dataset lookup an ``(index, sample_seed)`` pair, and the crop and flips are drawn from
``sample_seed``. The same run therefore sees the same patches whatever the number of workers,
and a run resumed from a checkpoint sees exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Sampler

from sr_cli.data.arrays import (
    AUTO_CACHE_PIXELS,
    bit_depth,
    decode_all,
    mod_crop,
    patch_item,
    to_tensor,
)
from sr_cli.data.images import image_size, list_images, read_image
from sr_cli.errors import DataError


class _ImageStore:
    """Decodes images on demand, optionally keeping them in memory; handles ``skip_bad``.

    Headers are checked up front (size, ``max_pixels``). With ``skip_bad``, a file that only
    turns out corrupt when it is decoded later (no cache) is reported once and replaced by the
    next good image, so a long run does not stop on it."""

    def __init__(
        self,
        files: Sequence[Path],
        cache: bool | str,
        min_size: int,
        skip_bad: bool,
        what: str,
        max_pixels: int | None = None,
    ):
        self.what = what
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.bad: set[int] = set()
        good: list[Path] = []
        sizes: list[tuple[int, int]] = []
        for path in files:
            try:
                h, w = image_size(path, max_pixels)
                if min(h, w) < min_size:
                    raise DataError(
                        f"image {str(path)!r} is {h}x{w}, smaller than the HR patch size {min_size}. "
                        "Lower data.patch_size, remove the image, or set data.skip_bad=true."
                    )
            except DataError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
                continue
            good.append(path)
            sizes.append((h, w))
        if not good:
            raise DataError(f"no usable images left in the {what} after skipping bad files.")
        if cache == "auto":
            cache = sum(h * w for h, w in sizes) <= AUTO_CACHE_PIXELS
        self.files = good
        self.cache: list[np.ndarray] | None = None
        if cache:
            decode = functools.partial(read_image, max_pixels=max_pixels, full_depth=True)
            self.files, self.cache = decode_all(good, decode, skip_bad, what)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache[index]
        for step in range(len(self.files)):
            i = (index + step) % len(self.files)
            if i in self.bad:
                continue
            try:
                return read_image(self.files[i], max_pixels=self.max_pixels, full_depth=True)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                self.bad.add(i)
                warnings.warn(f"skipping {self.files[i]}: {exc}", stacklevel=2)
        raise DataError(f"no decodable images left in the {self.what}.")


class HRFolderDataset(Dataset):
    """Random HR patches from a folder of images (DIV2K / Flickr2K layout).

    Args:
        root: folder of HR images.
        patch_size: side of the square HR patch; must be a multiple of ``scale``.
        scale: SR scale factor; LQ patches will be ``patch_size // scale``.
        hflip, vflip, rot90: dihedral augmentations.
        cache_images: ``True``, ``False`` or ``"auto"`` (cache when the folder is small).
        skip_bad: skip corrupt, too-small or too-large files with a warning instead of failing.
        max_pixels: refuse (or, with ``skip_bad``, skip) images whose header claims more pixels
            (``None``: :data:`~sr_cli.data.images.MAX_PIXELS`; ``0``: no limit).
        context: HR pixels of context around each patch (a multiple of ``scale``; ``0``: the
            patch alone, anywhere in the image). With context the patch sits on the scale grid
            and items add ``"gt_context"`` and ``"context_box"``
            (:func:`~sr_cli.data.arrays.crop_with_context`), from which the module makes the
            LQ the whole image would give.

    Items are dicts ``{"gt": (3, P, P) float32, "index": int, "bits": 8 or 16}`` (``bits``: the
    source's depth; 16-bit images stay at full depth). Indexing with an ``(index, sample_seed)``
    pair makes the crop reproducible; a plain int uses it as the seed.
    """

    def __init__(
        self,
        root: str | Path,
        patch_size: int,
        scale: int,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        cache_images: bool | str = "auto",
        skip_bad: bool = False,
        max_pixels: int | None = None,
        context: int = 0,
    ) -> None:
        if patch_size % scale:
            raise DataError(
                f"data.patch_size={patch_size} is not a multiple of scale={scale}; "
                f"use e.g. data.patch_size={patch_size - patch_size % scale or scale * 8}."
            )
        self.root = Path(root)
        self.patch_size = int(patch_size)
        self.scale = int(scale)
        self.flags = (hflip, vflip, rot90)
        self.context = int(context)
        files = list_images(root, what="training folder (data.train_dir)")
        self.store = _ImageStore(
            files, cache_images, patch_size, skip_bad, "training folder", max_pixels
        )

    @property
    def files(self) -> list[Path]:
        return self.store.files

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, seed = (item, item) if isinstance(item, int) else (int(item[0]), int(item[1]))
        img = self.store.get(index)
        rng = np.random.default_rng(seed)
        h, w = img.shape[:2]
        p = self.patch_size
        if h < p or w < p:
            raise DataError(
                f"image {str(self.files[index])!r} is {h}x{w}, smaller than the HR patch size {p}."
            )
        return patch_item(img, rng, p, self.scale, self.context, self.flags, index)


class ImageFolderEvalDataset(Dataset):
    """Full HR images for validation, mod-cropped to the scale; LQ is made on the device.

    Items are dicts ``{"gt": (3, H, W), "name": str, "index": int}``. Batch size must be 1
    because images differ in size.
    """

    def __init__(
        self,
        root: str | Path,
        scale: int,
        cache_images: bool | str = "auto",
        skip_bad: bool = False,
        max_pixels: int | None = None,
    ):
        self.root = Path(root)
        self.scale = int(scale)
        files = list_images(root, what="validation folder (data.val_dir)")
        self.store = _ImageStore(
            files, cache_images, 4 * self.scale, skip_bad, "validation folder", max_pixels
        )

    @property
    def files(self) -> list[Path]:
        return self.store.files

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict:
        img = mod_crop(self.store.get(index), self.scale)
        return {
            "gt": to_tensor(img),
            "name": self.files[index].stem,
            "index": index,
            "bits": bit_depth(img),
        }


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` pairs from one endless, seeded stream of samples.

    Global sample ``g`` of the run is image ``perm_k[g mod N]`` (``perm_k`` the ``k = g // N``-th
    seeded permutation of the ``N`` images) with a seed derived from ``(seed, g)``. An iterator
    yields ``samples_per_epoch`` samples per process starting at a global position: by default
    ``epoch * samples_per_epoch`` (set with :meth:`set_epoch`), or, when ``start_sample`` is
    given, whatever it returns when iteration starts. The trainer passes the number of samples
    already consumed (``iteration * batch * world_size``), so what a batch contains depends only
    on the training iteration: a run resumed from any checkpoint, even one taken mid-epoch,
    sees exactly what the uninterrupted run saw. Under DDP the ranks interleave disjointly.
    """

    def __init__(
        self,
        num_images: int,
        samples_per_epoch: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_sample: Callable[[], int] | None = None,
    ) -> None:
        self.num_images = num_images
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.start_sample = start_sample
        self.epoch = 0
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _permutation(self, k: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != k:
            if self.shuffle:
                perm = np.random.default_rng([self.seed, k]).permutation(self.num_images)
            else:
                perm = np.arange(self.num_images)
            self._perm_cache = (k, perm)
        return self._perm_cache[1]

    def sample(self, g: int) -> tuple[int, int]:
        """The ``(image index, crop seed)`` of global sample ``g``."""
        k, pos = divmod(g, self.num_images)
        seed = int(np.random.SeedSequence([self.seed, g]).generate_state(2, np.uint64)[0] >> 2)
        return int(self._permutation(k)[pos]), seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.start_sample is not None:
            first = int(self.start_sample())
        else:
            first = self.epoch * self.samples_per_epoch * self.world_size
        for local in range(self.samples_per_epoch):
            yield self.sample(first + local * self.world_size + self.rank)


class ShardSampler(Sampler):
    """Deterministic, *unpadded* shard of ``range(n)`` for evaluation under DDP.

    Unlike ``DistributedSampler`` it never repeats samples to even out the shards, so per-image
    sums reduced across ranks equal the single-device result exactly.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def open_eval_dataset(
    root: str | Path,
    scale: int,
    cache_images: bool | str = "auto",
    skip_bad: bool = False,
    max_pixels: int | None = None,
) -> Dataset:
    """An evaluation dataset for ``root``, whatever its layout.

    * A benchmark folder (``HR`` + ``LR_bicubic/X{s}``, or ``GTmod12`` + ``LRbicx{s}``): a
      :class:`~sr_cli.data.benchmarks.BenchmarkDataset` whose items carry the published LR
      images as ``"lq"``.
    * The same without an LR folder for ``scale``: its HR images, with a warning; LR is then made
      on the device by the run's degradation (the MATLAB bicubic for ``degradation=bicubic``).
    * Any other folder: its HR images (:class:`ImageFolderEvalDataset`).
    """
    from sr_cli.data.benchmarks import BenchmarkDataset, detect_layout

    layout = detect_layout(root)
    if layout is None:
        return ImageFolderEvalDataset(root, scale, cache_images, skip_bad, max_pixels)
    if int(scale) not in layout.lr_dirs:
        found = ", ".join(f"x{s}" for s in sorted(layout.lr_dirs)) or "none"
        warnings.warn(
            f"benchmark folder {str(root)!r} has no LR images for scale {scale} (expected "
            f"{str(layout.expected_lr_dir(int(scale)))!r}; found: {found}). Using its HR images "
            "only: LR will be made from them on the device with the run's degradation (the "
            "MATLAB bicubic imresize with degradation=bicubic).",
            stacklevel=2,
        )
        return ImageFolderEvalDataset(layout.hr_dir, scale, cache_images, skip_bad, max_pixels)
    return BenchmarkDataset(root, scale, cache_images, skip_bad, max_pixels)
