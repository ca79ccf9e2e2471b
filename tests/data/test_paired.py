"""Paired LR/HR folders: matching, alignment, conversions, bad files, datamodule wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.data.images import ImageConversionWarning
from sr_cli.data.paired import PairedFolderDataset
from sr_cli.errors import DataError
from sr_cli.pixels import to_uint8
from sr_cli.train.lit.datamodule import SRDataModule

S = 4


def _lr_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _nearest_up(lr: np.ndarray, s: int = S) -> np.ndarray:
    """Block-constant HR: each LR pixel becomes an s x s block, so alignment is checkable."""
    return np.repeat(np.repeat(lr, s, axis=0), s, axis=1)


def make_pairs(root: Path, specs, suffix: bool = True) -> tuple[Path, Path]:
    """``specs``: ``[(stem, lr_h, lr_w), ...]``; HR = nearest-upsampled LR (plus a ragged border)."""
    hr_dir, lr_dir = root / "hr", root / "lr"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    for i, (stem, h, w) in enumerate(specs):
        lr = _lr_image(h, w, i)
        hr = _nearest_up(lr)
        # Ragged border (not a multiple of the scale): mod-crop must remove it.
        hr = np.pad(hr, ((0, 3), (0, 1), (0, 0)), mode="edge")
        Image.fromarray(hr).save(hr_dir / f"{stem}.png")
        Image.fromarray(lr).save(lr_dir / (f"{stem}x{S}.png" if suffix else f"{stem}.png"))
    return hr_dir, lr_dir


def _check_aligned(item: dict) -> None:
    gt, lq = to_uint8(item["gt"]), to_uint8(item["lq"])
    assert gt.shape[0] == lq.shape[0] * S and gt.shape[1] == lq.shape[1] * S
    assert np.array_equal(gt, _nearest_up(lq))


def test_matching_by_stem_with_and_without_scale_suffix(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("0001", 10, 12), ("0002", 9, 11)])
    # One LR partner without the x4 suffix.
    (lr_dir / "0002x4.png").rename(lr_dir / "0002.png")
    ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16)
    assert [(h.name, lr.name) for h, lr in ds.pairs] == [
        ("0001.png", "0001x4.png"),
        ("0002.png", "0002.png"),
    ]


def test_training_crops_are_aligned_and_reproducible(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("a", 14, 17), ("b", 12, 12)])
    ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=24)
    seen = set()
    for seed in range(40):
        item = ds[(seed % 2, seed)]
        assert item["gt"].shape == (3, 24, 24) and item["lq"].shape == (3, 6, 6)
        _check_aligned(item)  # also under every flip / transposition drawn
        seen.add(to_uint8(item["lq"]).tobytes())
    assert len(seen) > 20  # crops and flips vary with the seed
    a, b = ds[(0, 123)], ds[(0, 123)]
    assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["lq"], b["lq"])
    assert not torch.equal(ds[(0, 124)]["lq"], a["lq"])


def test_eval_mode_gives_full_mod_cropped_images(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("img", 10, 7)])
    ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=None, cache_images=False)
    item = ds[0]
    assert item["name"] == "img" and item["index"] == 0
    assert item["gt"].shape == (3, 40, 28) and item["lq"].shape == (3, 10, 7)
    _check_aligned(item)


def test_patch_size_must_be_multiple_of_scale(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("a", 10, 10)])
    with pytest.raises(DataError, match="multiple of scale"):
        PairedFolderDataset(hr_dir, lr_dir, S, patch_size=30)


def test_missing_partner_names_file_and_folder(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("0001", 10, 10), ("0002", 10, 10)])
    (lr_dir / "0002x4.png").unlink()
    with pytest.raises(DataError) as err:
        PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16)
    msg = str(err.value)
    assert "0002.png" in msg and str(lr_dir) in msg and "0002x4" in msg
    with pytest.warns(UserWarning, match="0002"):
        ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16, skip_bad=True)
    assert len(ds) == 1


def test_wrong_lr_size_names_both_files_and_sizes(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("0001", 10, 12)])
    Image.fromarray(_lr_image(20, 24, 0)).save(lr_dir / "0001x4.png")  # an x2 image
    with pytest.raises(DataError) as err:
        PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16)
    msg = str(err.value)
    assert "0001x4.png" in msg and "0001.png" in msg
    assert "20x24" in msg and "43x49" in msg and "10x12" in msg


def test_corrupt_and_too_small_files_are_named_or_skipped(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("good", 10, 10), ("bad", 10, 10), ("tiny", 3, 3)])
    (lr_dir / "badx4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="badx4.png"):
        PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16)
    Image.fromarray(_lr_image(10, 10, 1)).save(lr_dir / "badx4.png")
    with pytest.raises(DataError, match=r"tiny\.png.*smaller"):
        PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16, skip_bad=False)
    # Header fine, pixel data truncated: caught when decoding (here: when caching).
    data = (lr_dir / "badx4.png").read_bytes()
    (lr_dir / "badx4.png").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning) as record:
        ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=16, skip_bad=True, cache_images=True)
    assert [h.name for h in ds.files] == ["good.png"]
    text = " ".join(str(w.message) for w in record)
    assert "tiny.png" in text and "badx4.png" in text


@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA", "P"])
def test_conversions_are_consistent_between_hr_and_lr(tmp_path, mode):
    """Odd-mode HR and LR files convert the same way, so the pair stays aligned in value."""
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    idx = np.random.default_rng(0).integers(0, 256, (8, 9), dtype=np.uint8)
    palette = np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8)

    def encode(a: np.ndarray) -> Image.Image:
        if mode == "L":
            return Image.fromarray(a, "L")
        if mode == "I;16":
            return Image.fromarray(a.astype(np.uint16) * 257)
        if mode == "RGBA":
            return Image.fromarray(np.dstack([a, a[::-1], a[:, ::-1], 255 - a]), "RGBA")
        im = Image.fromarray(a, "P")
        im.putpalette(palette.tolist())
        return im

    hr_idx = np.repeat(np.repeat(idx, S, 0), S, 1)
    encode(hr_idx).save(hr_dir / "x.png")
    # LR stored in plain 8-bit RGB for the 16-bit case: values must still agree.
    if mode == "I;16":
        Image.fromarray(np.dstack([idx] * 3)).save(lr_dir / "xx4.png")
    else:
        encode(idx).save(lr_dir / "xx4.png")
    with pytest.warns(ImageConversionWarning):
        ds = PairedFolderDataset(hr_dir, lr_dir, S, patch_size=None, cache_images=True)
    item = ds[0]
    assert item["gt"].shape == (3, 32, 36) and item["lq"].shape == (3, 8, 9)
    _check_aligned(item)


def _dm(train_dir, val_dir, **kw) -> SRDataModule:
    return SRDataModule(
        train_dir=str(train_dir),
        val_dir=str(val_dir) if val_dir else None,
        scale=S,
        patch_size=16,
        batch_size=2,
        iters_per_epoch=2,
        num_workers=0,
        **kw,
    )


def test_datamodule_trains_on_paired_folders(tmp_path):
    hr_dir, lr_dir = make_pairs(tmp_path, [("a", 10, 10), ("b", 12, 9)])
    dm = _dm(hr_dir, None, train_lr_dir=str(lr_dir))
    dm.setup("fit")
    assert isinstance(dm.train_set, PairedFolderDataset)
    batch = next(iter(dm.train_dataloader()))
    assert batch["gt"].shape == (2, 3, 16, 16) and batch["lq"].shape == (2, 3, 4, 4)
    for i in range(2):
        _check_aligned({"gt": batch["gt"][i], "lq": batch["lq"][i]})


def test_datamodule_without_lr_dir_keeps_hr_only_training(tmp_path):
    hr_dir, _ = make_pairs(tmp_path, [("a", 10, 10)])
    dm = _dm(hr_dir, None)
    dm.setup("fit")
    assert "lq" not in dm.train_set[(0, 1)]


@pytest.mark.parametrize("which", ["train", "train_lr", "val", "extra"])
def test_empty_or_missing_folders_fail_in_setup(tmp_path, which):
    hr_dir, lr_dir = make_pairs(tmp_path, [("a", 10, 10)])
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "does-not-exist"
    kw: dict = {}
    train, val = hr_dir, None
    if which == "train":
        train = empty
    elif which == "train_lr":
        kw["train_lr_dir"] = str(missing)
    elif which == "val":
        val = empty
    else:
        kw["extra_val_dirs"] = {"set5": str(missing)}
    dm = _dm(train, val, **kw)
    bad = missing if which in ("train_lr", "extra") else empty
    with pytest.raises(DataError, match=str(bad.name)):
        dm.setup("fit")


def test_bad_validation_folder_fails_before_training(tiny_cfg, tmp_path):
    from sr_cli.train.training import train

    out = tmp_path / "run"
    cfg = tiny_cfg("loss=[l1]", f"+data.extra_val_dirs.set5={tmp_path / 'nope'}", out=out)
    with pytest.raises(DataError, match="nope"):
        train(cfg)
    assert not (out / "checkpoints").exists()
    assert not (out / "metrics.csv").exists()


def test_paired_config_trains_end_to_end(tiny_cfg, val_subset, tmp_path, monkeypatch):
    """``data=paired``: training batches carry their own LQ, which the module uses as is."""
    from sr_cli.train.lit.module import SRModule
    from sr_cli.train.training import train

    hr_dir, lr_dir = make_pairs(tmp_path, [("a", 12, 12), ("b", 10, 11)])
    cfg = tiny_cfg(
        "data=paired",
        "model=edsr_baseline",
        "loss=[l1]",
        f"data.train_dir={hr_dir}",
        f"data.train_lr_dir={lr_dir}",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
    )
    seen = []
    original = SRModule.on_after_batch_transfer

    def spy(self, batch, dataloader_idx):
        if self.trainer.training:
            seen.append("lq" in batch)
        return original(self, batch, dataloader_idx)

    monkeypatch.setattr(SRModule, "on_after_batch_transfer", spy)
    metrics, objects = train(cfg)
    assert isinstance(objects["datamodule"].train_set, PairedFolderDataset)
    assert seen and all(seen)  # LQ came from the LR folder, not from the degradation
    assert objects["module"].iteration == 2
    assert "val/psnr_y" in metrics
