"""Learned perceptual loss from a trained discriminator, and the iterative stage driver."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.losses.base import LossInputs
from sr_cli.losses.disc_perceptual import DiscriminatorPerceptualLoss, load_discriminator
from sr_cli.train.task import run


def test_discriminator_is_rebuilt_from_checkpoint(gan_checkpoint):
    disc = load_discriminator(gan_checkpoint, "gan")
    state = torch.load(gan_checkpoint, weights_only=True)["state_dict"]
    w = state["losses.gan.discriminator.linear2.weight"]
    assert torch.equal(disc.linear2.weight, w)
    assert not any(p.requires_grad for p in disc.parameters())
    assert not disc.training


def test_disc_perceptual_values_and_gradients(gan_checkpoint):
    term = DiscriminatorPerceptualLoss(gan_checkpoint, layer_weights=[1.0, 0.0, 0.5])
    gt = torch.rand(2, 3, 32, 32)
    same = LossInputs(sr=gt.clone(), gt=gt, lq=gt, sr_levels=[gt])
    assert term(same).loss.item() == 0.0
    sr = (gt + 0.1 * torch.randn_like(gt)).requires_grad_(True)
    loss = term(LossInputs(sr=sr, gt=gt, lq=gt, sr_levels=[sr])).loss
    _, fa = term.network(sr, return_features=True)
    _, fb = term.network(gt, return_features=True)
    expected = (fa[0] - fb[0]).abs().mean() + 0.5 * (fa[2] - fb[2]).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    # The frozen network is not part of the trainable state or the checkpoint.
    assert list(term.parameters()) == [] and term.state_dict() == {}


def test_disc_perceptual_errors(gan_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint is not set"):
        DiscriminatorPerceptualLoss(None)
    with pytest.raises(CheckpointError, match="no discriminator for loss term 'nope'.*\\['gan'\\]"):
        DiscriminatorPerceptualLoss(gan_checkpoint, term="nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        DiscriminatorPerceptualLoss(tmp_path / "missing.ckpt")


def test_two_iterative_stages_and_resume(tiny_cfg, val_subset, tmp_path):
    root = tmp_path / "stages"
    cfg = tiny_cfg(
        "experiment=iterative_perceptual",
        "loss.perceptual.weights=random",
        f"data.val_dir={val_subset}",
        "trainer.max_steps=2",
        out=root,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metrics, objects = run(cfg)
    summary = json.loads((root / "stages.json").read_text())
    assert summary["stages"] == 2 and [r["stage"] for r in summary["completed"]] == [1, 2]
    s1, s2 = summary["completed"]
    assert s1["losses"] == ["l1", "perceptual", "gan"]
    assert s2["losses"] == ["l1", "gan", "disc_perceptual"]
    assert s2["discriminator_from"] == str(root / "stage_1" / "checkpoints" / "last.ckpt")
    assert "val/psnr_y" in s2["metrics"] and metrics == s2["metrics"]
    assert (root / "stage_2" / "checkpoints" / "last.ckpt").is_file()
    md = (root / "stages.md").read_text()
    assert "[stage_1](stage_1/)" in md and "val/psnr_y" in md
    # Stage 2 retrained from scratch: its generator starts from the same init as stage 1, not
    # from stage 1's weights, so after 2 iterations the two differ.
    g1 = torch.load(root / "stage_1" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    g2 = torch.load(root / "stage_2" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not torch.equal(g1["generator.conv_first.weight"], g2["generator.conv_first.weight"])

    # Killed during stage 2: stage 1 is recorded, stage 2 has a last.ckpt. Re-running resumes
    # stage 2 from its checkpoint and leaves stage 1 alone.
    (root / "stages.json").write_text(json.dumps({"stages": 2, "completed": [s1]}))
    stamp = os.path.getmtime(root / "stage_1" / "metrics.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cfg2 = tiny_cfg(
            "experiment=iterative_perceptual",
            "loss.perceptual.weights=random",
            f"data.val_dir={val_subset}",
            "trainer.max_steps=4",
            out=root,
        )
        _, objects = run(cfg2)
    assert os.path.getmtime(root / "stage_1" / "metrics.csv") == stamp
    assert objects["module"].iteration == 4  # continued from iteration 2 of stage 2
    # one metrics.csv per stage across the resume (the rows of both parts)
    assert sorted(p.name for p in (root / "stage_2").glob("metrics*.csv")) == ["metrics.csv"]


def test_stages_need_an_adversarial_term(tiny_cfg):
    with pytest.raises(ConfigError, match="needs an adversarial term"):
        run(tiny_cfg("loss=[l1]", "stages=2"))


def test_every_stage_validates_the_plane_metrics(tiny_cfg, tmp_path):
    from sr_cli.train.stages import stage_config

    cfg = tiny_cfg("experiment=iterative_perceptual", "val.extra_metrics=[haarpsi,niqe]")
    s2 = stage_config(cfg, 2, tmp_path, tmp_path / "stage_1" / "last.ckpt")
    assert list(s2.val.extra_metrics) == ["haarpsi", "niqe", "rmse_y"]


def test_stages_path_through_the_plane(tiny_cfg, tmp_path):
    """A stage's final validation logs val/niqe and val/rmse_y (a 200x200 image: NIQE needs two
    96x96 blocks); stages.md lists the path and sr-train draws it with its CSV."""
    import csv

    from PIL import Image

    from sr_cli.commands.train import draw_stage_plane
    from sr_cli.data import SAMPLES_DIR
    from sr_cli.train.stages import write_summary
    from sr_cli.train.training import train

    val = tmp_path / "val200"
    val.mkdir()
    Image.open(SAMPLES_DIR / "val" / "camera.png").crop((0, 0, 200, 200)).save(val / "c.png")
    cfg = tiny_cfg("loss=[l1]", f"data.val_dir={val}", "val.extra_metrics=[niqe,rmse_y]")
    metrics, _ = train(cfg)
    assert metrics["val/niqe"] > 0 and metrics["val/rmse_y"] > 0
    records = [
        {"stage": 1, "dir": "stage_1", "losses": ["l1"], "metrics": metrics},
        {"stage": 2, "dir": "stage_2", "losses": ["l1"], "metrics": {"val/niqe": 5.0}},
    ]
    root = tmp_path / "root"
    root.mkdir()
    write_summary(root, records, 2)
    md = (root / "stages.md").read_text()
    assert "Path through the perception-distortion plane" in md
    assert f"| stage 1 | {metrics['val/niqe']:.4f} | {metrics['val/rmse_y']:.3f} |" in md
    draw_stage_plane(records, root)
    rows = list(csv.DictReader(open(root / "plane.csv")))
    assert [r["label"] for r in rows] == ["stage 1", "stage 2"]
    assert float(rows[0]["x"]) == pytest.approx(metrics["val/niqe"], abs=1e-5)
    assert float(rows[0]["rmse_y"]) == pytest.approx(metrics["val/rmse_y"], abs=1e-5)
    assert rows[1]["rmse_y"] == "nan"  # not validated: in the CSV, not in the picture
    assert (root / "plane.png").stat().st_size > 1000
