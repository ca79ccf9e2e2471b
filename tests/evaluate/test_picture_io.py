"""sr-upscale's image files: 16-bit PNG samples read exactly, ICC profile and EXIF carried over."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from sr_cli.commands.upscale import main
from sr_cli.evaluate.picture_io import read_picture, write_array, write_png16
from tests.evaluate.icc import gray_profile, rgb_profile

#: 16-bit levels whose high and low bytes both matter.
LEVELS = [0, 1, 255, 256, 257, 4095, 32768, 65279, 65534, 65535]


def known_uint16(h: int, w: int, c: int) -> np.ndarray:
    flat = np.resize(np.array(LEVELS, np.uint16), h * w * c)
    flat[len(LEVELS) :] = (np.arange(len(LEVELS), h * w * c) * 7919) % 65536
    return flat.reshape(h, w, c)


def png16_unfiltered(arr: np.ndarray, path) -> None:
    """A 16-bit PNG written here with filter type 0 (None), independent of write_png16."""
    h, w, c = arr.shape
    rows = arr.astype(">u2").reshape(h, w * c).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_png_samples_are_read_exactly_without_deprecated_decoders(tmp_path):
    rgb, rgba, la = known_uint16(5, 7, 3), known_uint16(4, 6, 4), known_uint16(3, 5, 2)
    png16_unfiltered(rgb, tmp_path / "rgb_none.png")
    write_png16(rgb, tmp_path / "rgb_sub.png")
    write_png16(rgba, tmp_path / "rgba.png")
    write_png16(la, tmp_path / "la.png")
    gray = known_uint16(6, 4, 1)[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")  # Pillow: mode I;16
    assert Image.open(tmp_path / "gray.png").mode == "I;16"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # torchvision.io's decoders warn
        pics = {p.stem: read_picture(p) for p in sorted(tmp_path.glob("*.png"))}
    for name, want, gray_ in (
        ("rgb_none", rgb, False),
        ("rgb_sub", rgb, False),
        ("rgba", rgba, False),
        ("la", la, True),
        ("gray", gray[..., None], True),
    ):
        pic = pics[name]
        assert pic.bits == 16 and pic.gray == gray_, name
        colour = np.round(pic.rgb * 65535).astype(np.int64)
        ref = want[..., :1] if gray_ else want[..., :3]
        assert np.array_equal(colour[..., : ref.shape[2]], ref), name
        if want.shape[2] in (2, 4):
            assert np.array_equal(np.round(pic.alpha * 65535).astype(np.int64), want[..., -1])
        else:
            assert pic.alpha is None
    # The same samples as torchvision's decode_png, which sr-upscale used before (where it
    # still exists).
    tvio = pytest.importorskip("torchvision.io")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("rgb_sub", "rgba", "la"):
            data = tvio.decode_png(
                tvio.read_file(str(tmp_path / f"{name}.png")), tvio.ImageReadMode.UNCHANGED
            )
            old = data.permute(1, 2, 0).numpy().astype(np.int64)
            pic = pics[name]
            planes = [pic.rgb[..., :1] if pic.gray else pic.rgb]
            planes += [] if pic.alpha is None else [pic.alpha[..., None]]
            new = np.round(np.concatenate(planes, axis=2) * 65535).astype(np.int64)
            assert np.array_equal(new, old), name


def exif_block(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "sr-cli camera"  # Make
    exif[0x0110] = "model 7"  # Model
    exif[0x0112] = orientation
    exif[0x0132] = "2024:05:06 07:08:09"  # DateTime
    ifd = exif.get_ifd(0x8769)  # the Exif sub-IFD
    ifd[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    ifd[0x829A] = 0.004  # ExposureTime
    return exif


def tags(im: Image.Image) -> tuple[dict, dict]:
    exif = im.getexif()
    return dict(exif), dict(exif.get_ifd(0x8769))


def test_icc_profile_and_exif_are_carried_to_every_output(trained_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    icc, gicc = rgb_profile(), gray_profile()
    exif = exif_block()
    raw_exif = exif.tobytes()
    rng = np.random.default_rng(0)
    rgb8 = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb8).save(src / "a.png", icc_profile=icc, exif=raw_exif)
    Image.fromarray(rgb8).save(src / "b.jpg", icc_profile=icc, exif=raw_exif, quality=95)
    Image.fromarray(rgb8).save(src / "c.webp", icc_profile=icc, exif=raw_exif, lossless=True)
    Image.fromarray(rgb8).save(src / "d.tif", icc_profile=icc)
    write_png16(known_uint16(10, 12, 3), src / "e16.png", icc=icc, exif=raw_exif)
    gray16 = known_uint16(10, 12, 1)[..., 0]
    Image.fromarray(gray16).save(src / "f16.png", icc_profile=gicc, exif=raw_exif)
    want_tags = tags(Image.open(src / "a.png"))
    assert want_tags[0][0x010F] == "sr-cli camera" and want_tags[1][0x9003]  # the inputs hold them
    assert Image.open(src / "e16.png").info["icc_profile"] == icc  # Pillow reads our iCCP

    main([str(trained_run), str(src), "--tile", "0", "-q"])
    out = tmp_path / "in_x4"
    for name in ("a.png", "b.jpg", "c.webp", "d.tif", "e16.png", "f16.png"):
        im = Image.open(out / name)
        assert im.size == (48, 40), name
        assert im.info.get("icc_profile") == (gicc if name == "f16.png" else icc), name
        if name != "d.tif":  # a TIFF input has no separate EXIF block
            assert tags(im) == want_tags, name
    assert read_picture(out / "e16.png").bits == 16  # still 16 bits with the new chunks
    assert Image.open(out / "f16.png").mode == "I;16"
    # A colour-managed viewer shows the output through the same wide-gamut profile: a pixel
    # of it is not the same colour in sRGB.
    to_srgb = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), "RGB", "RGB"
    )
    probe = Image.new("RGB", (1, 1), (200, 100, 50))
    assert ImageCms.applyTransform(probe, to_srgb).getpixel((0, 0)) != (200, 100, 50)


def test_exif_orientation_goes_with_the_pixels_as_stored(trained_run, tmp_path):
    """Pixels are upscaled as stored and the Orientation tag is kept, so a viewer turns the
    output as it turns the input; the tag does not change the pixels."""
    rng = np.random.default_rng(1)
    stored = (rng.random((6, 10, 3)) * 255).astype(np.uint8)
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif_block(6).tobytes())
    Image.fromarray(stored).save(tmp_path / "plain.png")
    for name in ("turned", "plain"):
        main([str(trained_run), str(tmp_path / f"{name}.png"), "--tile", "0", "-q", "-o",
              str(tmp_path / f"{name}_x4.png")])  # fmt: skip
    turned, plain = Image.open(tmp_path / "turned_x4.png"), Image.open(tmp_path / "plain_x4.png")
    assert turned.getexif()[0x0112] == 6 and 0x0112 not in plain.getexif()
    assert np.array_equal(np.asarray(turned), np.asarray(plain))
    assert turned.size == (40, 24)  # as stored ...
    assert ImageOps.exif_transpose(turned).size == (24, 40)  # ... and shown turned, like the input
    assert ImageOps.exif_transpose(Image.open(tmp_path / "turned.png")).size == (6, 10)


def test_what_an_output_cannot_hold_is_dropped_with_a_warning(tmp_path):
    arr = np.zeros((4, 5, 3), np.uint8)
    raw_exif = exif_block().tobytes()
    with pytest.warns(UserWarning, match="BMP cannot store the input's ICC profile and EXIF"):
        write_array(arr, tmp_path / "a.bmp", icc=rgb_profile(), exif=raw_exif)
    assert (tmp_path / "a.bmp").is_file()
    with pytest.warns(UserWarning, match="a GRAY ICC profile, which does not fit the RGB output"):
        write_array(arr, tmp_path / "b.png", icc=gray_profile(), exif=raw_exif)
    b = Image.open(tmp_path / "b.png")
    assert "icc_profile" not in b.info and b.getexif()[0x010F] == "sr-cli camera"
    with pytest.warns(UserWarning, match="invalid ICC profile"):
        write_array(arr, tmp_path / "c.png", icc=b"not a profile")
    with pytest.warns(UserWarning, match="EXIF block is unreadable"):
        write_array(arr, tmp_path / "d.tif", exif=b"Exif\x00\x00garbage")
    assert Image.open(tmp_path / "d.tif").size == (5, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bmp", "b.png", "c.png", "d.tif"]
