"""Paired LR/HR folders, matched by file name (DIV2K ``*_LR_bicubic``, benchmark ``LR_bicubic``).

An HR image ``0001.png`` is paired with the LR image of the same stem in the LR folder, with or
without the DIV2K/benchmark scale suffix: ``0001.png``, ``0001x4.png`` (any image extension).
Pairs are checked when the dataset is built, from the file headers only: a missing partner, or an
LR image whose size is not the (mod-cropped) HR size divided by the scale, is a
:class:`~sr_cli.errors.DataError` that names the files, or a skipped pair with a warning when
``skip_bad=True``.

Training crops are aligned: the LR patch at ``(y, x)`` pairs with the HR patch at
``(y * scale, x * scale)``, and the same flips/transposition are applied to both. Randomness
follows the ``(index, sample_seed)`` contract of :class:`~sr_cli.data.datasets.HRFolderDataset`.
Items carry ``"lq"``, so the training module does not degrade them again.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from sr_cli.data.arrays import AUTO_CACHE_PIXELS, bit_depth, decode_all, mod_crop, to_tensor
from sr_cli.data.images import image_size, list_images, read_image
from sr_cli.errors import DataError


def lr_stem_candidates(stem: str, scale: int) -> tuple[str, ...]:
    """LR file stems accepted as the partner of HR ``stem`` (lower case)."""
    s = stem.lower()
    return (s, f"{s}x{scale}", f"{s}_x{scale}")


def match_pairs(
    hr_files: Sequence[Path], lr_dir: Path, lr_files: Sequence[Path], scale: int, skip_bad: bool
) -> list[tuple[Path, Path]]:
    """Pair every HR file with its LR partner by stem; raise (or warn and skip) when missing."""
    by_stem: dict[str, Path] = {}
    for path in lr_files:
        by_stem.setdefault(path.stem.lower(), path)
    pairs = []
    for hr in hr_files:
        candidates = lr_stem_candidates(hr.stem, scale)
        lr = next((by_stem[c] for c in candidates if c in by_stem), None)
        if lr is None:
            msg = (
                f"no LR partner for HR image {str(hr)!r}: looked for "
                f"{' or '.join(f'{hr.stem}{c[len(hr.stem) :]}.*' for c in candidates)} "
                f"in LR folder {str(lr_dir)!r}. Add the file, remove the HR image, or set "
                "data.skip_bad=true."
            )
            if not skip_bad:
                raise DataError(msg)
            warnings.warn(f"skipping {hr}: {msg}", stacklevel=3)
            continue
        pairs.append((hr, lr))
    return pairs


def check_pair_sizes(
    hr: Path, lr: Path, scale: int, min_hr: int, max_pixels: int | None = None
) -> tuple[int, int]:
    """Header check of one pair; returns the mod-cropped HR ``(h, w)``.

    Raises:
        DataError: unreadable file, LR size not ``HR // scale``, or HR smaller than ``min_hr``.
    """
    hh, hw = image_size(hr, max_pixels)
    lh, lw = image_size(lr, max_pixels)
    ch, cw = hh - hh % scale, hw - hw % scale
    if (lh, lw) != (ch // scale, cw // scale):
        raise DataError(
            f"LR image {str(lr)!r} is {lh}x{lw} but HR image {str(hr)!r} is {hh}x{hw} "
            f"(mod-cropped {ch}x{cw}): at scale {scale} the LR image must be "
            f"{ch // scale}x{cw // scale}. Check the scale and the LR folder."
        )
    if min(ch, cw) < min_hr:
        raise DataError(
            f"image {str(hr)!r} is {hh}x{hw}, smaller than the required {min_hr} pixels "
            f"(HR patch size or 4 x scale). Remove it or set data.skip_bad=true."
        )
    return ch, cw


def _dihedral(rng: np.random.Generator, hflip: bool, vflip: bool, rot90: bool) -> tuple:
    """Draw the flips once, so they can be applied identically to LR and HR."""
    return (
        hflip and rng.random() < 0.5,
        vflip and rng.random() < 0.5,
        rot90 and rng.random() < 0.5,
    )


def _apply(img: np.ndarray, ops: tuple) -> np.ndarray:
    h, v, t = ops
    if h:
        img = img[:, ::-1]
    if v:
        img = img[::-1]
    if t:
        img = img.transpose(1, 0, 2)
    return img


class PairedFolderDataset(Dataset):
    """HR images and their LR partners from two folders, matched by file name.

    Args:
        hr_dir: folder of HR images.
        lr_dir: folder of LR images (``0001.png`` or ``0001x4.png`` for HR ``0001.png``).
        scale: SR scale; LR must be ``HR // scale`` after mod-cropping HR to the scale.
        patch_size: HR patch side for training (a multiple of ``scale``); ``None`` gives
            full images (evaluation).
        hflip, vflip, rot90: dihedral augmentations (training only), the same for LR and HR.
        cache_images: ``True``, ``False`` or ``"auto"`` (cache when the folders are small).
        skip_bad: skip unmatched, mis-sized, corrupt, too-small or too-large pairs with a warning.
        max_pixels: pixel limit per image, checked on the header (``0``: none).
        what: how the folders are named in messages.

    Items are ``{"gt": (3, P, P), "lq": (3, P/s, P/s), "index": int}`` in training mode and
    ``{"gt", "lq", "name": str, "index"}`` with full (mod-cropped) images in evaluation mode.

    Example:
        >>> ds = PairedFolderDataset("DIV2K_train_HR", "DIV2K_train_LR_bicubic/X4", 4, 128)
        >>> item = ds[(0, 1234)]  # (index, sample_seed): reproducible crop and flips
    """

    def __init__(
        self,
        hr_dir: str | Path,
        lr_dir: str | Path,
        scale: int,
        patch_size: int | None = None,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        cache_images: bool | str = "auto",
        skip_bad: bool = False,
        what: str = "paired folders",
        max_pixels: int | None = None,
    ) -> None:
        self.scale = int(scale)
        if patch_size is not None and int(patch_size) % self.scale:
            raise DataError(
                f"data.patch_size={patch_size} is not a multiple of scale={scale}; "
                f"use e.g. data.patch_size={int(patch_size) - int(patch_size) % self.scale or self.scale * 8}."
            )
        self.patch_size = None if patch_size is None else int(patch_size)
        self.hr_dir = Path(hr_dir)
        self.lr_dir = Path(lr_dir)
        self.flags = (hflip, vflip, rot90)
        self.skip_bad = skip_bad
        self.what = what
        self.max_pixels = max_pixels
        hr_files = list_images(self.hr_dir, what=f"HR folder of the {what}")
        lr_files = list_images(self.lr_dir, what=f"LR folder of the {what}")
        min_hr = self.patch_size if self.patch_size is not None else 4 * self.scale
        pairs = []
        sizes = []
        for hr, lr in match_pairs(hr_files, self.lr_dir, lr_files, self.scale, skip_bad):
            try:
                sizes.append(check_pair_sizes(hr, lr, self.scale, min_hr, max_pixels))
            except DataError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {hr}: {exc}", stacklevel=2)
                continue
            pairs.append((hr, lr))
        if not pairs:
            raise DataError(
                f"no usable image pairs in the {what} (HR {str(self.hr_dir)!r}, "
                f"LR {str(self.lr_dir)!r}) after skipping bad files."
            )
        self.pairs = pairs
        if cache_images == "auto":
            cache_images = (
                sum(h * w for h, w in sizes) * (1 + 1 / self.scale**2) <= AUTO_CACHE_PIXELS
            )
        self.cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache_images:
            self.pairs, self.cache = decode_all(pairs, lambda p: self._decode(*p), skip_bad, what)

    def _decode(self, hr_path: Path, lr_path: Path) -> tuple[np.ndarray, np.ndarray]:
        hr = mod_crop(read_image(hr_path, max_pixels=self.max_pixels, full_depth=True), self.scale)
        lr = read_image(lr_path, max_pixels=self.max_pixels, full_depth=True)
        if lr.shape[0] * self.scale != hr.shape[0] or lr.shape[1] * self.scale != hr.shape[1]:
            raise DataError(
                f"LR image {str(lr_path)!r} decodes to {lr.shape[0]}x{lr.shape[1]}, not "
                f"{hr.shape[0] // self.scale}x{hr.shape[1] // self.scale} as HR image "
                f"{str(hr_path)!r} requires at scale {self.scale}."
            )
        return hr, lr

    @property
    def files(self) -> list[Path]:
        """The HR files, in item order."""
        return [hr for hr, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(hr, lr)`` of one pair, HR mod-cropped to the scale."""
        if self.cache is not None:
            return self.cache[index]
        return self._decode(*self.pairs[index])

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, seed = (item, item) if isinstance(item, int) else (int(item[0]), int(item[1]))
        hr, lr = self.load(index)
        if self.patch_size is None:
            return {
                "gt": to_tensor(hr),
                "lq": to_tensor(lr),
                "name": self.pairs[index][0].stem,
                "index": index,
                "bits": bit_depth(hr),
            }
        s, p = self.scale, self.patch_size
        lp = p // s
        lh, lw = lr.shape[:2]
        if lh < lp or lw < lp:
            raise DataError(
                f"image {str(self.pairs[index][0])!r} is {hr.shape[0]}x{hr.shape[1]}, smaller "
                f"than the HR patch size {p}."
            )
        rng = np.random.default_rng(seed)
        top = int(rng.integers(0, lh - lp + 1))
        left = int(rng.integers(0, lw - lp + 1))
        ops = _dihedral(rng, *self.flags)
        lr_patch = _apply(lr[top : top + lp, left : left + lp], ops)
        hr_patch = _apply(hr[top * s : top * s + p, left * s : left * s + p], ops)
        return {
            "gt": to_tensor(hr_patch),
            "lq": to_tensor(lr_patch),
            "index": index,
            "bits": bit_depth(hr),
        }
