"""Image decoding, HR datasets, samplers and bad-input errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.datasets import (
    HRFolderDataset,
    ImageFolderEvalDataset,
    SeededSampler,
    ShardSampler,
)
from sr_cli.data.images import ImageConversionWarning, read_image
from sr_cli.errors import DataError


def _png16_rgb(path, arr):
    """Write a 16-bit RGB PNG by hand (PIL cannot write 48-bit PNGs)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag, data):
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_bundled_samples_are_present_and_distinct():
    train = sorted(p.name for p in (SAMPLES_DIR / "train").glob("*.png"))
    val = sorted(p.name for p in (SAMPLES_DIR / "val").glob("*.png"))
    assert len(train) >= 8 and len(val) >= 3
    assert not set(train) & set(val)
    total = sum(p.stat().st_size for p in SAMPLES_DIR.rglob("*.png"))
    assert total < 5 * 2**20
    for p in (SAMPLES_DIR / "val").glob("*.png"):
        h, w = read_image(p).shape[:2]
        assert h % 12 == 0 and w % 12 == 0  # exact at scales 2, 3, 4


@pytest.mark.parametrize(
    "mode,note",
    [("L", "grayscale"), ("RGBA", "alpha channel dropped"), ("P", "palette"), ("I;16", "16-bit")],
)
def test_odd_modes_convert_to_rgb_with_warning(tmp_path, mode, note):
    rgb = (np.random.default_rng(0).random((8, 10, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("P")
    else:
        im = Image.fromarray((np.arange(80).reshape(8, 10) * 800).astype(np.uint16))
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    im.save(path)
    with pytest.warns(ImageConversionWarning, match=note):
        out = read_image(path)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    if mode == "RGBA":
        assert np.array_equal(out, rgb)
    if mode == "I;16":
        assert out[0, 1, 0] == round(800 * 255 / 65535)


def test_16bit_rgb_png_is_scaled_and_warned(tmp_path):
    arr = np.full((4, 4, 3), 65535, dtype=np.uint16)
    arr[0, 0] = (0, 32896, 65535)
    path = tmp_path / "deep.png"
    _png16_rgb(path, arr)
    with pytest.warns(ImageConversionWarning, match="16-bit RGB"):
        out = read_image(path)
    assert out[0, 0].tolist() == [0, 128, 255]


def test_corrupt_file_error_names_the_file(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "good.png")
    good = (folder / "good.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])
    (folder / "notimage.png").write_bytes(b"hello")
    with pytest.raises(DataError, match="notimage.png"):
        HRFolderDataset(folder, patch_size=32, scale=4)
    (folder / "notimage.png").unlink()
    with pytest.raises(DataError, match="broken.png"):
        HRFolderDataset(folder, patch_size=32, scale=4, cache_images=True)


def test_image_smaller_than_patch_names_the_file(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "big.png")
    Image.new("RGB", (20, 64)).save(folder / "tiny.png")
    with pytest.raises(DataError, match=r"tiny.png.*smaller than the HR patch size 32"):
        HRFolderDataset(folder, patch_size=32, scale=4)
    with pytest.warns(UserWarning, match="skipping"):
        ds = HRFolderDataset(folder, patch_size=32, scale=4, skip_bad=True)
    assert [p.name for p in ds.files] == ["big.png"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        HRFolderDataset(tmp_path / "nope", patch_size=32, scale=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        HRFolderDataset(tmp_path / "empty", patch_size=32, scale=4)


def test_patch_must_be_multiple_of_scale():
    with pytest.raises(DataError, match="not a multiple of scale=3"):
        HRFolderDataset(SAMPLES_DIR / "train", patch_size=32, scale=3)


def test_crops_are_reproducible_and_augmented():
    ds = HRFolderDataset(SAMPLES_DIR / "train", patch_size=48, scale=4)
    a = ds[(0, 123)]["gt"]
    b = ds[(0, 123)]["gt"]
    c = ds[(0, 124)]["gt"]
    assert a.shape == (3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1
    # With augmentation off, every crop is a window of the original image.
    plain = HRFolderDataset(
        SAMPLES_DIR / "train", patch_size=48, scale=4, hflip=False, vflip=False, rot90=False
    )
    img = torch.from_numpy(read_image(plain.files[0])).permute(2, 0, 1).float() / 255
    patch = plain[(0, 5)]["gt"]
    windows = img.unfold(1, 48, 1).unfold(2, 48, 1)  # (3, nh, nw, 48, 48)
    match = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
    assert match.min() == 0


def test_seeded_sampler_epochs_and_shards():
    s = SeededSampler(num_images=5, samples_per_epoch=12, seed=3)
    e0 = list(s)
    assert len(e0) == 12 and all(0 <= i < 5 for i, _ in e0)
    assert e0 == list(s)  # same epoch, same sequence
    # Every image once per pass of 5 samples (shuffled without replacement).
    assert sorted(i for i, _ in e0[:5]) == [0, 1, 2, 3, 4]
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0
    # One endless stream: epoch 1 continues where epoch 0 stopped.
    assert e0 + e1 == list(SeededSampler(5, 24, seed=3))
    # Two ranks take disjoint, interleaved shares of the same global stream.
    r0 = list(SeededSampler(5, 6, seed=3, rank=0, world_size=2))
    r1 = list(SeededSampler(5, 6, seed=3, rank=1, world_size=2))
    assert len(r0) == len(r1) == 6
    assert not {sd for _, sd in r0} & {sd for _, sd in r1}
    assert [x for pair in zip(r0, r1) for x in pair] == list(SeededSampler(5, 12, seed=3))


def test_seeded_sampler_starts_where_training_is():
    """With start_sample, the samples depend only on how many were consumed (mid-epoch resume)."""
    full = list(SeededSampler(5, 12, seed=3))
    consumed = [4]
    resumed = SeededSampler(5, 12, seed=3, start_sample=lambda: consumed[0])
    assert list(resumed)[:8] == full[4:]


def test_shard_sampler_is_unpadded():
    shards = [list(ShardSampler(5, r, 2)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3]]


def test_eval_dataset_mod_crops(tmp_path):
    Image.new("RGB", (50, 37)).save(tmp_path / "odd.png")
    ds = ImageFolderEvalDataset(tmp_path, scale=4)
    item = ds[0]
    assert item["gt"].shape == (3, 36, 48) and item["name"] == "odd"
