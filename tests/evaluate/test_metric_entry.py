"""One registry entry is all a new metric needs; validation and sr-eval draw the same LQ."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.evaluate.evaluation import evaluate
from sr_cli.metrics.registry import MetricSpec, registered
from tests.conftest import TINY, compose_train
from tests.evaluate.test_eval import compose_eval


def mae_255(x) -> torch.Tensor:
    """Mean absolute 8-bit error of SR vs GT, border cropped by the scale."""
    s = x.scale
    diff = (x.sr8 - x.gt)[..., s:-s, s:-s] * 255.0
    return diff.abs().flatten(1).mean(1)


def test_a_metric_added_in_the_test_folder_reaches_sr_eval(
    trained_run, eval_images, tmp_path, no_hub_cache
):
    out = tmp_path / "eval"
    spec = MetricSpec("mae_255", "MAE(8-bit)", 3, higher_is_better=False, fn=mae_255)
    with registered(spec):
        cfg = compose_eval(
            [
                f"checkpoints=[{trained_run}]",
                f"datasets={{val3:{eval_images}}}",
                "metrics=[psnr_y]",
                "extra_metrics=[mae_255]",
            ],
            out,
        )
        results, _ = evaluate(cfg)
    assert results.metrics == ["psnr_y", "mae_255"]
    # The bicubic row, recomputed independently with numpy from the same LQ (the checkpoint's
    # degradation is deterministic bicubic).
    from hydra.utils import instantiate

    from sr_cli.degradations.resize import imresize
    from sr_cli.evaluate.inference import load_generator

    loaded = load_generator(trained_run / "checkpoints" / "best.ckpt")
    s = loaded.scale
    degradation = instantiate(loaded.degradation_config)
    maes = []
    for path in sorted(eval_images.glob("*.png")):
        img = np.asarray(Image.open(path).convert("RGB"))
        img = img[: img.shape[0] - img.shape[0] % s, : img.shape[1] - img.shape[1] % s]
        gt = torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
        sr = imresize(degradation(gt), size=tuple(gt.shape[-2:])).clamp(0, 1)
        sr8 = np.round(sr[0].numpy().transpose(1, 2, 0) * 255.0)
        maes.append(np.abs(sr8 - img)[s:-s, s:-s].mean())
    assert results.row("val3", "bicubic")["mae_255"] == pytest.approx(np.mean(maes), abs=1e-4)
    # ... and in every output: the table, the CSVs and the markdown.
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["mae_255"]) == pytest.approx(np.mean(maes), abs=1e-5)
    with open(out / "results_per_image.csv") as f:
        assert len([r for r in csv.DictReader(f) if r["mae_255"]]) == 2 * 3
    assert "MAE(8-bit) ↓" in (out / "results.md").read_text()


def test_stochastic_validation_equals_sr_eval(eval_images, tmp_path, no_hub_cache):
    """With a random blur, training validation and sr-eval draw the same LQ per image (the
    val_degradation stream), so the logged figures equal sr-eval's on the same checkpoint."""
    from sr_cli.train.training import train

    run = tmp_path / "blur_run"
    cfg = compose_train(
        [
            *TINY,
            "model=esrgan",
            "loss=[l1]",
            "degradation=blur",
            "seed=3",
            f"data.val_dir={eval_images}",
            "val.save_images=0",
        ],
        output_dir=run,
    )
    train(cfg)
    with open(run / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/psnr_y")][-1]
    metrics = ["psnr_y", "ssim_y", "psnr_rgb", "lr_consistency_psnr"]
    ckpt = run / "checkpoints" / "last.ckpt"
    figures = {}
    for seed in (3, 4):
        eval_cfg = compose_eval(
            [
                f"checkpoints=[{ckpt}]",
                f"datasets={{val3:{eval_images}}}",
                f"metrics=[{','.join(metrics)}]",
                f"seed={seed}",
            ],
            tmp_path / f"eval{seed}",
        )
        results, _ = evaluate(eval_cfg)
        figures[seed] = results.row("val3", f"{run.name}/last")
        figures[f"bicubic{seed}"] = results.row("val3", "bicubic")
    for m in metrics:
        # Logged as float32 by Lightning; sr-eval keeps float64.
        assert float(logged[f"val/{m}"]) == pytest.approx(figures[3][m], rel=1e-6, abs=1e-6), m
    # The degradation is random: another seed gives another LQ (seen best on the bicubic row).
    assert abs(figures["bicubic4"]["psnr_y"] - figures["bicubic3"]["psnr_y"]) > 0.05
