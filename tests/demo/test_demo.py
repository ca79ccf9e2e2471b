"""`make train` (``sr-train model=esrgan loss=downsample+gan experiment=demo``) shows what the
headline does: it fine-tunes a bundled PSNR-oriented generator, as ESRGAN starts its GAN stage,
and ends at or above bicubic with no bright frame along the border (issue 9)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.data import WEIGHTS_DIR, sample_dir
from sr_cli.data.datasets import open_eval_dataset
from sr_cli.data.images import read_image
from sr_cli.degradations.pipeline import ResizeDownsample
from sr_cli.metrics.protocol import protocol_metrics
from sr_cli.metrics.reference import bicubic_reference
from sr_cli.models.pretrained import load_pretrained
from sr_cli.models.rrdbnet import rrdbnet
from tests.conftest import compose_train

DEMO_WEIGHTS = WEIGHTS_DIR / "esrgan_small_x4_l1.safetensors"
needs_weights = pytest.mark.skipif(
    not DEMO_WEIGHTS.is_file(),
    reason=f"{DEMO_WEIGHTS.name} is not in the repo yet: build it with `make pretrain-demo`",
)


def border_ratio(err: np.ndarray, border: int = 2, margin: int = 8) -> float:
    """Mean |error| on the outer ``border`` pixels over its mean in the interior (``margin`` in)."""
    err = np.abs(err).mean(axis=-1)
    ring = np.zeros(err.shape, bool)
    ring[:border], ring[-border:], ring[:, :border], ring[:, -border:] = True, True, True, True
    inner = np.zeros(err.shape, bool)
    inner[margin:-margin, margin:-margin] = True
    return float(err[ring].mean() / err[inner].mean())


@needs_weights
def test_demo_warm_starts_the_small_esrgan_only():
    cfg = compose_train(["model=esrgan", "loss=[downsample,gan]", "experiment=demo"])
    assert Path(cfg.model.pretrained) == DEMO_WEIGHTS
    assert DEMO_WEIGHTS.is_file() and DEMO_WEIGHTS.stat().st_size < 4 * 2**20
    # Other models, presets and scales have no bundled warm start and train from scratch.
    for extra in (["model=edsr_baseline"], ["model.preset=paper"], ["scale=2"]):
        assert compose_train(["experiment=demo", *extra]).model.pretrained is None
    # The pretrain overlay itself never starts from the file it rebuilds.
    assert compose_train(["loss=l1", "experiment=demo_pretrain"]).model.pretrained is None


@needs_weights
def test_bundled_warm_start_beats_bicubic_without_a_border_frame():
    """The shipped L1 generator (`make pretrain-demo`) is above bicubic on the bundled val images."""
    net = rrdbnet(4, "small")
    load_pretrained(net, DEMO_WEIGHTS)  # strict: every key and shape fits
    net.eval()
    d = ResizeDownsample(4, mode="bicubic")
    val = open_eval_dataset(sample_dir("val"), 4)
    psnrs, ratios = [], []
    for item in val:
        gt = item["gt"][None]
        with torch.no_grad():
            sr = net(d(gt)).clamp(0, 1)
        psnrs.append(protocol_metrics(sr, gt, 4)["psnr_y"].item())
        ratios.append(border_ratio((sr - gt)[0].permute(1, 2, 0).numpy()))
    bicubic = bicubic_reference(val, 4, d)
    assert np.mean(psnrs) > bicubic["psnr_y"]
    assert max(ratios) < 2.0, ratios


SR_TRAIN = shutil.which("sr-train") or str(Path(sys.executable).parent / "sr-train")


@pytest.mark.slow
def test_make_train_ends_above_bicubic_without_border_frame(tmp_path):
    """What `make train` runs, in full: PSNR_Y >= bicubic, LR consistency > bicubic, no frame."""
    run_dir = tmp_path / "run"
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    mix = next(
        ln.split(":=", 1)[1].split() for ln in makefile.splitlines() if ln.startswith("DEMO_MIX")
    )
    res = subprocess.run(
        [
            SR_TRAIN,
            "model=esrgan",
            "loss=downsample+gan",
            "experiment=demo",
            *mix,  # the fine-tune's mix, as `make train` passes it
            "logger=none",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics, bicubic = summary["metrics"], summary["bicubic"]["val"]
    assert metrics["val/psnr_y"] >= bicubic["psnr_y"]
    assert metrics["val/lr_consistency_psnr"] > bicubic["lr_consistency_psnr"]
    final = sorted((run_dir / "images" / "val").glob("*_iter0000300.png"))
    assert len(final) == 3
    for path in final:
        row = read_image(path).astype(np.float64) / 255.0  # LQ bicubic | SR | GT
        w = row.shape[1] // 3
        up, sr, gt = row[:, :w], row[:, w : 2 * w], row[:, 2 * w :]
        assert border_ratio(sr - gt) < max(2.0, 1.25 * border_ratio(up - gt)), path.name


@pytest.mark.parametrize("scale", [4, 3])
def test_small_esrgan_has_no_border_response(scale):
    """The frame's cause: zero padding makes the convs see black beyond the LQ edge, so even a
    flat image comes out with a border different from its interior. The CPU preset pads with the
    edge pixels, so a flat LQ gives a flat SR, up to the border, at any weights."""
    torch.manual_seed(0)
    net = rrdbnet(scale, "small").eval()
    with torch.no_grad():
        sr = net(torch.full((1, 3, 12, 12), 0.4))
    interior = sr[..., 12, 12].view(1, 3, 1, 1)
    assert (sr - interior).abs().max() < 1e-5
    # Zero padding (the paper preset's layout) has the border response this test measures.
    zeros = rrdbnet(scale, "small", padding_mode="zeros").eval()
    zeros.load_state_dict(net.state_dict())
    with torch.no_grad():
        flat = zeros(torch.full((1, 3, 12, 12), 0.4))
    assert (flat - flat[..., 12, 12].view(1, 3, 1, 1)).abs().max() > 1e-3


def test_unknown_padding_mode_is_a_config_error():
    from sr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="padding_mode='circular' is not supported"):
        rrdbnet(4, "small", padding_mode="circular")
