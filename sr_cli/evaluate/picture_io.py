"""Image files for ``sr-upscale``: decoded with their depth, alpha and colour metadata, and
written back with them.

* Bit depth: a 16-bit PNG stays 16-bit (grayscale, gray + alpha, RGB or RGBA). Pillow keeps 16
  bits for grayscale only (mode ``I;16``); the colour types go through imagecodecs' PNG decoder
  (libpng), which returns the stored ``uint16`` samples.
* Colour: the ICC profile and the EXIF block of the input are written into the output (PNG,
  JPEG, WebP, TIFF; BMP and PPM cannot hold them and say so). Without its profile a wide-gamut
  photo (Display P3, Adobe RGB) would be shown as sRGB, with shifted colours. A profile whose
  colour space does not fit the output (a CMYK profile on the RGB decoding of a CMYK JPEG) is
  dropped with a warning.
* EXIF orientation: the pixels are upscaled as stored and the EXIF block (its ``Orientation``
  included) goes with them, so a viewer turns the output exactly as it turns the input; sr-eval
  and training also read pixels as stored.

The metadata are carried as opaque bytes: nothing in them is interpreted beyond the ICC header's
colour space.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sr_cli.errors import DataError, SrCliError
from sr_cli.pixels import quantize_array

#: Default quality of JPEG (and WebP) outputs.
DEFAULT_QUALITY = 95
#: BT.601 luma weights, used to turn the SR of a grayscale image back into one channel.
LUMA = (0.299, 0.587, 0.114)
#: The header EXIF blocks carry in JPEG (APP1) and in Pillow's ``info["exif"]``.
EXIF_HEADER = b"Exif\x00\x00"
#: Output formats whose Pillow writer stores an ICC profile and an EXIF block.
METADATA_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
#: The largest EXIF block one JPEG APP1 segment holds (Pillow's limit).
JPEG_MAX_EXIF = 65533


@dataclass
class Picture:
    """An image as float arrays in ``[0, 1]``: ``rgb`` ``(H, W, 3)``, ``alpha`` ``(H, W)`` or
    ``None``, with the stored ``bits`` (8 or 16), whether it was ``gray``, and its ICC profile
    and EXIF block (``Exif\\0\\0`` + TIFF data) as stored, or ``None``."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    bits: int
    gray: bool
    icc: bytes | None = None
    exif: bytes | None = None


# ---------------------------------------------------------------------------- reading
def _raw_mode(im: Image.Image) -> str:
    try:
        args = im.tile[0][3]
        return str(args[0] if isinstance(args, tuple) else args)
    except (IndexError, TypeError, AttributeError):
        return im.mode


def _from_channels(arr: np.ndarray, peak: float, bits: int) -> Picture:
    """``(H, W, C)`` with C in 1..4 (L, LA, RGB, RGBA) -> :class:`Picture`."""
    arr = arr.astype(np.float32) / peak
    c = arr.shape[2]
    gray = c in (1, 2)
    rgb = np.repeat(arr[..., :1], 3, axis=2) if gray else arr[..., :3]
    alpha = arr[..., -1] if c in (2, 4) else None
    return Picture(np.ascontiguousarray(rgb), alpha, bits, gray)


def decode_png16(path: str | Path) -> np.ndarray:
    """The samples of a 16-bit PNG as stored: ``(H, W, C)`` ``uint16`` (C = 1..4)."""
    import imagecodecs

    arr = imagecodecs.png_decode(Path(path).read_bytes())
    return arr[..., None] if arr.ndim == 2 else arr


def _metadata(im: Image.Image) -> tuple[bytes | None, bytes | None]:
    """``(icc, exif)`` of an opened image; EXIF with its ``Exif\\0\\0`` header (WebP stores
    it without)."""
    icc = im.info.get("icc_profile") or None
    exif = im.info.get("exif") or None
    if isinstance(exif, bytes) and not exif.startswith(EXIF_HEADER):
        exif = EXIF_HEADER + exif
    return (icc if isinstance(icc, bytes) else None), (exif if isinstance(exif, bytes) else None)


def read_picture(path: str | Path, max_pixels: int | None = None) -> Picture:
    """Decode an image keeping its alpha channel, (for PNG) its 16-bit depth, its ICC profile
    and its EXIF block.

    The header is checked first: more than ``max_pixels`` pixels (``None``: 100 megapixels,
    ``0``: no limit) is refused before anything is decoded."""
    from sr_cli.data.images import open_image

    path = Path(path)
    try:
        with open_image(path, max_pixels) as im:
            pic = _decode(im, path)
            pic.icc, pic.exif = _metadata(im)  # after decoding: eXIf may follow the pixels
            return pic
    except (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError) as exc:
        if isinstance(exc, SrCliError):
            raise
        raise DataError(
            f"cannot decode image {str(path)!r} ({exc}). The file is corrupt or not an image."
        ) from exc


def _decode(im: Image.Image, path: Path) -> Picture:
    raw, mode, fmt = _raw_mode(im), im.mode, im.format
    if fmt == "PNG" and "16" in raw and not mode.startswith("I"):
        # Pillow decodes 16-bit colour PNGs to 8 bits; libpng keeps all 16.
        arr = decode_png16(path)
        if arr.dtype != np.uint16:
            return _from_channels(arr, 255.0, 8)
        return _from_channels(arr, 65535.0, 16)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        bits = 16 if mode.startswith("I;16") or arr.max() > 255 else 8
        return _from_channels(arr[..., None], 65535.0 if bits == 16 else 255.0, bits)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        target = "LA" if mode == "LA" else "RGBA"
        return _from_channels(np.asarray(im.convert(target)).reshape(*im.size[::-1], -1), 255.0, 8)
    if mode in ("L", "1"):
        return _from_channels(np.asarray(im.convert("L"))[..., None], 255.0, 8)
    return _from_channels(np.asarray(im.convert("RGB")), 255.0, 8)


# ---------------------------------------------------------------------------- metadata
def icc_colour_space(icc: bytes) -> str | None:
    """The data colour space an ICC profile's header names (``"RGB"``, ``"GRAY"``, ``"CMYK"``,
    ...), or ``None`` for bytes that are not an ICC profile."""
    if len(icc) < 128 or icc[36:40] != b"acsp":
        return None
    return icc[16:20].decode("latin-1").strip()


def output_metadata(
    path: Path, fmt: str, channels: int, icc: bytes | None, exif: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """The ``(icc, exif)`` that an output of ``fmt`` with ``channels`` channels can carry; a
    warning names what it cannot."""
    if icc is not None:
        space, fits = icc_colour_space(icc), "GRAY" if channels in (1, 2) else "RGB"
        if space != fits:
            what = f"a {space} ICC profile" if space else "an invalid ICC profile"
            warnings.warn(
                f"{path}: the input has {what}, which does not fit the {fits} output; "
                "profile dropped",
                stacklevel=3,
            )
            icc = None
    if fmt not in METADATA_FORMATS and (icc or exif):
        dropped = " and ".join(n for n, v in (("ICC profile", icc), ("EXIF", exif)) if v)
        warnings.warn(
            f"{path}: {fmt} cannot store the input's {dropped}; use PNG, JPEG, WebP or TIFF "
            "to keep the colours as the input shows them",
            stacklevel=3,
        )
        return None, None
    if exif is not None and fmt == "JPEG" and len(exif) > JPEG_MAX_EXIF:
        warnings.warn(
            f"{path}: the input's EXIF block ({len(exif)} bytes) is over JPEG's "
            f"{JPEG_MAX_EXIF}; EXIF dropped",
            stacklevel=3,
        )
        exif = None
    if exif is not None and fmt == "TIFF":  # Pillow merges the EXIF tags into the TIFF's own
        try:
            Image.Exif().load(exif)
        except Exception:  # noqa: BLE001 - any parse failure: not a TIFF-structured block
            warnings.warn(
                f"{path}: the input's EXIF block is unreadable; EXIF dropped", stacklevel=3
            )
            exif = None
    return icc, exif


# ---------------------------------------------------------------------------- writing
def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_png16(
    array: np.ndarray,
    path: str | Path,
    rows_per_chunk: int = 256,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a ``(H, W)`` or ``(H, W, C)`` ``uint16`` array (C = 1..4) as a 16-bit PNG, with
    an ICC profile (``iCCP``) and an EXIF block (``eXIf``) when given.

    Rows are filtered ("Sub") and compressed in chunks, so little memory is needed beyond the
    array itself."""
    arr = np.asarray(array, dtype=np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    comp = zlib.compressobj(6)
    idat = []
    for r0 in range(0, h, rows_per_chunk):
        block = arr[r0 : r0 + rows_per_chunk]
        rows = block.astype(">u2").reshape(block.shape[0], w * c).view(np.uint8)
        # "Sub" filter: each byte minus the byte one pixel to the left (mod 256).
        sub = rows.copy()
        sub[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]
        raw = np.concatenate([np.ones((block.shape[0], 1), np.uint8), sub], axis=1)
        idat.append(comp.compress(raw.tobytes()))
    idat.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    meta = b""
    if icc:  # name, NUL, compression method 0 (zlib), the compressed profile
        meta += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:  # the TIFF data, without JPEG's "Exif\0\0"
        meta += _png_chunk(b"eXIf", exif.removeprefix(EXIF_HEADER))
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + meta
        + _png_chunk(b"IDAT", b"".join(idat))
        + _png_chunk(b"IEND", b"")
    )


def _pil_format(path: Path) -> str:
    return (
        path.suffix.lstrip(".")
        .upper()
        .replace("JPG", "JPEG")
        .replace("TIF", "TIFF")
        .replace("TIFFF", "TIFF")
    )


def write_array(
    arr: np.ndarray,
    path: str | Path,
    quality: int = DEFAULT_QUALITY,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Encode ``(H, W, C)`` ``uint8``/``uint16`` (C: 1 = L, 2 = LA, 3 = RGB, 4 = RGBA),
    atomically; 16 bits are kept for PNG, ``quality`` (1-100) applies to JPEG and WebP. The
    ICC profile and EXIF block go into the file where its format holds them
    (:func:`output_metadata`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _pil_format(path)
    if arr.shape[2] in (2, 4) and fmt in ("JPEG", "BMP", "PPM"):
        warnings.warn(f"{path}: {fmt} has no alpha channel; alpha dropped", stacklevel=2)
        arr = arr[..., :-1]
    if arr.dtype == np.uint16 and fmt != "PNG":
        warnings.warn(f"{path}: 16 bits are kept for PNG only; writing 8 bits", stacklevel=2)
        arr = np.round(arr / 257.0).astype(np.uint8)
    icc, exif = output_metadata(path, fmt, arr.shape[2], icc, exif)
    meta = {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}
    from sr_cli.serialization import check_output_file

    check_output_file(path, folder=False)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if arr.dtype == np.uint16 and arr.shape[2] != 1:
            write_png16(arr, tmp, icc=icc, exif=exif)
        elif arr.dtype == np.uint16:
            Image.fromarray(np.ascontiguousarray(arr[..., 0])).save(tmp, format="PNG", **meta)
        else:
            img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
            options = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
            img.save(tmp, format=fmt, **options, **meta)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_picture(pic: Picture, path: str | Path, quality: int = DEFAULT_QUALITY) -> None:
    """Encode a float :class:`Picture` with its bit depth, gray-ness, alpha and metadata."""
    chans = (
        [pic.rgb @ np.asarray(LUMA, np.float32)]
        if pic.gray
        else [pic.rgb[..., i] for i in range(3)]
    )
    if pic.alpha is not None:
        chans.append(pic.alpha)
    write_array(
        quantize_array(np.stack(chans, axis=-1), pic.bits), path, quality, pic.icc, pic.exif
    )
