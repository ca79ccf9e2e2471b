"""Decompression bombs and broken files: refused from the header, before any decoding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.datasets import HRFolderDataset, open_eval_dataset
from sr_cli.data.images import (
    MAX_PIXELS,
    ImageTooLargeError,
    image_size,
    open_image,
    read_image,
)
from sr_cli.errors import ConfigError, DataError
from tests.conftest import compose_train
from tests.data.bombs import header_bomb, zero_bomb


@pytest.fixture
def bombs(tmp_path):
    folder = tmp_path / "bombs"
    folder.mkdir()
    return zero_bomb(folder / "zeros.png"), header_bomb(folder / "claims.png")


def test_bombs_are_tiny_files_that_claim_huge_images(bombs):
    zeros, claims = bombs
    assert zeros.stat().st_size < 20_000 and claims.stat().st_size < 100
    with open_image(zeros, max_pixels=0) as im:  # 0: no limit; still lazy, nothing decoded
        assert im.size == (12000, 12000)
    assert image_size(claims, max_pixels=0) == (100_000, 100_000)
    assert 12000 * 12000 > MAX_PIXELS


@pytest.mark.parametrize("which,pixels", [(0, 144_000_000), (1, 10_000_000_000)])
def test_refused_before_decoding_with_one_line_naming_file_and_option(bombs, which, pixels):
    path = bombs[which]
    for call in (read_image, image_size):
        with pytest.raises(ImageTooLargeError) as info:
            call(path)
        msg = str(info.value)
        assert str(path) in msg and f"= {pixels} pixels" in msg and "\n" not in msg
        assert "data.max_pixels" in msg and "--max-pixels" in msg
    assert issubclass(ImageTooLargeError, DataError)


def test_the_limit_is_the_users_both_ways(tmp_path, monkeypatch):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((200, 300, 3), 7, np.uint8)).save(img)
    with pytest.raises(ImageTooLargeError, match="200 = 60000 pixels, over the limit of 59999"):
        read_image(img, max_pixels=59_999)
    assert read_image(img, max_pixels=60_000).shape == (200, 300, 3)
    # A raised limit also lifts PIL's own check (here made smaller than the image), which
    # stays in force outside.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert read_image(img, max_pixels=0)[0, 0, 0] == 7
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(img)
    for bad in (-1, 1.5, "10"):
        with pytest.raises(ConfigError, match="not a pixel count"):
            read_image(img, max_pixels=bad)


def _train_folder(tmp_path, bombs):
    folder = tmp_path / "train"
    folder.mkdir()
    for name in ("camera.png", "chelsea.png"):
        Image.open(SAMPLES_DIR / "val" / name).convert("RGB").crop((0, 0, 64, 64)).save(
            folder / name
        )
    for b in bombs:
        b.rename(folder / b.name)
    data = (folder / "camera.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "garbage.png").write_bytes(b"not an image at all")
    return folder


@pytest.mark.parametrize("cache", [True, False])
def test_training_set_refuses_by_default_and_skip_bad_skips_each_named(tmp_path, bombs, cache):
    folder = _train_folder(tmp_path, bombs)
    with pytest.raises(DataError) as info:
        HRFolderDataset(folder, 32, 4, cache_images=cache)
    assert "claims.png" in str(info.value) or "garbage.png" in str(info.value)
    with pytest.warns(UserWarning) as caught:
        ds = HRFolderDataset(folder, 32, 4, cache_images=cache, skip_bad=True)
        patches = [ds[(i, i)]["gt"] for i in range(len(ds))]  # decodes every kept file
    text = " ".join(str(w.message) for w in caught)
    for name in ("claims.png", "zeros.png", "garbage.png", "truncated.png"):
        assert f"{folder / name}" in text, name
    good = {"camera.png", "chelsea.png"}
    assert {p.name for p in ds.files} <= good | {"truncated.png"}  # header ok, pixels not
    assert all(p.shape == (3, 32, 32) for p in patches)


def test_truncated_file_without_cache_is_refused_when_read(tmp_path, bombs):
    folder = _train_folder(tmp_path, bombs)
    for name in ("claims.png", "zeros.png", "garbage.png", "chelsea.png"):
        (folder / name).unlink()
    ds = HRFolderDataset(folder, 32, 4, cache_images=False)
    index = [p.name for p in ds.files].index("truncated.png")
    with pytest.raises(DataError, match="truncated.png"):
        ds[(index, 0)]


def test_data_config_max_pixels_and_skip_bad_reach_the_datasets(tmp_path, bombs):
    """``data.max_pixels`` / ``data.skip_bad`` from the real config, through SRDataModule."""
    folder = _train_folder(tmp_path, bombs)
    for name in ("garbage.png", "truncated.png", "claims.png"):
        (folder / name).unlink()
    base = [f"data.train_dir={folder}", f"data.val_dir={folder}", "data.patch_size=32"]
    dm = instantiate(compose_train(base).data, _convert_="all")
    with pytest.raises(ImageTooLargeError, match="zeros.png"):
        dm.setup("fit")
    dm = instantiate(compose_train([*base, "data.skip_bad=true"]).data, _convert_="all")
    with pytest.warns(UserWarning, match="zeros.png"):
        dm.setup("fit")
    assert sorted(p.name for p in dm.train_set.files) == ["camera.png", "chelsea.png"]
    (folder / "zeros.png").unlink()
    dm = instantiate(compose_train([*base, "data.max_pixels=4000"]).data, _convert_="all")
    with pytest.raises(ImageTooLargeError, match="over the limit of 4000"):
        dm.setup("fit")


def test_eval_dataset_takes_the_limit(tmp_path, bombs):
    folder = tmp_path / "val"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "a.png")
    bombs[0].rename(folder / "zeros.png")
    with pytest.raises(ImageTooLargeError, match="zeros.png"):
        open_eval_dataset(folder, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_eval_dataset(folder, 4, skip_bad=True)
    assert [p.name for p in ds.files] == ["a.png"]
