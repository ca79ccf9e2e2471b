"""Tiled inference with overlapping tiles and seamless blending.

Large images are super-resolved tile by tile, so the memory a network needs is bounded by the
tile size instead of the image size. Tiles overlap by ``overlap`` LQ pixels; in the output,
each tile is weighted by a cosine ("raised cosine") feathering window that falls towards the
sides it shares with a neighbour (sides on the image border keep full weight), and the result
is the weighted sum divided by the summed weights. Pixels near a tile's inner edges, which
saw the least context, therefore contribute the least, and no seam is visible.

The tiles of a row or column are spread evenly, the last aligned with the image border, and
all have the same size (at most ``tile``, shrunk to an even split of the side), so a fully
convolutional network gives, away from the border effects of its receptive field, the same output as on the whole image.

Example:
    >>> net = lambda x: torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    >>> sr = tiled_forward(net, torch.rand(1, 3, 100, 70), scale=2, tile=32, overlap=8)
    >>> sr.shape
    torch.Size([1, 3, 200, 140])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from sr_cli.errors import ConfigError

TileFn = Callable[[Tensor], Tensor]


def tile_layout(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Tile size and start offsets covering ``range(length)``: as few tiles of at most ``tile``
    pixels as overlap by at least ``overlap``, shrunk to an even split of the side.

    The number of tiles is the least that ``tile``-sized tiles need; their common size is then the
    smallest that still covers the side with that overlap, and the starts are spread evenly
    (the first at 0, the last ending at ``length``). So the network processes barely more
    pixels than the image has (a 500-pixel side with tile 256 and overlap 16 takes 3 tiles of
    178, not 3 of 256), and the memory stays bounded by ``tile``. A side no longer than
    ``tile`` is one tile.

    >>> tile_layout(100, 48, 16)
    (44, [0, 28, 56])
    """
    if length <= tile:
        return length, [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    # Neighbouring starts differ by round((length - size) / (n - 1)) at most, which is at most
    # size - overlap because n * size >= length + (n - 1) * overlap.
    return size, [round(i * (length - size) / (n - 1)) for i in range(n)]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of :func:`tile_layout`'s tiles.

    >>> tile_starts(100, 48, 16)
    [0, 28, 56]
    """
    return tile_layout(length, tile, overlap)[1]


def feather(length: int, ramp: int, before: bool, after: bool, device=None) -> Tensor:
    """1-D blending weights of a tile side: a raised-cosine ramp of ``ramp`` pixels towards each
    neighbouring tile (``before``/``after``), 1 elsewhere. All weights are strictly positive."""
    w = torch.ones(length, dtype=torch.float32, device=device)
    ramp = min(int(ramp), length)
    if ramp <= 0:
        return w
    i = torch.arange(ramp, dtype=torch.float32, device=device)
    up = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)
    if before:
        w[:ramp] *= up
    if after:
        w[length - ramp :] *= up.flip(0)
    return w


def check_tiling(tile: int | None, overlap: int) -> None:
    """Raise :class:`ConfigError` for a tile/overlap pair that cannot work."""
    if tile is None or tile <= 0:
        return
    if overlap < 0 or overlap >= tile:
        raise ConfigError(
            f"tile overlap must be in [0, tile) but got overlap={overlap} with tile={tile}; "
            "use e.g. --overlap 16 with --tile 256."
        )


def iter_tiled_rows(
    fn: TileFn,
    lq: Tensor,
    scale: int,
    tile: int,
    overlap: int = 16,
    out_device: torch.device | str | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Tiled ``fn(lq)``, yielded as finished horizontal strips ``(y0, y1, strip)`` of the output.

    Only the strip of tile rows still being blended is kept in memory (float32, on
    ``out_device``, by default the device of ``fn``'s output), so the peak memory is bounded by
    the tile size and the image width, not by the image height. Strips cover the output rows
    ``[y0, y1)`` in order and together the whole image.

    Args:
        fn: network ``(B, C, h, w) -> (B, C', h * scale, w * scale)``.
        lq: input ``(B, C, H, W)``.
        scale: integer upscaling factor of ``fn``.
        tile: LQ tile side in pixels (``<= 0``: a single tile, the whole image).
        overlap: LQ pixels shared by neighbouring tiles (``0 <= overlap < tile``).
        out_device: where the blended output is accumulated.
    """
    if lq.dim() != 4:
        raise ValueError(f"tiled_forward expects (B, C, H, W), got {tuple(lq.shape)}")
    _, _, h, w = lq.shape
    if tile is None or tile <= 0:
        tile = max(h, w)
    check_tiling(tile, overlap)
    (th, ys), (tw, xs) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    ramp = overlap * scale
    wx_cache: dict[int, Tensor] = {}
    strip: Tensor | None = None  # output rows [strip_y0, strip_y0 + strip.shape[-2])
    strip_w: Tensor | None = None
    strip_y0 = 0
    done = 0  # output rows already yielded
    for row, y0 in enumerate(ys):
        oy0, oy1 = y0 * scale, (y0 + th) * scale
        wy = feather(th * scale, ramp, before=y0 > 0, after=y0 + th < h)
        for x0 in xs:
            out = fn(lq[..., y0 : y0 + th, x0 : x0 + tw])
            if out.shape[-2:] != (th * scale, tw * scale):
                raise ValueError(
                    f"the network turned a {th}x{tw} tile into {tuple(out.shape[-2:])}, "
                    f"not {th * scale}x{tw * scale}: is scale={scale} right?"
                )
            dev = torch.device(out_device) if out_device is not None else out.device
            if strip is None:
                strip = torch.zeros(out.shape[0], out.shape[1], th * scale, w * scale, device=dev)
                strip_w = torch.zeros(1, 1, th * scale, w * scale, device=dev)
                strip_y0 = oy0
            if oy1 - strip_y0 > strip.shape[-2]:  # grow downwards to hold this tile row
                extra = oy1 - strip_y0 - strip.shape[-2]
                strip = torch.cat([strip, strip.new_zeros(*strip.shape[:2], extra, w * scale)], -2)
                strip_w = torch.cat([strip_w, strip_w.new_zeros(1, 1, extra, w * scale)], -2)
            if x0 not in wx_cache:
                wx_cache[x0] = feather(tw * scale, ramp, before=x0 > 0, after=x0 + tw < w)
            weight = (wy[:, None] * wx_cache[x0][None, :]).to(dev)
            sl = (..., slice(oy0 - strip_y0, oy1 - strip_y0), slice(x0 * scale, (x0 + tw) * scale))
            strip[sl] += out.to(dev, torch.float32) * weight
            strip_w[sl] += weight
            del out
        # Rows above the next tile row's start are final.
        final_to = ys[row + 1] * scale if row + 1 < len(ys) else h * scale
        n = final_to - strip_y0
        if n > 0:
            yield done, final_to, strip[..., :n, :] / strip_w[..., :n, :]
            done = final_to
            strip = strip[..., n:, :].clone()
            strip_w = strip_w[..., n:, :].clone()
            strip_y0 = final_to


def tiled_forward(
    fn: TileFn,
    lq: Tensor,
    scale: int,
    tile: int | None,
    overlap: int = 16,
    out_device: torch.device | str | None = None,
) -> Tensor:
    """``fn(lq)`` computed on overlapping tiles and blended seamlessly.

    Args:
        fn: network ``(B, C, h, w) -> (B, C', h * scale, w * scale)``, e.g. a generator.
        lq: input ``(B, C, H, W)``.
        scale: integer upscaling factor of ``fn``.
        tile: LQ tile side; ``None``/``0`` or an image no larger than one tile runs ``fn`` once.
        overlap: LQ pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
        out_device: device of the float32 output (default: that of ``fn``'s output).

    Shape:
        ``(B, C, H, W) -> (B, C', H * scale, W * scale)``.
    """
    if tile is None or tile <= 0 or (lq.shape[-2] <= tile and lq.shape[-1] <= tile):
        out = fn(lq)
        return out.float() if out_device is None else out.to(out_device, torch.float32)
    strips = [s for _, _, s in iter_tiled_rows(fn, lq, scale, tile, overlap, out_device)]
    return torch.cat(strips, dim=-2)
