"""Super-resolving image files for ``sr-upscale`` (:mod:`sr_cli.commands.upscale`).

* Any image size: the generator runs on overlapping tiles blended seamlessly
  (:mod:`sr_cli.evaluate.tiling`), and the output is assembled strip by strip, so memory is bounded by
  the tile size and the image width.
* The alpha channel is kept: it is upscaled separately with MATLAB bicubic interpolation.
* The bit depth is kept where the format allows: a 16-bit PNG gives a 16-bit PNG (grayscale,
  gray + alpha, RGB or RGBA); grayscale stays grayscale. The ICC profile and EXIF block go
  with the image (the file I/O: :mod:`sr_cli.evaluate.picture_io`).
* Outputs never land in a data folder by default: a folder ``photos/`` goes to a new folder
  ``photos_x4/`` beside it, image files go to ``upscaled/`` in the current directory. Inputs
  are never overwritten (:func:`plan_outputs`).
* Every input's header is read before anything is decoded, so an image that claims more than
  ``max_pixels`` pixels, or a broken file, fails before any output (:func:`upscale_files`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from sr_cli.errors import (
    ConfigError,
    DataError,
    OutOfMemory,
    is_out_of_memory,
    out_of_memory_summary,
)
from sr_cli.evaluate.picture_io import (
    DEFAULT_QUALITY,
    LUMA,
    Picture,
    read_picture,
    write_array,
)
from sr_cli.models.common import final_output
from sr_cli.pixels import quantize_array

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def check_destinations(pairs: Sequence[tuple[Path, Path]], what: str = "output") -> None:
    """Before any image is decoded: every output is a new or a regular file (never a device, a
    FIFO or a folder) in a folder that can be written (created if needed)."""
    from sr_cli.serialization import check_output_dir, check_output_file

    for folder in sorted({dst.parent for _, dst in pairs}):
        check_output_dir(folder, f"{what} folder")
    for _, dst in pairs:
        check_output_file(dst, what, folder=False)


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


def _memory_hint(tile: int, overlap: int, precision: str, device: torch.device) -> str:
    """What needs less memory: smaller tiles, then half precision on CUDA."""
    if tile > 0:
        half = max(1, tile // 2)
        hints = [
            f"lower --tile (now {tile}), e.g. --tile {half}"
            if half > overlap
            else f"lower --tile (now {tile}) and --overlap (now {overlap}), e.g. --tile {half} "
            f"--overlap {half // 4}"
        ]
    else:
        hints = ["upscale on tiles: --tile 256 (now 0, the whole image at once)"]
    if precision == "fp32" and device.type == "cuda":
        hints.append("use --precision bf16 (or fp16)")
    return ", or ".join(hints)


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
) -> list[Path]:
    """Upscale image files and folders with a checkpoint's generator; returns the written files
    (where they go: :func:`plan_outputs`)."""
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
    loaded = load_generator(resolve_checkpoint(checkpoint), prefer_ema=prefer_ema)
    pairs = plan_outputs(inputs, output, loaded.scale, suffix, fmt)
    check_destinations(pairs, "-o" if output else "output")
    for src, _ in pairs:  # every header first: a bomb or a broken file fails before any output
        image_size(src, max_pixels)
    generator = loaded.generator.to(target)
    forward = make_forward(generator, target, precision)
    written = []
    with Bar(len(pairs), "sr-upscale", unit="image", disable=quiet) as bar:
        for src, dst in pairs:
            bar.describe(src.name)
            pic = read_picture(src, max_pixels)
            try:
                out = upscale_picture(pic, forward, loaded.scale, tile, overlap)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                raise OutOfMemory(
                    f"{out_of_memory_summary(exc)} while upscaling {str(src)!r}; "
                    + _memory_hint(tile, overlap, precision, target)
                    + f"; {len(written)} image(s) written before it, none partly."
                ) from exc
            write_array(out, dst, quality, icc=pic.icc, exif=pic.exif)
            written.append(dst)
            bar.update(1)
    return written
