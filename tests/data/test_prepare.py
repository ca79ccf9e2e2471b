"""``sr-data prepare``: sub-image grid, LR sets, resumability, no half-written files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_cli.commands.data import main
from sr_cli.data.images import read_image
from sr_cli.data.prepare import MANIFEST, bicubic_lr, crop_positions, expected_count
from sr_cli.errors import DataError

SIZES = {"img_a": (500, 600), "img_b": (510, 590)}  # (h, w)


@pytest.mark.parametrize(
    "length,crop,step,thresh,expected",
    [
        (600, 480, 240, 0, [0, 120]),
        (500, 480, 240, 0, [0, 20]),
        (500, 480, 240, 20, [0]),  # remainder 20 is not > thresh 20
        (1000, 480, 240, 0, [0, 240, 480, 520]),
        (960, 480, 240, 0, [0, 240, 480]),  # exact fit: no extra crop
        (300, 480, 240, 0, [0]),  # shorter than the crop: kept whole
    ],
)
def test_crop_positions_follow_div2k_convention(length, crop, step, thresh, expected):
    assert crop_positions(length, crop, step, thresh) == expected


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour image (compresses well, so writing PNGs stays fast)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 37.0
    chans = [np.sin(x * rng.uniform(0.5, 2) + y * rng.uniform(0.5, 2) + k) for k in range(3)]
    return ((np.dstack(chans) + 1) * 127.5).round().astype(np.uint8)


@pytest.fixture
def src_dir(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        Image.fromarray(_smooth(h, w, i)).save(src / f"{name}.png")
    return src


def _snapshot(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.png")}


def test_prepare_cli_counts_sizes_lr_and_resume(src_dir, tmp_path, capsys):
    out = tmp_path / "out"
    exe = shutil.which("sr-data") or str(Path(sys.executable).parent / "sr-data")
    proc = subprocess.run(
        [exe, "prepare", str(src_dir), str(out), "--lr-scales", "2", "4"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 processed" in proc.stdout
    hr = sorted(out.glob("*.png"))
    # 500 x 600 -> rows [0, 20] x cols [0, 120]; 510 x 590 -> [0, 30] x [0, 110]: 4 each.
    assert len(hr) == sum(expected_count(h, w) for h, w in SIZES.values()) == 8
    assert [p.name for p in hr[:4]] == [f"img_a_s00{k}.png" for k in range(1, 5)]
    src_a = read_image(src_dir / "img_a.png")
    for p in hr:
        assert Image.open(p).size == (480, 480)
    # Last sub-image of img_a sits at (20, 120), flush with the bottom-right corner.
    assert np.array_equal(read_image(out / "img_a_s004.png"), src_a[20:500, 120:600])
    for s in (2, 4):
        lr = sorted((out / "LR_bicubic" / f"X{s}").glob("*.png"))
        assert [p.name for p in lr] == [p.stem + f"x{s}.png" for p in hr]
        assert all(Image.open(p).size == (480 // s, 480 // s) for p in lr)
    sub = read_image(out / "img_a_s002.png")
    assert np.array_equal(read_image(out / "LR_bicubic/X4/img_a_s002x4.png"), bicubic_lr(sub, 4))
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["done"]) == ["img_a.png", "img_b.png"]
    assert not list(out.rglob("*.tmp"))

    # Second run: nothing to do, nothing rewritten.
    before = _snapshot(out)
    assert main(["prepare", str(src_dir), str(out), "--lr-scales", "2", "4", "--quiet"]) == 0
    assert "0 processed, 2 already done" in capsys.readouterr().out
    assert _snapshot(out) == before

    # Simulate a run killed inside img_b: temp files left, one output missing, one truncated
    # (written by something else than the atomic writer), img_b not in the manifest.
    (out / ".img_b_s003.png.tmp").write_bytes(b"half a png")
    (out / "LR_bicubic" / "X2" / ".img_b_s003x2.png.tmp").write_bytes(b"half")
    (out / "img_b_s003.png").unlink()
    data = (out / "img_b_s004.png").read_bytes()
    (out / "img_b_s004.png").write_bytes(data[: len(data) // 3])
    manifest["done"].pop("img_b.png")
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = _snapshot(out)
    assert main(["prepare", str(src_dir), str(out), "--lr-scales", "2", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 processed, 1 already done" in text and "2 files written" in text
    assert "2 stale temporary files removed" in text
    assert not list(out.rglob("*.tmp"))
    after = _snapshot(out)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"img_b_s003.png", "img_b_s004.png"}
    src_b = read_image(src_dir / "img_b.png")
    assert np.array_equal(read_image(out / "img_b_s004.png"), src_b[30:510, 110:590])


def test_prepare_refuses_other_settings_and_bad_sources(src_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prepare", str(src_dir), str(out), "--crop-size", "240", "--step", "240", "--quiet"]
    assert main(args) == 0
    assert len(list(out.glob("*.png"))) == 3 * 3 + 3 * 3  # 500/510 -> 0,240,(260/270); 600/590
    assert main([*args[:-1], "--step", "200", "--quiet"]) == 2
    assert "different settings" in capsys.readouterr().err
    (src_dir / "broken.png").write_bytes(b"not a png")
    out2 = tmp_path / "out2"
    assert main(["prepare", str(src_dir), str(out2), "--crop-size", "240", "--quiet"]) == 2
    assert "broken.png" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="broken.png"):
        code = main(
            ["prepare", str(src_dir), str(out2), "--crop-size", "240", "--skip-bad", "--quiet"]
        )
    assert code == 0
    assert "1 skipped as bad" in capsys.readouterr().out


def test_prepare_with_workers_matches_single_process(tmp_path):
    from sr_cli.data.prepare import prepare

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_smooth(70, 90, i)).save(src / f"w{i}.png")
    one = prepare(src, tmp_path / "one", 48, 24, lr_scales=[2], progress=False)
    two = prepare(src, tmp_path / "two", 48, 24, lr_scales=[2], workers=2, progress=False)
    assert one.written == two.written == 3 * 2 * 3 * 2
    for p in sorted((tmp_path / "one").rglob("*.png")):
        q = tmp_path / "two" / p.relative_to(tmp_path / "one")
        assert np.array_equal(read_image(p), read_image(q))


def test_prepare_checks_its_options(src_dir, tmp_path):
    from sr_cli.data.prepare import prepare

    with pytest.raises(DataError, match="multiple of LR scale 3"):
        prepare(src_dir, tmp_path / "o", crop_size=100, lr_scales=[3], progress=False)
    with pytest.raises(DataError, match="must differ"):
        prepare(src_dir, src_dir, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "o", progress=False)
    Image.fromarray(_smooth(40, 40, 9)).save(src_dir / "img_a.jpg")
    with pytest.raises(DataError, match="same name stem"):
        prepare(src_dir, tmp_path / "o", progress=False)


def test_rerun_restores_truncated_and_altered_outputs_byte_identical(src_dir, tmp_path, capsys):
    """Outputs are verified against the size and SHA-256 recorded in the manifest."""
    out = tmp_path / "out"
    args = ["prepare", str(src_dir), str(out), "--lr-scales", "2", "--quiet"]
    assert main(args) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    outputs = manifest["done"]["img_a.png"]["outputs"]
    assert outputs["img_a_s002.png"][0] == (out / "img_a_s002.png").stat().st_size
    assert len(outputs) == 4 * 2 and all(len(r[1]) == 64 for r in outputs.values())
    originals = {p: p.read_bytes() for p in out.rglob("*.png")}

    truncated = out / "img_a_s002.png"
    truncated.write_bytes(originals[truncated][:-100])  # still "there", just shorter
    altered = out / "LR_bicubic" / "X2" / "img_b_s001x2.png"  # a valid PNG, other pixels
    lr = read_image(altered).copy()
    lr[0, 0] ^= 1
    Image.fromarray(lr).save(altered)
    assert altered.read_bytes() != originals[altered]
    before = _snapshot(out)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 processed, 0 already done" in text and "2 files written" in text
    for p, data in originals.items():
        assert p.read_bytes() == data, p
    after = _snapshot(out)
    assert {k for k in after if before[k] != after[k]} == {
        "img_a_s002.png",
        "LR_bicubic/X2/img_b_s001x2.png",
    }
    assert main(args) == 0  # and now all is verified done
    assert "0 processed, 2 already done" in capsys.readouterr().out


def test_prepare_refuses_or_skips_decompression_bombs(src_dir, tmp_path, capsys):
    from tests.data.bombs import header_bomb

    header_bomb(src_dir / "bomb.png")
    out = tmp_path / "out"
    assert main(["prepare", str(src_dir), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bomb.png" in err and "--max-pixels" in err and err.count("\n") == 1
    with pytest.warns(UserWarning, match="bomb.png"):
        assert main(["prepare", str(src_dir), str(out), "--skip-bad", "--quiet"]) == 0
    assert "1 skipped as bad" in capsys.readouterr().out
    assert main(["prepare", str(src_dir), str(out), "--max-pixels", "-3", "--quiet"]) == 2
    assert "--max-pixels=-3" in capsys.readouterr().err


def test_prepare_and_shard_refuse_bad_destinations_in_one_line(tmp_path, read_only_dir, capsys):
    """Issue #26: an output that is a folder (or FIFO, device) is refused, never replaced, and a
    read-only OUT is named before any image is read."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_smooth(64, 64, 0)).save(src / "img.png")
    out = tmp_path / "out"
    (out / "img_s001.png").mkdir(parents=True)  # where the first sub-image would go
    args = ["--crop-size", "32", "--step", "32", "--quiet"]
    assert main(["prepare", str(src), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "img_s001.png' is a folder, not a regular file" in err
    assert (out / "img_s001.png").is_dir()
    for command in (["prepare", *args], ["shard", "--quiet"]):
        target = read_only_dir / "sub"
        assert main([command[0], str(src), str(target), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot create output folder {str(target)!r}" in err
        assert "read-only" in err
