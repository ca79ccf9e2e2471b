"""16-bit images stay at full depth through training, validation and evaluation: a generated
16-bit set whose values 8 bits cannot hold reaches the batches as such, the LQ is rounded to 16
bits, and sr-eval's PSNR on a 16-bit GT/SR pair equals the formula at 16-bit precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.evaluate.picture_io import write_png16

H, W = 96, 120


def sixteen_bit_image(seed: int) -> np.ndarray:
    """A smooth colour image with 16-bit values, almost none of them a multiple of 257 (the
    16-bit codes of the 8-bit levels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W] / np.array([H, W]).reshape(2, 1, 1)
    chans = [0.5 + 0.4 * np.sin(2 * np.pi * (f * x + g * y) + p)
             for f, g, p in rng.uniform(0.5, 3.0, size=(3, 3))]  # fmt: skip
    img = np.stack(chans, axis=-1) + rng.normal(0, 0.01, size=(H, W, 3))
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def folder16(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    from torchvision.io import ImageReadMode, decode_png, read_file

    root = tmp_path_factory.mktemp("png16")
    images = [sixteen_bit_image(i) for i in range(3)]
    for i, img in enumerate(images):
        write_png16(img, root / f"img{i}.png")
        back = decode_png(read_file(str(root / f"img{i}.png")), ImageReadMode.UNCHANGED)
        assert np.array_equal(back.permute(1, 2, 0).numpy(), img)  # a true 16-bit file
    return root, images


def not_8bit(values: torch.Tensor) -> float:
    """Share of values (in [0, 1]) that no 8-bit level gives."""
    codes = torch.round(values.double() * 65535)
    return float((codes % 257 != 0).double().mean())


def test_reading_keeps_16_bits_for_the_datasets_only(folder16):
    from sr_cli.data.images import read_image

    root, images = folder16
    full = read_image(root / "img0.png", full_depth=True)
    assert full.dtype == np.uint16 and np.array_equal(full, images[0])
    with pytest.warns(UserWarning, match="16-bit RGB converted to 8-bit"):
        assert read_image(root / "img0.png").dtype == np.uint8  # other callers: unchanged


def test_training_and_validation_see_16_bits(folder16, tiny_cfg):
    from sr_cli.train.build import build_datamodule, build_module

    root, images = folder16
    cfg = tiny_cfg(f"data.train_dir={root}", f"data.val_dir={root}", "data.patch_size=32",
                   "data.num_workers=0")  # fmt: skip
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    gt = batch["gt"]
    assert batch["bits"].tolist() == [16, 16]
    assert torch.allclose(gt * 65535, torch.round(gt * 65535), atol=2e-3)  # exact 16-bit codes
    assert not_8bit(gt) > 0.9
    # The LQ made on the device is rounded to 16 bits, not 8.
    module = build_module(cfg, dm.val_names, Path(cfg.paths.output_dir))
    out = module.on_after_batch_transfer(dict(batch), 0)
    lq = out["lq"]
    assert torch.allclose(lq * 65535, torch.round(lq * 65535), atol=2e-3)
    assert not_8bit(lq) > 0.9
    # Validation images too.
    val = dm.val_sets["val"][0]
    assert val["bits"] == 16 and not_8bit(val["gt"]) > 0.9
    assert np.array_equal(np.round(val["gt"].permute(1, 2, 0).numpy() * 65535), images[0])


def test_sr_eval_psnr_of_a_16bit_pair_is_the_16bit_formula(folder16, trained_run, tmp_path):
    """A benchmark folder of 16-bit HR and 16-bit LR images: the model row's PSNR_Y and
    PSNR_RGB are those of SR rounded to 16 bits against the 16-bit GT (peak 1 on [0, 1] data:
    255 on the 8-bit scale of Y), computed here with numpy."""
    from sr_cli.evaluate.evaluation import evaluate
    from sr_cli.evaluate.inference import load_generator, super_resolve
    from tests.evaluate.test_eval import compose_eval

    root, images = folder16
    bench = tmp_path / "b16"
    (bench / "HR").mkdir(parents=True)
    (bench / "LR_bicubic" / "X4").mkdir(parents=True)
    lrs = []
    for i, img in enumerate(images):
        write_png16(img, bench / "HR" / f"img{i}.png")
        lr = img.reshape(H // 4, 4, W // 4, 4, 3).astype(np.float64).mean(axis=(1, 3))
        lr = np.round(lr).astype(np.uint16)  # a 16-bit LR (box downsampling)
        write_png16(lr, bench / "LR_bicubic" / "X4" / f"img{i}x4.png")
        lrs.append(lr)
    results, _ = evaluate(compose_eval(
        [f"checkpoints=[{trained_run}]", f"datasets={{b16:{bench}}}",
         "metrics=[psnr_y,psnr_rgb]"], tmp_path / "eval",
    ))  # fmt: skip
    from sr_cli.degradations.resize import imresize

    generator = load_generator(trained_run / "checkpoints" / "last.ckpt").generator
    weights = np.array([65.481, 128.553, 24.966])
    c = slice(4, -4)

    def y_psnr(sr16: np.ndarray, gt16: np.ndarray, peak: float) -> float:
        y = (sr16 - gt16) @ weights / peak  # the difference of BT.601 Y on the 8-bit scale
        return 10 * np.log10(255**2 / np.mean(y[c, c] ** 2))

    ref = {"model": ([], []), "bicubic": ([], [])}
    bicubic_8bit = []
    for img, lr in zip(images, lrs):
        lq = torch.from_numpy(lr.astype(np.float64) / 65535).permute(2, 0, 1)[None].float()
        outs = {
            "model": super_resolve(generator, lq),
            "bicubic": imresize(lq, size=(H, W)).clamp(0, 1),  # MATLAB bicubic (tested elsewhere)
        }
        gt = img.astype(np.float64)
        for key, sr in outs.items():
            sr = sr[0].permute(1, 2, 0).double().numpy()
            sr16 = np.round(np.clip(sr, 0, 1) * 65535)  # SR rounded to the source's 16 bits
            ref[key][0].append(y_psnr(sr16, gt, 65535))
            ref[key][1].append(10 * np.log10(65535**2 / np.mean((sr16 - gt)[c, c] ** 2)))
            if key == "bicubic":  # what rounding both to 8 bits would give (the old behaviour)
                sr8, gt8 = np.round(np.clip(sr, 0, 1) * 255), np.round(gt / 257)
                bicubic_8bit.append(y_psnr(sr8, gt8, 255))
    for key, row in (("model", results.rows[1]), ("bicubic", results.rows[0])):
        assert row["psnr_y"] == pytest.approx(np.mean(ref[key][0]), abs=1e-6), key
        assert row["psnr_rgb"] == pytest.approx(np.mean(ref[key][1]), abs=1e-6), key
    assert results.rows[0]["psnr_y"] > 30
    assert abs(np.mean(bicubic_8bit) - results.rows[0]["psnr_y"]) > 0.01
