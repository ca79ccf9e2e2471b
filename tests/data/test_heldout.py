"""The held-out evaluation images: ten images read from installed packages, none of them bundled."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.heldout import HELDOUT_IMAGES, MODCROP, heldout_dir, resolve_dataset
from sr_cli.errors import DataError


def test_ten_images_written_once_with_their_recorded_pixels(tmp_path):
    folder = heldout_dir(tmp_path)
    files = sorted(folder.glob("*.png"))
    assert len(files) == len(HELDOUT_IMAGES) >= 10
    for image in HELDOUT_IMAGES:
        a = np.asarray(Image.open(folder / image.name).convert("RGB"))
        assert a.shape[0] % MODCROP == 0 and a.shape[1] % MODCROP == 0 and min(a.shape[:2]) >= 168
        assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == image.sha256
    stamp = (folder / HELDOUT_IMAGES[0].name).stat().st_mtime_ns
    heldout_dir(tmp_path)  # present: not rewritten
    assert (folder / HELDOUT_IMAGES[0].name).stat().st_mtime_ns == stamp


def test_no_heldout_image_is_a_bundled_one(tmp_path):
    folder = heldout_dir(tmp_path)
    bundled = {p.stem for p in SAMPLES_DIR.glob("*/*.png")}
    assert not bundled & {p.stem for p in folder.glob("*.png")}
    sizes = {Image.open(p).size for p in SAMPLES_DIR.glob("*/*.png")}
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in SAMPLES_DIR.glob("*/*.png")}
    for p in folder.glob("*.png"):
        assert hashlib.sha256(p.read_bytes()).hexdigest() not in digests
        # not a crop of a bundled image of the same size either
        if Image.open(p).size in sizes:
            a = np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
            for q in SAMPLES_DIR.glob("*/*.png"):
                if Image.open(q).size == Image.open(p).size:
                    b = np.asarray(Image.open(q).convert("RGB"), dtype=np.int16)
                    assert np.abs(a - b).mean() > 10


def test_the_name_resolves_and_a_missing_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SR_CLI_CACHE", str(tmp_path))
    assert resolve_dataset("heldout") == tmp_path / "heldout"
    assert resolve_dataset("/data/Set5").name == "Set5"
    import sr_cli.data.heldout as h

    fake = h.HeldoutImage("x.png", "no-such-pkg", "no_such_module_xyz", "x.png", "", "", "")
    monkeypatch.setattr(h, "HELDOUT_IMAGES", (fake,))
    with pytest.raises(DataError, match="pip install no-such-pkg"):
        h.heldout_dir(tmp_path / "other")
