"""``sr-data download``: registry, offline failure message, verify + extract of placed archives."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_cli.commands.data import main
from sr_cli.data import download as dl
from sr_cli.errors import DataError

UNREACHABLE = "http://127.0.0.1:9/tiny/{}"  # discard port: connection refused at once


def _png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _make_zip(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Tiny_HR/", "")
        zf.writestr("Tiny_HR/0001.png", _png_bytes(1))
        zf.writestr("Tiny_HR/0002.png", _png_bytes(2))
        zf.writestr("Other/readme.txt", "not extracted")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registry entry ``tiny`` for a small generated zip (its checksum computed here)."""
    src = tmp_path / "placed"
    src.mkdir()
    archive = src / "Tiny_HR.zip"
    sha = _make_zip(archive)
    monkeypatch.setitem(
        dl.ARCHIVES,
        "tiny",
        dl.Archive(
            "Tiny_HR.zip", UNREACHABLE.format("Tiny_HR.zip"), sha, archive.stat().st_size, "test"
        ),
    )
    monkeypatch.setitem(
        dl.DATASETS, "tiny", dl.DatasetSpec("test", (dl.Part("tiny", "Tiny_HR", "T/Tiny_HR"),))
    )
    return archive


def test_registry_is_consistent():
    hexdigest = re.compile(r"^[0-9a-f]{64}$")
    for key, archive in dl.ARCHIVES.items():
        assert archive.url.endswith(archive.filename), key
        assert archive.sha256 is None or hexdigest.match(archive.sha256), key
    for name in ("train_hr", "valid_hr", "train_lr_x4", "valid_lr_x2"):
        a = dl.ARCHIVES[f"div2k_{name}"]
        assert a.url.startswith("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_")
        assert a.sha256 and a.size
    for name, spec in dl.DATASETS.items():
        for part in spec.parts:
            assert spec.manual or part.archive in dl.ARCHIVES, name
    targets = {p.target for p in dl.DATASETS["div2k"].parts}
    assert "DIV2K/DIV2K_train_HR" in targets and "DIV2K/DIV2K_valid_LR_bicubic/X4" in targets
    assert {p.target for p in dl.DATASETS["benchmark"].parts} == {
        f"benchmark/{n}" for n in ("Set5", "Set14", "B100", "Urban100")
    }


def test_offline_fails_at_once_with_manual_instructions(tiny, tmp_path, capsys):
    dest = tmp_path / "data"
    start = time.monotonic()
    code = main(["download", "tiny", "--dest", str(dest), "--quiet"])
    assert time.monotonic() - start < 15
    assert code == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/tiny/Tiny_HR.zip" in err
    assert str(dest.resolve() / "downloads" / "Tiny_HR.zip") in err
    assert str(dest.resolve() / "T" / "Tiny_HR") in err
    assert "--from-dir" in err and dl.ARCHIVES["tiny"].sha256 in err
    assert not (dest / "downloads" / "Tiny_HR.zip.part").exists()


def test_placed_archive_is_verified_and_extracted(tiny, tmp_path):
    dest = tmp_path / "data"
    lines = dl.download("tiny", dest=dest, from_dir=tiny.parent, progress=False)
    out = dest / "T" / "Tiny_HR"
    assert sorted(p.name for p in out.iterdir()) == ["0001.png", "0002.png"]
    assert (out / "0002.png").read_bytes() == _png_bytes(2)
    assert not (dest / "T" / "Other").exists()
    assert "verified SHA-256" in lines[0]
    assert tiny.is_file()  # the user's file is left alone
    assert not list(dest.glob(".extract-*"))
    # Run again: nothing to do.
    assert "already present" in dl.download("tiny", dest=dest, progress=False)[0]


def test_archive_placed_in_downloads_folder(tiny, tmp_path, capsys):
    dest = tmp_path / "data"
    (dest / "downloads").mkdir(parents=True)
    tiny.rename(dest / "downloads" / tiny.name)
    assert main(["download", "tiny", "--dest", str(dest), "--quiet"]) == 0
    assert "verified" in capsys.readouterr().out
    assert (dest / "T" / "Tiny_HR" / "0001.png").is_file()


def test_checksum_mismatch_is_refused(tiny, tmp_path, monkeypatch):
    bad = dl.Archive("Tiny_HR.zip", dl.ARCHIVES["tiny"].url, "0" * 64, None, "test")
    monkeypatch.setitem(dl.ARCHIVES, "tiny", bad)
    with pytest.raises(DataError, match="checksum mismatch") as err:
        dl.download("tiny", dest=tmp_path / "data", from_dir=tiny.parent, progress=False)
    assert str(tiny) in str(err.value) and hashlib.sha256(tiny.read_bytes()).hexdigest() in str(
        err.value
    )
    assert not (tmp_path / "data" / "T" / "Tiny_HR").exists()
    # --no-verify skips the check.
    dl.download("tiny", dest=tmp_path / "data", from_dir=tiny.parent, verify=False, progress=False)
    assert (tmp_path / "data" / "T" / "Tiny_HR" / "0001.png").is_file()


def test_unknown_checksum_extracts_with_a_not_verified_warning(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(
        dl.ARCHIVES, "tiny", dl.Archive("Tiny_HR.zip", dl.ARCHIVES["tiny"].url, None)
    )
    with pytest.warns(UserWarning, match="NOT verified"):
        lines = dl.download("tiny", dest=tmp_path / "d", from_dir=tiny.parent, progress=False)
    assert "NOT verified" in lines[0]


def test_tar_member_subset_and_unsafe_paths(tmp_path, monkeypatch):
    tar_path = tmp_path / "src" / "bench.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tf:
        for name in ("benchmark/Set5/HR/baby.png", "benchmark/Set14/HR/comic.png"):
            data = _png_bytes(len(name))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    monkeypatch.setitem(dl.ARCHIVES, "bench", dl.Archive("bench.tar", UNREACHABLE, sha))
    part = dl.Part("bench", "benchmark/Set5", "benchmark/Set5")
    monkeypatch.setitem(dl.DATASETS, "s5", dl.DatasetSpec("t", (part,)))
    dl.download("s5", dest=tmp_path / "d", from_dir=tar_path.parent, progress=False)
    assert (tmp_path / "d" / "benchmark" / "Set5" / "HR" / "baby.png").is_file()
    assert not (tmp_path / "d" / "benchmark" / "Set14").exists()

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DataError, match="unsafe member path"):
        dl.extract_member(evil, "", tmp_path / "stage")
    assert not (tmp_path / "escape.txt").exists()


def test_extracted_folder_in_from_dir_is_copied(tiny, tmp_path):
    placed = tmp_path / "unzipped"
    with zipfile.ZipFile(tiny) as zf:
        zf.extractall(placed)
    tiny.unlink()
    lines = dl.download("tiny", dest=tmp_path / "data", from_dir=placed, progress=False)
    assert "not verified" in lines[0]
    assert (tmp_path / "data" / "T" / "Tiny_HR" / "0001.png").is_file()


def test_list_unknown_and_manual_only_sets(tmp_path, capsys):
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "div2k" in listing and "set5" in listing and "manga109" in listing
    assert main(["download", "nope", "--dest", str(tmp_path)]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(["download", "manga109", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manga109.org" in err and str(tmp_path.resolve() / "benchmark" / "Manga109") in err


# ------------------------------------------------------------------ issue #26: archives
BOMB = 4_000_000  # bytes of zeros: a few KB compressed
LIMIT = 1_000_000


def _register(monkeypatch, archive: Path, member: str = "Tiny_HR") -> None:
    """``tiny`` -> ``archive`` (not verified: the user passes --no-verify, as in the issue)."""
    monkeypatch.setitem(dl.ARCHIVES, "tiny", dl.Archive(archive.name, UNREACHABLE, None))
    monkeypatch.setitem(
        dl.DATASETS, "tiny", dl.DatasetSpec("test", (dl.Part("tiny", member, "T/Tiny_HR"),))
    )


def _zip_bomb(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Tiny_HR/0001.png", _png_bytes(1))
        zf.writestr("Tiny_HR/zeros.bin", bytes(BOMB))
    assert path.stat().st_size < 20_000
    return path


def _tar_bomb(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("Tiny_HR/zeros.bin")
        info.size = BOMB
        tf.addfile(info, io.BytesIO(bytes(BOMB)))
    assert path.stat().st_size < 20_000
    return path


def _nothing_left(dest: Path) -> None:
    assert not dest.exists(), sorted(str(p) for p in dest.rglob("*"))  # not even a staging folder


@pytest.mark.parametrize("make", [_zip_bomb, _tar_bomb], ids=["zip", "tar.gz"])
def test_unpacked_size_is_bounded_by_the_declared_sizes(tmp_path, monkeypatch, capsys, make):
    archive = make(tmp_path / "placed" / ("bomb.zip" if make is _zip_bomb else "bomb.tar.gz"))
    _register(monkeypatch, archive)
    dest = tmp_path / "data"
    argv = ["download", "tiny", "--dest", str(dest), "--from-dir", str(archive.parent)]
    code = main([*argv, "--no-verify", "--quiet", "--max-unpacked-bytes", str(LIMIT)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-data download: error: ") and err.count("\n") == 1
    assert f"declares {BOMB + (len(_png_bytes(1)) if make is _zip_bomb else 0)}" in err
    assert f"--max-unpacked-bytes {LIMIT}" in err
    _nothing_left(dest)
    # under the default bound (50 GB) the same archive extracts
    assert main([*argv, "--no-verify", "--quiet"]) == 0
    assert (dest / "T" / "Tiny_HR" / "zeros.bin").stat().st_size == BOMB


def _patch_sizes(data: bytearray, size: int, crc: int) -> None:
    """Set the uncompressed size and CRC of every entry in a zip's local and central headers."""
    import struct

    for signature, size_at, crc_at in ((b"PK\x03\x04", 22, 14), (b"PK\x01\x02", 24, 16)):
        start = data.find(signature)
        while start != -1:
            data[start + size_at : start + size_at + 4] = struct.pack("<I", size)
            data[start + crc_at : start + crc_at + 4] = struct.pack("<I", crc)
            start = data.find(signature, start + 4)


@pytest.mark.parametrize("crc_matches", [True, False])
def test_a_zip_header_that_understates_a_size_cannot_write_more(tmp_path, monkeypatch, crc_matches):
    """The header claims 1000 bytes where 4 MB are compressed: at most what the header declares
    is written (CRC of those bytes right), or the member is refused as corrupt and the staging
    folder removed (CRC wrong)."""
    import zlib

    archive = tmp_path / "placed" / "liar.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Tiny_HR/zeros.bin", bytes(BOMB))
    data = bytearray(archive.read_bytes())
    _patch_sizes(data, 1000, zlib.crc32(bytes(1000)) if crc_matches else 12345)
    archive.write_bytes(bytes(data))
    _register(monkeypatch, archive)
    dest = tmp_path / "data"
    if crc_matches:
        dl.download("tiny", dest=dest, from_dir=archive.parent, verify=False, progress=False)
        assert (dest / "T" / "Tiny_HR" / "zeros.bin").stat().st_size == 1000
        assert not list(dest.glob(".extract-*"))
    else:
        with pytest.raises(DataError, match="corrupt or incomplete"):
            dl.download("tiny", dest=dest, from_dir=archive.parent, verify=False, progress=False)
        _nothing_left(dest)


def test_bytes_written_beyond_the_declared_sizes_are_caught(tmp_path):
    """The bound is also checked on the bytes actually written: a reader that yields more than
    its header declared stops at the bound."""
    budget = dl._Budget(tmp_path / "x.zip", LIMIT)
    budget.declare([1000])
    out = io.BytesIO()
    with pytest.raises(DataError, match="lies about its sizes"):
        budget.copy(io.BytesIO(bytes(BOMB)), out)
    assert len(out.getvalue()) <= LIMIT


def test_a_refused_extraction_leaves_no_staging_folder_in_an_existing_dest(tmp_path, monkeypatch):
    archive = _zip_bomb(tmp_path / "placed" / "bomb.zip")
    _register(monkeypatch, archive)
    dest = tmp_path / "data"
    (dest / "keep").mkdir(parents=True)
    with pytest.raises(DataError, match="declares"):
        dl.download(
            "tiny", dest=dest, from_dir=archive.parent, verify=False, progress=False,
            max_unpacked_bytes=LIMIT,
        )  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == ["keep"]


@pytest.mark.parametrize(
    "argv,option",
    [
        (["shard", "S", "O", "--shard-bytes", "-5"], "--shard-bytes -5"),
        (["shard", "S", "O", "--shard-size", "0"], "--shard-size 0"),
        (["shard", "S", "O", "--shard-bytes", "nan"], "--shard-bytes nan"),
        (["prepare", "S", "O", "--crop-size", "0"], "--crop-size 0"),
        (["prepare", "S", "O", "--step", "-1"], "--step -1"),
        (["prepare", "S", "O", "--workers", "0"], "--workers 0"),
        (["prepare", "S", "O", "--lr-scales", "2", "-4"], "--lr-scales -4"),
        (["prepare", "S", "O", "--thresh-size", "-1"], "--thresh-size -1"),
        (["prepare", "S", "O", "--max-pixels", "-1"], "--max-pixels=-1 is not a pixel count"),
        (["shard", "S", "O", "--max-pixels", "-1"], "--max-pixels=-1 is not a pixel count"),
        (["download", "set5", "--timeout", "0"], "--timeout 0"),
        (["download", "set5", "--max-unpacked-bytes", "-1"], "--max-unpacked-bytes -1"),
    ],
)
def test_every_numeric_option_of_sr_data_refuses_out_of_range_values(
    tmp_path, capsys, argv, option
):
    src = tmp_path / "S"
    src.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "a.png")
    argv = [a if a not in ("S", "O") else str(tmp_path / a) for a in argv]
    code = main(
        [*argv, "--quiet"] if argv[0] != "download" else [*argv, "--dest", str(tmp_path / "d")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    expected = option if "pixel count" in option else f"error: {option} is out of range"
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S"]  # nothing written
