"""The Lightning datamodule: HR (or paired LR/HR) patches for training, full images for validation.

From HR-only folders, LQ images are not made here: the :class:`~sr_cli.train.lit.module.SRModule`
degrades the HR batch on the training device after the transfer, so workers only decode and
crop. Paired folders (``train_lr_dir``) and benchmark folders with LR images bring their own
``"lq"``, which the module uses as is.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sr_cli.data.datasets import (
    HRFolderDataset,
    SeededSampler,
    ShardSampler,
    open_eval_dataset,
)
from sr_cli.data.paired import PairedFolderDataset
from sr_cli.errors import ConfigError


def check_val_shards(name: str, folder, images: int, world: int) -> None:
    """Every process validates its own, unpadded share of each validation set: refuse a set with
    fewer images than processes (Lightning would stop on an empty dataloader in one rank)."""
    if images < world:
        raise ConfigError(
            f"validation set {name!r} ({folder}) has {images} image(s) but training runs "
            f"{world} processes, and each validates its own share: put at least {world} images "
            "in it or train on fewer devices (trainer.devices)."
        )


class SRDataModule(pl.LightningDataModule):
    """HR folders (or paired LR/HR folders) for training; HR or benchmark folders for validation.

    Args:
        train_dir: folder of HR training images.
        val_dir: validation folder, logged as ``val/<metric>``: HR images, or a benchmark
            folder (``HR`` + ``LR_bicubic/X{s}``, ``GTmod12`` + ``LRbicx{s}``) whose LR images
            are used as they are.
        extra_val_dirs: more validation sets ``{name: folder}``, logged as ``val/<name>/<metric>``.
        scale: SR scale; validation images are mod-cropped to it.
        patch_size: HR training patch side (LQ patch is ``patch_size // scale``).
        batch_size: training batch size per process.
        iters_per_epoch: optimizer iterations per epoch; an epoch is this many batches, whatever
            the folder size (validation and ``last.ckpt`` happen at epoch ends).
        num_workers: dataloader workers (decode + crop only).
        hflip, vflip, rot90: training augmentations.
        cache_images: keep decoded images in memory: ``true``, ``false`` or ``auto``.
        skip_bad: skip corrupt, too-small or too-large images with a warning.
        max_pixels: refuse images whose header claims more pixels (a decompression bomb);
            ``null``: 100 megapixels, ``0``: no limit.
        seed: seeds the patch sampling; the same seed gives the same patches.
        pin_memory: pin batches in memory when CUDA is available.
        train_lr_dir: folder of LR training images paired with ``train_dir`` by file name
            (``0001.png`` or ``0001x4.png``); LR patches are then cropped from it instead of
            being made on the device. ``None``: HR-only training.
        train_stream: a WebDataset shard set written by ``sr-data shard`` (folder, manifest
            path or URL, ``pipe:`` command) to stream the HR training images from instead of
            ``train_dir`` (:mod:`sr_cli.data.streaming`); validation stays on folders.
        shuffle_shards, shuffle_buffer: with ``train_stream``, shards read together and images
            held in the shuffle buffer.
        stream_retries, stream_backoff: with an http(s) ``train_stream``, failures in a row
            retried on a shard's connection (resuming where it stopped) and the first wait in
            seconds, doubled after each failure.
    """

    def __init__(
        self,
        train_dir: str | None,
        val_dir: str | None,
        scale: int,
        patch_size: int = 128,
        batch_size: int = 16,
        iters_per_epoch: int = 1000,
        num_workers: int = 4,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        cache_images: bool | str = "auto",
        skip_bad: bool = False,
        max_pixels: int | None = None,
        seed: int = 0,
        extra_val_dirs: Mapping[str, str] | None = None,
        pin_memory: bool = True,
        train_lr_dir: str | None = None,
        train_stream: str | None = None,
        shuffle_shards: int = 4,
        shuffle_buffer: int = 1000,
        stream_retries: int = 5,
        stream_backoff: float = 1.0,
    ) -> None:
        super().__init__()
        self.train_dir = train_dir
        self.train_lr_dir = train_lr_dir
        self.val_dirs: dict[str, str] = {}
        if val_dir:
            self.val_dirs["val"] = val_dir
        for name, path in (extra_val_dirs or {}).items():
            self.val_dirs[f"val/{name}"] = path
        self.scale = int(scale)
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.iters_per_epoch = int(iters_per_epoch)
        self.num_workers = int(num_workers)
        self.flags = dict(hflip=hflip, vflip=vflip, rot90=rot90)
        self.cache_images = cache_images
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.seed = int(seed)
        self.pin_memory = pin_memory
        self.train_stream = train_stream
        self.shuffle_shards = int(shuffle_shards)
        self.shuffle_buffer = int(shuffle_buffer)
        self.stream_retries = stream_retries
        self.stream_backoff = stream_backoff
        self.train_set: HRFolderDataset | PairedFolderDataset | None = None
        self.val_sets: dict[str, Dataset] = {}

    @property
    def val_names(self) -> list[str]:
        """Log prefixes of the validation sets, in dataloader order."""
        return list(self.val_dirs)

    def setup(self, stage: str | None = None) -> None:
        """Open the folders; missing, empty or bad folders fail here, before training starts."""
        if stage in (None, "fit") and self.train_set is None and self.train_stream:
            self.train_set = self._stream_set()
        if stage in (None, "fit") and self.train_set is None and not self.train_dir:
            raise ConfigError(
                "no training data: set data.train_stream=PATH_OR_URL (data=stream; a shard set "
                "written by `sr-data shard`) or data.train_dir=HR_FOLDER."
            )
        if stage in (None, "fit") and self.train_set is None and self.train_lr_dir:
            self.train_set = PairedFolderDataset(
                self.train_dir,
                self.train_lr_dir,
                self.scale,
                self.patch_size,
                cache_images=self.cache_images,
                skip_bad=self.skip_bad,
                max_pixels=self.max_pixels,
                what="training folders (data.train_dir, data.train_lr_dir)",
                **self.flags,
            )
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = HRFolderDataset(
                self.train_dir,
                self.patch_size,
                self.scale,
                cache_images=self.cache_images,
                skip_bad=self.skip_bad,
                max_pixels=self.max_pixels,
                **self.flags,
            )
        if not self.val_sets:
            self.val_sets = {
                name: open_eval_dataset(
                    path, self.scale, self.cache_images, self.skip_bad, self.max_pixels
                )
                for name, path in self.val_dirs.items()
            }

    def _stream_set(self):
        from sr_cli.data.streaming import StreamingHRDataset, open_shard_set

        rank, world = self._dist()
        return StreamingHRDataset(
            open_shard_set(self.train_stream, self.skip_bad),
            self.patch_size,
            self.scale,
            self.batch_size,
            self.iters_per_epoch,
            seed=self.seed,
            shuffle_shards=self.shuffle_shards,
            shuffle_buffer=self.shuffle_buffer,
            skip_bad=self.skip_bad,
            max_pixels=self.max_pixels,
            rank=rank,
            world_size=world,
            stream_retries=self.stream_retries,
            stream_backoff=self.stream_backoff,
            **self.flags,
        )

    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader_kwargs(self) -> dict:
        return dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _samples_consumed(self) -> int:
        """Global samples used so far: the trained module's iteration x batch x processes."""
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        iteration = int(getattr(module, "iteration", 0)) if module is not None else 0
        return iteration * self.batch_size * (trainer.world_size if trainer is not None else 1)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
        rank, world = self._dist()
        if self.train_stream:
            from sr_cli.data.streaming import StreamLoader

            self.train_set.rank, self.train_set.world_size = rank, world
            return StreamLoader(
                self.train_set,
                start_batch=lambda: self._samples_consumed() // (self.batch_size * world),
                **self._loader_kwargs(),
            )
        sampler = SeededSampler(
            len(self.train_set),
            self.iters_per_epoch * self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world,
            start_sample=self._samples_consumed,
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self._dist()
        for name, ds in self.val_sets.items():
            check_val_shards(name, self.val_dirs[name], len(ds), world)
        return [
            DataLoader(
                ds,
                batch_size=1,
                sampler=ShardSampler(len(ds), rank, world),
                **self._loader_kwargs(),
            )
            for ds in self.val_sets.values()
        ]
