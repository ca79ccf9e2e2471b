"""Image decoding with consistent colour handling and errors that name the file.

Every image enters the pipeline as 8-bit RGB ``(H, W, 3)`` ``uint8``. Other modes are converted
with a warning (once per file):

* grayscale (``L``, ``I;16``, ``I``) -> replicated to three channels;
* RGBA / LA / palette with transparency -> alpha dropped (composited on nothing: the colour
  channels are kept as stored);
* 16-bit -> scaled to 8 bits by rounding ``v * 255 / 65535``.

Every file is opened through :func:`open_image`, which reads the size from the header and
refuses an image of more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`) *before*
decoding it: a 200-byte PNG can claim 12000x12000 pixels and would otherwise take gigabytes
and minutes to decode. The limit is raised with ``data.max_pixels`` (sr-train, sr-eval) or
``--max-pixels`` (sr-upscale, sr-data prepare); ``0`` removes it.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sr_cli.errors import ConfigError, DataError, SrCliError
from sr_cli.pixels import quantize_array

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


#: Default limit on the pixels (width x height) of one input image: 100 megapixels.
MAX_PIXELS = 100_000_000

_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(DataError):
    """An image header claims more pixels than the limit (a decompression bomb, or a huge image)."""


def check_max_pixels(max_pixels: int | None, option: str = "data.max_pixels") -> int:
    """The effective limit: ``None`` is :data:`MAX_PIXELS`, ``0`` is no limit."""
    if max_pixels is None:
        return MAX_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0:
        raise ConfigError(
            f"{option}={max_pixels!r} is not a pixel count; use a positive integer "
            f"(default {MAX_PIXELS}) or 0 for no limit."
        )
    return max_pixels


@contextmanager
def open_image(
    path: str | Path | bytes, max_pixels: int | None = None, name: str | None = None
) -> Iterator[Image.Image]:
    """``Image.open`` (lazy: nothing decoded yet) that refuses more than ``max_pixels`` pixels.

    ``path`` may also be the bytes of an image file (a shard member), named ``name`` in errors.

    The size comes from the file header. PIL's own ``MAX_IMAGE_PIXELS`` check is replaced by
    this one while the header is read, so the user's limit applies in both directions; PIL's
    check stays in force while frames are decoded.

    Raises:
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels.
        DataError: the file is missing, not an image, or its header is corrupt.
    """
    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    path = name if name is not None else str(source)
    limit = check_max_pixels(max_pixels)
    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot read image {str(path)!r}: {exc}. Replace or remove the file."
        ) from exc
    with im:
        w, h = im.size
        if limit and w * h > limit:
            raise ImageTooLargeError(
                f"image {str(path)!r} claims {w}x{h} = {w * h} pixels, over the limit of {limit} "
                "(a decompression bomb, or a very large image); refused before decoding. If you "
                "trust it, raise the limit: --max-pixels N (sr-upscale, sr-data prepare), "
                "data.max_pixels=N (sr-train), max_pixels=N (sr-eval); 0 = no limit. "
                "In training, data.skip_bad=true skips it."
            )
        yield im


class ImageConversionWarning(UserWarning):
    """An image was not 8-bit RGB and has been converted."""


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Sorted image files directly inside ``folder``; fails clearly when there are none."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"{what} {str(root)!r} does not exist. Check the path you passed.")
    if not root.is_dir():
        raise DataError(f"{what} {str(root)!r} is not a folder.")
    files = sorted(
        p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise DataError(
            f"{what} {str(root)!r} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})."
        )
    return files


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (see :func:`open_image`).
        DataError: unreadable file.
    """
    with open_image(path, max_pixels) as im:
        w, h = im.size
    return h, w


def _to_rgb8(im: Image.Image, path: Path, warn: bool) -> np.ndarray:
    mode = im.mode
    note = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0
        arr = quantize_array(arr / peak, 8)
        arr = np.repeat(arr[..., None], 3, axis=2)
        note = f"16-bit grayscale ({mode}) converted to 8-bit RGB"
    elif mode == "RGB":
        arr = np.asarray(im, dtype=np.uint8)
    else:
        if mode in ("L", "1"):
            note = "grayscale converted to RGB"
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            note = f"{mode} image: alpha channel dropped"
        elif mode == "P":
            note = "palette image converted to RGB"
        else:
            note = f"{mode} image converted to RGB"
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if note and warn:
        warnings.warn(f"{path}: {note}", ImageConversionWarning, stacklevel=3)
    return arr


def _raw_mode(im: Image.Image) -> str:
    """The mode the pixels are stored in; PIL decodes 16-bit RGB PNGs to 8-bit ``RGB`` silently."""
    try:
        return str(im.tile[0][3][0] if isinstance(im.tile[0][3], tuple) else im.tile[0][3])
    except (IndexError, TypeError, AttributeError):
        return im.mode


def read_image(path: str | Path, warn: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` ``uint8`` RGB.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels, checked before decoding.
        DataError: the file is missing, truncated or not an image; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {str(path)!r} does not exist.")
    try:
        with open_image(path, max_pixels) as im:
            raw = _raw_mode(im)
            im.load()
            if warn and im.mode == "RGB" and "16" in raw:
                warnings.warn(
                    f"{path}: 16-bit RGB converted to 8-bit RGB",
                    ImageConversionWarning,
                    stacklevel=2,
                )
            return np.ascontiguousarray(_to_rgb8(im, path, warn))
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        if isinstance(exc, SrCliError):
            raise
        raise DataError(
            f"cannot decode image {str(path)!r} ({exc}). The file is corrupt or not an image: "
            "replace or remove it."
        ) from exc


def save_image(array: np.ndarray, path: str | Path) -> None:
    """Write an ``(H, W, 3)`` uint8 array, atomically (temporary file, then rename); a
    destination that is not a regular file (a folder, a FIFO, a device) is refused."""
    from sr_cli.serialization import check_output_file

    path = check_output_file(Path(path), folder=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG"))
    tmp.replace(path)
