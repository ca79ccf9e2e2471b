"""What every dataset does with decoded images: keep a folder's images in memory
(:func:`decode_all`, up to :data:`AUTO_CACHE_PIXELS` with ``cache_images=auto``), crop them to
the scale (:func:`mod_crop`), flip them (:func:`augment`) and make tensors of them
(:func:`to_tensor`). Shared by the HR, paired and streaming datasets."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from sr_cli.errors import DataError

#: Above this many HR pixels in total, ``cache_images="auto"`` decodes on the fly instead.
AUTO_CACHE_PIXELS = 150_000_000


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(H, W, C)`` so both sides are multiples of ``scale`` (the standard benchmark step)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def augment(
    img: np.ndarray, rng: np.random.Generator, hflip: bool, vflip: bool, rot90: bool
) -> np.ndarray:
    """Random horizontal/vertical flips and 90-degree transposition, the 8 dihedral variants."""
    if hflip and rng.random() < 0.5:
        img = img[:, ::-1]
    if vflip and rng.random() < 0.5:
        img = img[::-1]
    if rot90 and rng.random() < 0.5:
        img = img.transpose(1, 0, 2)
    return img


def decode_all(items: Sequence, decode, skip_bad: bool, what: str) -> tuple[list, list]:
    """Decode every item up front (the in-memory cache); a bad one fails, or is skipped with a
    warning when ``skip_bad``. Returns the kept items and their decoded values."""
    kept, decoded = [], []
    for item in items:
        try:
            decoded.append(decode(item))
        except DataError as exc:
            if not skip_bad:
                raise
            warnings.warn(
                f"skipping {item[0] if isinstance(item, tuple) else item}: {exc}", stacklevel=3
            )
            continue
        kept.append(item)
    if not kept:
        raise DataError(f"no decodable images left in the {what}.")
    return kept, decoded
