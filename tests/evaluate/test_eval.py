"""sr-eval: figures equal an independent implementation of the published protocol."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.signal import convolve2d

from sr_cli.commands.eval import _run
from sr_cli.config import config_dir
from sr_cli.evaluate.evaluation import (
    EXTRA_METRICS,
    evaluate,
    required_weight_files,
    weights_unavailable,
)
from sr_cli.metrics.protocol import PROTOCOL_DESCRIPTIONS
from tests.evaluate.conftest import run_script


def compose_eval(overrides: list[str], out: Path):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="eval",
            overrides=[
                "logger=none",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                f"output_dir={out}",
                *overrides,
            ],
        )


# ---------------------------------------------------------------- reference implementation
def ref_y(rgb8: np.ndarray, round_y: bool = False) -> np.ndarray:
    """BT.601 luma of 8-bit RGB ``(H, W, 3)``: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    r, g, b = (rgb8[..., i].astype(np.float64) for i in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return np.round(y) if round_y else y


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, L=255, valid region."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(img):
        return convolve2d(img, win, mode="valid")

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


def reference_metrics(checkpoint: Path, folder: Path, round_y: bool = False) -> dict:
    """Mean PSNR_Y / SSIM_Y of the checkpoint and of bicubic, from the published formulas."""
    from hydra.utils import instantiate

    from sr_cli.degradations.resize import imresize
    from sr_cli.evaluate.inference import load_generator, super_resolve

    loaded = load_generator(checkpoint)
    s = loaded.scale
    degradation = instantiate(loaded.degradation_config)
    per: dict[str, list[tuple[float, float]]] = {"model": [], "bicubic": []}
    for path in sorted(folder.glob("*.png")):
        img = np.asarray(Image.open(path).convert("RGB"))
        img = img[: img.shape[0] - img.shape[0] % s, : img.shape[1] - img.shape[1] % s]
        gt = torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
        lq = degradation(gt)
        outs = {
            "model": super_resolve(loaded.generator, lq),
            "bicubic": imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1),
        }
        y_gt = ref_y(img, round_y)[s:-s, s:-s]
        for key, sr in outs.items():
            sr8 = np.round(sr[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0)
            y_sr = ref_y(sr8, round_y)[s:-s, s:-s]
            per[key].append((ref_psnr(y_sr, y_gt), ref_ssim(y_sr, y_gt)))
    return {k: np.mean(np.array(v), axis=0) for k, v in per.items()}


# ---------------------------------------------------------------- tests
def test_eval_equals_reference_and_writes_outputs(trained_run, eval_images, tmp_path, no_hub_cache):
    out = tmp_path / "eval"
    cfg = compose_eval([f"checkpoints=[{trained_run}]", f"datasets={{val3:{eval_images}}}"], out)
    results, objects = evaluate(cfg)
    ref = reference_metrics(trained_run / "checkpoints" / "last.ckpt", eval_images)
    model_label = f"{trained_run.name}/last"  # a run folder is scored through last.ckpt
    model, bicubic = results.row("val3", model_label), results.row("val3", "bicubic")
    assert model["images"] == bicubic["images"] == 3
    assert model["psnr_y"] == pytest.approx(ref["model"][0], abs=1e-4)
    assert model["ssim_y"] == pytest.approx(ref["model"][1], abs=1e-4)
    # The bicubic baseline row is always there, and also equals the reference.
    assert bicubic["psnr_y"] == pytest.approx(ref["bicubic"][0], abs=1e-4)
    assert bicubic["ssim_y"] == pytest.approx(ref["bicubic"][1], abs=1e-4)
    assert bicubic["psnr_y"] > model["psnr_y"]  # 2 iterations of training: bicubic wins
    # The LR-consistency PSNR of bicubic upsampling followed by bicubic downsampling is high.
    assert bicubic["lr_consistency_psnr"] > 30
    assert model["lr_consistency_psnr"] is not None
    # LPIPS / DISTS: no weights in the (empty) hub cache -> unavailable, with the reason.
    for metric in ("lpips", "dists"):
        assert metric in results.unavailable
        assert "vgg16-397923af.pth" in results.unavailable[metric]
        assert model[metric] is None
    # Files.
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["model"] for r in rows] == ["bicubic", model_label]
    assert float(rows[1]["psnr_y"]) == pytest.approx(ref["model"][0], abs=1e-4)
    assert rows[1]["lpips"] == "unavailable"
    md = (out / "results.md").read_text()
    assert PROTOCOL_DESCRIPTIONS["paper"] in md and "unavailable" in md and "bicubic" in md
    per_image = list(csv.DictReader(open(out / "results_per_image.csv")))
    assert len(per_image) == 3 * 2
    assert {r["image"] for r in per_image} == {"camera", "chelsea", "grace_hopper"}


def test_matlab_protocol_rounds_y_and_says_so(trained_run, eval_images, tmp_path, no_hub_cache):
    out = tmp_path / "eval"
    cfg = compose_eval(
        [
            f"checkpoints=[{trained_run / 'checkpoints' / 'last.ckpt'}]",
            f"datasets={{val3:{eval_images}}}",
            "protocol=matlab",
            "metrics=[psnr_y,ssim_y]",
            "extra_metrics=[gmsd,brisque]",
        ],
        out,
    )
    results, _ = evaluate(cfg)
    ref = reference_metrics(trained_run / "checkpoints" / "last.ckpt", eval_images, round_y=True)
    row = results.row("val3", f"{trained_run.name}/last")
    assert row["psnr_y"] == pytest.approx(ref["model"][0], abs=1e-4)
    assert row["ssim_y"] == pytest.approx(ref["model"][1], abs=1e-4)
    assert row["gmsd"] is not None and 0 <= row["gmsd"] <= 1
    assert "brisque" in results.unavailable  # its SVM weights are not cached either
    assert PROTOCOL_DESCRIPTIONS["matlab"] in (out / "results.md").read_text()
    assert results.metrics == ["psnr_y", "ssim_y", "gmsd", "brisque"]


def test_weight_check_looks_only_at_the_hub_cache(no_hub_cache):
    assert weights_unavailable("lpips")
    folder = no_hub_cache / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name in required_weight_files("lpips"):
        (folder / name).write_bytes(b"")
    assert weights_unavailable("lpips") is None
    assert weights_unavailable("dists")  # needs its own file as well
    assert set(EXTRA_METRICS) == {"vif", "fsim", "gmsd", "ms_ssim", "brisque", "haarpsi"} | {
        "hf_ratio",
        "checkerboard",
        "hf_db",
        "lattice_db",
        "l1_rgb",
        "translation_inconsistency",  # the studies' columns
        "ifc",
        "niqe",  # the perception-distortion plane's axes (PI is registered only with Ma's model)
        "rmse_y",
    }


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    cfg = compose_eval([f"checkpoints=[{tmp_path}/missing.ckpt]"], tmp_path / "e")
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-eval: error:") and "missing.ckpt" in err
    assert "Traceback" not in err
    cfg = compose_eval(["checkpoints=[]"], tmp_path / "e")
    with pytest.raises(SystemExit):
        _run(cfg)
    assert "no checkpoint" in capsys.readouterr().err


def test_installed_sr_eval(trained_run, eval_images, tmp_path):
    """The console script: Hydra config, wandb offline (no prompt), outputs in the run dir."""
    run_dir = tmp_path / "cli"
    res = run_script(
        "sr-eval",
        [
            f"checkpoints=[{trained_run}]",
            f"datasets={{val3:{eval_images}}}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "metrics=[psnr_y,ssim_y,lpips]",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        env_extra={"TORCH_HOME": str(tmp_path / "empty_torch_home")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "protocol: paper" in res.stdout and "bicubic" in res.stdout
    assert "unavailable" in res.stdout
    for name in ("results.csv", "results.md", "results_per_image.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb offline run missing"


@pytest.mark.slow
def test_ddp_two_processes_equal_one(trained_run, eval_images, tmp_path, no_hub_cache):
    run_dir = tmp_path / "ddp"
    common = [
        f"checkpoints=[{trained_run}]",
        f"datasets={{val3:{eval_images}}}",
        "metrics=[psnr_y,ssim_y,psnr_rgb,lr_consistency_psnr]",
    ]
    res = run_script(
        "sr-eval",
        [
            *common,
            "logger=none",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    ddp_rows = list(csv.DictReader(open(run_dir / "results.csv")))
    ddp_images = list(csv.DictReader(open(run_dir / "results_per_image.csv")))
    single, _ = evaluate(compose_eval(common, tmp_path / "single"))
    assert len(ddp_images) == 3 * 2  # every image evaluated once (shards 2 + 1)
    for row in ddp_rows:
        ref = single.row(row["dataset"], row["model"])
        for metric in ("psnr_y", "ssim_y", "psnr_rgb", "lr_consistency_psnr"):
            assert float(row[metric]) == pytest.approx(ref[metric], abs=1e-6), metric
