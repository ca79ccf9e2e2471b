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


def bit_depth(img: np.ndarray) -> int:
    """8 for ``uint8`` pixels, 16 for ``uint16`` (16-bit sources are kept at full depth)."""
    return 16 if img.dtype == np.uint16 else 8


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8 or uint16 -> ``(C, H, W)`` float32 in ``[0, 1]`` (divided by 255 or
    65535: a 16-bit image keeps its 65536 levels; float32 holds each of them exactly apart)."""
    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    arr = np.ascontiguousarray(img.transpose(2, 0, 1))
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)  # torch has no uint16 arithmetic on every version
    return torch.from_numpy(arr).float().div_(peak)


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


def crop_with_context(
    img: np.ndarray,
    rng: np.random.Generator,
    patch: int,
    scale: int,
    margin: int,
    flags: Sequence[bool] = (True, True, True),
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A random ``patch`` x ``patch`` crop on the ``scale`` grid, with ``margin`` HR pixels of
    the image around it, for :func:`sr_cli.degradations.context.degrade_with_context`.

    The image is first mod-cropped to the scale (as benchmark HR images are), the patch's
    corner is a multiple of ``scale``, and the context is clipped at the image edge. The region
    is written into a zero canvas of side ``patch + 2 margin`` with the patch at its centre;
    the flips and transposition then move patch and context together (the patch stays
    centred). Draws from ``rng`` in the order :func:`augment` after a plain crop does (top,
    left, then the flips).

    Returns:
        ``(patch pixels, canvas, box)`` with ``box = (top, bottom, left, right)`` of the image
        pixels in the canvas, on the scale grid.
    """
    if patch % scale or margin % scale:
        raise DataError(f"patch {patch} and margin {margin} must be multiples of scale {scale}")
    h, w = img.shape[:2]
    h, w = h - h % scale, w - w % scale
    if h < patch or w < patch:
        raise DataError(f"a {h}x{w} image is smaller than the HR patch size {patch}")
    top = scale * int(rng.integers(0, (h - patch) // scale + 1))
    left = scale * int(rng.integers(0, (w - patch) // scale + 1))
    y0, y1 = max(0, top - margin), min(h, top + patch + margin)
    x0, x1 = max(0, left - margin), min(w, left + patch + margin)
    side = patch + 2 * margin
    canvas = np.zeros((side, side, img.shape[2] + 1), img.dtype)
    oy, ox = margin - (top - y0), margin - (left - x0)
    canvas[oy : oy + y1 - y0, ox : ox + x1 - x0, :-1] = img[y0:y1, x0:x1]
    canvas[oy : oy + y1 - y0, ox : ox + x1 - x0, -1] = 1
    canvas = augment(canvas, rng, *flags)
    valid = canvas[..., -1] > 0
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    region = canvas[..., :-1]
    return region[margin : margin + patch, margin : margin + patch], region, box


def patch_item(
    img: np.ndarray,
    rng: np.random.Generator,
    patch: int,
    scale: int,
    context: int,
    flags: Sequence[bool],
    index: int,
) -> dict:
    """A training item: a random patch (with ``context`` HR pixels around it when > 0, on the
    scale grid), flipped, and the source's bit depth."""
    if context:
        gt, region, box = crop_with_context(img, rng, patch, scale, context, flags)
        return {
            "gt": to_tensor(gt),
            "gt_context": to_tensor(region),
            "context_box": torch.tensor(box),
            "index": index,
            "bits": bit_depth(img),
        }
    h, w = img.shape[:2]
    top = int(rng.integers(0, h - patch + 1))
    left = int(rng.integers(0, w - patch + 1))
    gt = augment(img[top : top + patch, left : left + patch], rng, *flags)
    return {"gt": to_tensor(gt), "index": index, "bits": bit_depth(img)}


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
