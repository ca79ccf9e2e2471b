"""Small valid ICC v2 display profiles built byte by byte (ICC.1:2001-04), for the colour tests.

:func:`rgb_profile` has the Adobe RGB (1998) primaries (D50-adapted colorants, gamma 563/256):
a wide-gamut profile, not sRGB. :func:`gray_profile` is a gamma-2.2 gray profile.
"""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
ADOBE_RGB = {
    b"rXYZ": (0.6097, 0.3111, 0.0195),
    b"gXYZ": (0.2053, 0.6257, 0.0609),
    b"bXYZ": (0.1492, 0.0632, 0.7446),
}


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_))
        + ascii_
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0)  # no ScriptCode description
        + b"\0" * 67
    )


def _text(text: str) -> bytes:
    return b"text\0\0\0\0" + text.encode("ascii") + b"\0"


def build_profile(space: bytes, tags: dict[bytes, bytes]) -> bytes:
    """Header, tag table and the tags, each 4-byte aligned."""
    table, data = [], b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags.items():
        table.append(struct.pack(">4sII", sig, offset + len(data), len(body)))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"  # preferred CMM
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntr"
        + space
        + b"XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 4  # platform
        + struct.pack(">II", 0, 0)  # flags, manufacturer
        + struct.pack(">I", 0)  # model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual
        + b"".join(_s15(v) for v in D50)
        + b"\0" * 4  # creator
    )
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


def rgb_profile(description: str = "sr-cli test: Adobe RGB (1998) primaries") -> bytes:
    gamma = 563 / 256
    tags = {b"desc": _desc(description), b"cprt": _text("No copyright"), b"wtpt": _xyz(D50)}
    tags.update({sig: _xyz(v) for sig, v in ADOBE_RGB.items()})
    tags.update({sig: _curve(gamma) for sig in (b"rTRC", b"gTRC", b"bTRC")})
    return build_profile(b"RGB ", tags)


def gray_profile(description: str = "sr-cli test: gray, gamma 2.2") -> bytes:
    tags = {
        b"desc": _desc(description),
        b"cprt": _text("No copyright"),
        b"wtpt": _xyz(D50),
        b"kTRC": _curve(2.2),
    }
    return build_profile(b"GRAY", tags)
