"""Hand-made image files for the decompression-bomb tests (written by the tests themselves)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(width: int, height: int, idat: bytes, bit_depth: int = 8, color: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def zero_bomb(path: Path, side: int = 12000) -> Path:
    """A valid 1-bit grayscale PNG of ``side x side`` black pixels: a few kB on disk, 144 MP
    (432 MB as RGB) once decoded."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(png_bytes(side, side, idat, bit_depth=1))
    return path


def header_bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims ``side x side`` pixels (1e10 for the default) with no data."""
    path.write_bytes(png_bytes(side, side, zlib.compress(b""), bit_depth=8, color=2))
    return path
