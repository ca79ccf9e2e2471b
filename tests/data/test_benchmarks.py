"""Benchmark folders (EDSR and BasicSR layouts), open_eval_dataset, and per-set validation logs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from sr_cli.data.benchmarks import BenchmarkDataset, detect_layout
from sr_cli.data.datasets import ImageFolderEvalDataset, open_eval_dataset
from sr_cli.data.images import read_image
from sr_cli.data.prepare import bicubic_lr
from sr_cli.errors import DataError
from sr_cli.pixels import to_uint8


def make_benchmark(
    root: Path, layout: str = "edsr", scales=(2, 4), size=(52, 62), n: int = 2
) -> Path:
    """A small benchmark folder from the bundled images; LR by MATLAB bicubic + 8-bit rounding."""
    hr_name = "HR" if layout == "edsr" else "GTmod12"
    (root / hr_name).mkdir(parents=True)
    sources = sorted((SAMPLES_DIR / "val").glob("*.png"))[:n]
    for src in sources:
        hr = read_image(src)[: size[0], : size[1]]
        Image.fromarray(hr).save(root / hr_name / src.name)
        for s in scales:
            if layout == "edsr":
                path = root / "LR_bicubic" / f"X{s}" / f"{src.stem}x{s}.png"
            else:
                path = root / f"LRbicx{s}" / src.name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(bicubic_lr(hr, s)).save(path)
    return root


@pytest.mark.parametrize("layout", ["edsr", "basicsr"])
def test_layout_detection(tmp_path, layout):
    root = make_benchmark(tmp_path / "Set5", layout, scales=(2, 3))
    found = detect_layout(root)
    assert found is not None and found.style == layout
    assert sorted(found.lr_dirs) == [2, 3]
    assert detect_layout(root / found.hr_dir.name) is None  # a plain image folder
    assert detect_layout(tmp_path / "missing") is None


@pytest.mark.parametrize("layout", ["edsr", "basicsr"])
def test_open_eval_dataset_reads_published_lr(tmp_path, layout):
    root = make_benchmark(tmp_path / "Set5", layout, scales=(4,))
    ds = open_eval_dataset(root, 4)
    assert isinstance(ds, BenchmarkDataset) and ds.name == "Set5" and len(ds) == 2
    item = ds[0]
    assert item["gt"].shape == (3, 52, 60)  # mod-cropped to 4
    assert item["lq"].shape == (3, 13, 15)
    lr_file = ds.pairs[0][1]
    assert np.array_equal(to_uint8(item["lq"]), read_image(lr_file))
    assert item["name"] == ds.pairs[0][0].stem


def test_plain_folder_stays_hr_only(tmp_path):
    root = make_benchmark(tmp_path / "Set5", scales=(4,))
    ds = open_eval_dataset(root / "HR", 4)
    assert isinstance(ds, ImageFolderEvalDataset)
    assert "lq" not in ds[0]


def test_missing_scale_falls_back_to_hr_with_warning(tmp_path):
    root = make_benchmark(tmp_path / "Set14", scales=(2,))
    with pytest.warns(UserWarning, match=r"(?s)no LR images for scale 4.*X4.*MATLAB bicubic"):
        ds = open_eval_dataset(root, 4)
    assert isinstance(ds, ImageFolderEvalDataset)
    assert "lq" not in ds[0] and ds[0]["gt"].shape == (3, 52, 60)
    with pytest.raises(DataError, match="LR_bicubic/X4"):
        BenchmarkDataset(root, 4)


def test_bad_files_in_benchmark_are_named_or_skipped(tmp_path):
    root = make_benchmark(tmp_path / "B100", scales=(4,), n=3)
    lr_dir = root / "LR_bicubic" / "X4"
    victim = sorted(lr_dir.iterdir())[0]
    victim.write_bytes(b"garbage")
    with pytest.raises(DataError, match=victim.name):
        open_eval_dataset(root, 4)
    with pytest.warns(UserWarning, match=victim.name):
        ds = open_eval_dataset(root, 4, skip_bad=True)
    assert len(ds) == 2
    victim.unlink()
    (root / "HR" / victim.name.replace("x4", "")).unlink()
    # Too small at this scale: named.
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(root / "HR" / "zz_tiny.png")
    Image.fromarray(np.zeros((1, 2, 3), np.uint8)).save(lr_dir / "zz_tinyx4.png")
    with pytest.raises(DataError, match=r"zz_tiny\.png.*smaller"):
        open_eval_dataset(root, 4, skip_bad=False)


def test_benchmark_validates_under_its_own_name(tiny_cfg, val_subset, tmp_path):
    """A benchmark-layout folder in data.extra_val_dirs logs val/set5/<metric> during training."""
    from sr_cli.train.training import train

    set5 = make_benchmark(tmp_path / "Set5", scales=(4,), size=(48, 48), n=1)
    out = tmp_path / "run"
    cfg = tiny_cfg(
        "model=edsr_baseline",
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        f"+data.extra_val_dirs.set5={set5}",
        "val.save_images=0",
        out=out,
    )
    metrics, objects = train(cfg)
    assert objects["datamodule"].val_names == ["val", "val/set5"]
    assert isinstance(objects["datamodule"].val_sets["val/set5"], BenchmarkDataset)
    for key in ("val/set5/psnr_y", "val/set5/ssim_y", "val/psnr_y"):
        assert key in metrics, key
    assert 0 < metrics["val/set5/psnr_y"] < 60
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert "val/set5/psnr_y" in rows[0]
    assert any(row["val/set5/psnr_y"] for row in rows)
