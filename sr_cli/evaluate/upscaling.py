"""Super-resolving image files for ``sr-upscale`` (:mod:`sr_cli.commands.upscale`).

* Any image size: the generator runs on overlapping tiles blended seamlessly
  (:mod:`sr_cli.evaluate.tiling`), and the output is assembled strip by strip, so memory is bounded by
  the tile size and the image width.
* The alpha channel is kept: it is upscaled separately with MATLAB bicubic interpolation.
* The bit depth is kept where the format allows: a 16-bit PNG gives a 16-bit PNG (grayscale,
  gray + alpha, RGB or RGBA); grayscale stays grayscale.
* Outputs never land in a data folder by default: a folder ``photos/`` goes to a new folder
  ``photos_x4/`` beside it, image files go to ``upscaled/`` in the current directory. Inputs
  are never overwritten (:func:`plan_outputs`).
* Every input's header is read before anything is decoded, so an image that claims more than
  ``max_pixels`` pixels, or a broken file, fails before any output (:func:`upscale_files`).
"""

from __future__ import annotations

import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sr_cli.errors import ConfigError, DataError, SrCliError
from sr_cli.models.common import final_output
from sr_cli.pixels import quantize_array

#: Default quality of JPEG (and WebP) outputs.
DEFAULT_QUALITY = 95

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: BT.601 luma weights, used to turn the SR of a grayscale image back into one channel.
LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------- image I/O
@dataclass
class Picture:
    """An image as float arrays in ``[0, 1]``: ``rgb`` ``(H, W, 3)``, ``alpha`` ``(H, W)`` or
    ``None``, with the stored ``bits`` (8 or 16) and whether it was ``gray``."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    bits: int
    gray: bool


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


def read_picture(path: str | Path, max_pixels: int | None = None) -> Picture:
    """Decode an image keeping its alpha channel and (for PNG) its 16-bit depth.

    The header is checked first: more than ``max_pixels`` pixels (``None``: 100 megapixels,
    ``0``: no limit) is refused before anything is decoded."""
    from sr_cli.data.images import open_image

    path = Path(path)
    try:
        with open_image(path, max_pixels) as im:
            raw, mode, fmt = _raw_mode(im), im.mode, im.format
            if fmt == "PNG" and "16" in raw and not mode.startswith("I"):
                # PIL decodes 16-bit colour PNGs to 8 bits; torchvision keeps all 16.
                from torchvision.io import ImageReadMode, decode_png, read_file

                data = decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)
                arr = data.permute(1, 2, 0).numpy()
                peak = 65535.0 if arr.dtype == np.uint16 else 255.0
                return _from_channels(arr, peak, 16 if peak > 255 else 8)
            if mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im).astype(np.float64)
                bits = 16 if mode.startswith("I;16") or arr.max() > 255 else 8
                return _from_channels(arr[..., None], 65535.0 if bits == 16 else 255.0, bits)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                target = "LA" if mode == "LA" else "RGBA"
                return _from_channels(
                    np.asarray(im.convert(target)).reshape(*im.size[::-1], -1), 255.0, 8
                )
            if mode in ("L", "1"):
                return _from_channels(np.asarray(im.convert("L"))[..., None], 255.0, 8)
            return _from_channels(np.asarray(im.convert("RGB")), 255.0, 8)
    except (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError) as exc:
        if isinstance(exc, SrCliError):
            raise
        raise DataError(
            f"cannot decode image {str(path)!r} ({exc}). The file is corrupt or not an image."
        ) from exc


def write_png16(array: np.ndarray, path: str | Path, rows_per_chunk: int = 256) -> None:
    """Write a ``(H, W)`` or ``(H, W, C)`` ``uint16`` array (C = 1..4) as a 16-bit PNG.

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

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(idat))
        + chunk(b"IEND", b"")
    )


def _pil_format(path: Path) -> str:
    return (
        path.suffix.lstrip(".")
        .upper()
        .replace("JPG", "JPEG")
        .replace("TIF", "TIFF")
        .replace("TIFFF", "TIFF")
    )


def write_array(arr: np.ndarray, path: str | Path, quality: int = DEFAULT_QUALITY) -> None:
    """Encode ``(H, W, C)`` ``uint8``/``uint16`` (C: 1 = L, 2 = LA, 3 = RGB, 4 = RGBA),
    atomically; 16 bits are kept for PNG, ``quality`` (1-100) applies to JPEG and WebP."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _pil_format(path)
    if arr.shape[2] in (2, 4) and fmt in ("JPEG", "BMP", "PPM"):
        warnings.warn(f"{path}: {fmt} has no alpha channel; alpha dropped", stacklevel=2)
        arr = arr[..., :-1]
    if arr.dtype == np.uint16 and fmt != "PNG":
        warnings.warn(f"{path}: 16 bits are kept for PNG only; writing 8 bits", stacklevel=2)
        arr = np.round(arr / 257.0).astype(np.uint8)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if arr.dtype == np.uint16 and arr.shape[2] != 1:
            write_png16(arr, tmp)
        elif arr.dtype == np.uint16:
            Image.fromarray(np.ascontiguousarray(arr[..., 0])).save(tmp, format="PNG")
        else:
            img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))
            options = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
            img.save(tmp, format=fmt, **options)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_picture(pic: Picture, path: str | Path, quality: int = DEFAULT_QUALITY) -> None:
    """Encode a float :class:`Picture` with its bit depth, gray-ness and alpha."""
    chans = (
        [pic.rgb @ np.asarray(LUMA, np.float32)]
        if pic.gray
        else [pic.rgb[..., i] for i in range(3)]
    )
    if pic.alpha is not None:
        chans.append(pic.alpha)
    write_array(quantize_array(np.stack(chans, axis=-1), pic.bits), path, quality)


# ---------------------------------------------------------------------------- upscaling
def make_forward(
    generator: torch.nn.Module, device: torch.device, precision: str = "fp32"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``lq -> sr`` on ``device`` with the requested precision (half precision on CUDA only)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is unknown; choose {list(PRECISIONS)}")
    if precision != "fp32" and device.type != "cuda":
        raise ConfigError(
            f"--precision {precision} needs a CUDA device (got {device}); use --precision fp32"
        )
    dtype = PRECISIONS[precision]

    @torch.inference_mode()
    def forward(lq: torch.Tensor) -> torch.Tensor:
        lq = lq.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = final_output(generator(lq))
        return out.float().clamp(0, 1)

    return forward


def upscale_alpha(
    alpha: np.ndarray, scale: int, out: np.ndarray | None = None, rows_per_strip: int = 512
) -> np.ndarray:
    """MATLAB bicubic upscaling of an ``(H, W)`` alpha plane, computed in row strips.

    With ``out`` (an integer array ``(H * scale, W * scale)``) the strips are quantized into it;
    otherwise a float32 array is returned."""
    from sr_cli.degradations.resize import resize_matrix

    h, w = alpha.shape
    mat_h = resize_matrix(h, h * scale, float(scale))
    mat_w = resize_matrix(w, w * scale, float(scale))
    x = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))
    if out is None:
        out = np.empty((h * scale, w * scale), np.float32)
    bits = 16 if out.dtype == np.uint16 else 8
    for r0 in range(0, h * scale, rows_per_strip):
        r1 = min(r0 + rows_per_strip, h * scale)
        strip = ((mat_h[r0:r1] @ x) @ mat_w.T).clamp(0, 1).numpy()
        out[r0:r1] = strip if out.dtype == np.float32 else quantize_array(strip, bits)
    return out


def upscale_picture(
    pic: Picture,
    forward: Callable[[torch.Tensor], torch.Tensor],
    scale: int,
    tile: int = 256,
    overlap: int = 16,
) -> np.ndarray:
    """Super-resolve a :class:`Picture` tile by tile (alpha with MATLAB bicubic).

    Returns the output image quantized to the input's bit depth, ``(H * s, W * s, C)`` with
    ``C`` = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), filled strip by strip: no
    full-size float copy of the output is ever made."""
    from sr_cli.evaluate.tiling import iter_tiled_rows

    if tile <= 0:  # one tile, the whole image: no overlap to blend (also for tiny images)
        tile, overlap = 0, 0
    h, w, _ = pic.rgb.shape
    color = 1 if pic.gray else 3
    chans = color + (pic.alpha is not None)
    out = np.empty((h * scale, w * scale, chans), np.uint16 if pic.bits == 16 else np.uint8)
    lq = torch.from_numpy(pic.rgb).permute(2, 0, 1).unsqueeze(0)
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    for y0, y1, strip in iter_tiled_rows(forward, lq, scale, tile, overlap, out_device="cpu"):
        strip = strip.clamp(0, 1)
        if pic.gray:
            strip = (strip * luma).sum(1, keepdim=True)
        out[y0:y1, :, :color] = quantize_array(strip[0].permute(1, 2, 0).numpy(), pic.bits)
    if pic.alpha is not None:
        alpha = np.empty((h * scale, w * scale), out.dtype)
        out[..., color] = upscale_alpha(pic.alpha, scale, out=alpha)
    return out


# ---------------------------------------------------------------------------- files
#: Default output folder for image files given on the command line (in the current directory).
FILES_OUTPUT_DIR = "upscaled"


def plan_outputs(
    inputs: Sequence[str | Path],
    output: str | Path | None,
    scale: int,
    suffix: str | None = None,
    fmt: str | None = None,
) -> list[tuple[Path, Path]]:
    """``(input file, output file)`` pairs; refuses anything that would overwrite an input.

    * a folder ``photos/`` goes to ``--output`` or to a new folder ``photos_x{scale}/`` beside
      it (same file names);
    * a file ``a.png`` goes to ``--output`` (a file name when it has an image extension and there
      is one input, else a folder) or to ``upscaled/a.png`` in the current directory, never
      next to the input.
    """
    from sr_cli.data.images import IMAGE_EXTENSIONS, list_images

    if not inputs:
        raise ConfigError("no input image or folder given")
    ext = None if fmt is None else "." + fmt.lower().lstrip(".")
    if ext is not None and ext not in IMAGE_EXTENSIONS:
        raise ConfigError(f"--format {fmt!r} is unknown; choose from {list(IMAGE_EXTENSIONS)}")
    out = Path(output).expanduser() if output else None
    one_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        src = Path(item).expanduser()
        if src.is_dir():
            real = src.resolve()  # also for "." or "..": the new folder goes beside it
            out_dir = out if out is not None else real.parent / f"{real.name or 'root'}_x{scale}"
            sfx = suffix or ""
            if out_dir.resolve() == src.resolve() and not sfx:
                raise DataError(
                    f"output folder {str(out_dir)!r} is the input folder: refusing to write into it "
                    "without a --suffix (inputs are never overwritten). Pass --output or --suffix."
                )
            for f in list_images(src, what="input folder"):
                pairs.append((f, out_dir / f"{f.stem}{sfx}{ext or f.suffix}"))
        elif src.is_file():
            if out is not None and one_file and out.suffix.lower() in IMAGE_EXTENSIONS:
                target = out
            else:
                out_dir = out if out is not None else Path(FILES_OUTPUT_DIR)
                sfx = suffix
                if sfx is None:
                    same = out_dir.resolve() == src.parent.resolve()
                    sfx = f"_x{scale}" if same else ""
                target = out_dir / f"{src.stem}{sfx}{ext or src.suffix}"
            pairs.append((src, target))
        else:
            raise DataError(f"input {str(src)!r} does not exist. Check the path.")
    sources = {p.resolve() for p, _ in pairs}
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        key = dst.resolve()
        if key in sources:
            raise DataError(
                f"output {str(dst)!r} would overwrite an input image: refusing. "
                "Pass another --output or a --suffix."
            )
        if key in seen:
            raise DataError(
                f"{str(seen[key])!r} and {str(src)!r} would both be written to {str(dst)!r}; "
                "upscale them to different --output folders."
            )
        seen[key] = src
    return pairs


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    return device


def upscale_files(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    output: str | Path | None = None,
    suffix: str | None = None,
    fmt: str | None = None,
    quality: int = DEFAULT_QUALITY,
    max_pixels: int | None = None,
    tile: int = 256,
    overlap: int = 16,
    precision: str = "fp32",
    device: str = "auto",
    prefer_ema: bool = True,
    quiet: bool = False,
    which: str = "last",
) -> list[Path]:
    """Upscale image files and folders with a checkpoint's generator (a run folder's
    ``checkpoints/<which>.ckpt``, ``last`` or ``best``); returns the written files (where they
    go: :func:`plan_outputs`)."""
    from sr_cli.data.images import image_size
    from sr_cli.evaluate.inference import load_generator, resolve_checkpoint
    from sr_cli.evaluate.tiling import check_tiling
    from sr_cli.progress import Bar

    check_tiling(tile, overlap)
    target = pick_device(device)
    if precision != "fp32" and target.type != "cuda":
        raise ConfigError(
            f"--precision {precision} needs a CUDA device (got {target}); use --precision fp32"
        )
    path = resolve_checkpoint(checkpoint, which)
    loaded = load_generator(path, prefer_ema=prefer_ema)
    if not quiet:
        at = f" (iteration {loaded.iteration})" if loaded.iteration is not None else ""
        print(f"sr-upscale: generator of {path}{at}", file=sys.stderr)
    pairs = plan_outputs(inputs, output, loaded.scale, suffix, fmt)
    for src, _ in pairs:  # every header first: a bomb or a broken file fails before any output
        image_size(src, max_pixels)
    generator = loaded.generator.to(target)
    forward = make_forward(generator, target, precision)
    written = []
    with Bar(len(pairs), "sr-upscale", unit="image", disable=quiet) as bar:
        for src, dst in pairs:
            bar.describe(src.name)
            pic = read_picture(src, max_pixels)
            out = upscale_picture(pic, forward, loaded.scale, tile, overlap)
            write_array(out, dst, quality)
            written.append(dst)
            bar.update(1)
    return written
