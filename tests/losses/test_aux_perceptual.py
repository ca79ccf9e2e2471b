"""The auxiliary perceptual network: its pretraining, the shipped weights, and its loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sr_cli.data import sample_dir
from sr_cli.errors import WeightsUnavailableError
from sr_cli.losses.aux_perceptual import AuxPerceptualLoss, load_auxnet
from sr_cli.losses.base import LossInputs
from sr_cli.models.auxnet import default_weights
from sr_cli.train.auxiliary import _load, accuracy, pretrain_auxnet


@pytest.mark.slow
def test_pretraining_learns_the_task_and_says_what_the_file_is(tmp_path):
    out = tmp_path / "aux.safetensors"
    meta = pretrain_auxnet(sample_dir("train"), out, steps=60, batch_size=16, say=lambda m: None)
    assert meta["accuracy"] > 2 * meta["chance"]  # 60 steps already beat chance (1/9) clearly
    with safe_open(str(out), "pt") as f:
        stored = f.metadata()
    assert json.loads(stored["classes"]) == meta["classes"] and len(meta["classes"]) == 9
    assert load_auxnet(out).classes == 9


def test_the_shipped_network_names_the_source_of_fresh_patches():
    net = load_auxnet()
    images, _ = _load(default_weights().parents[1] / "samples" / "train")
    assert accuracy(net, images, 48, 256, seed=123) > 0.8  # chance: 1/9


def test_the_loss_is_zero_for_identical_images_and_grows_with_noise():
    term = AuxPerceptualLoss()
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 32, 32)

    def value(sr):
        return float(term(LossInputs(sr=sr, gt=gt, lq=gt[..., ::2, ::2], sr_levels=[sr])).loss)

    assert value(gt.clone()) == 0.0
    small, large = value(gt + 0.02 * torch.randn_like(gt)), value(gt + 0.2 * torch.randn_like(gt))
    assert 0.0 < small < large
    assert not any(k for k in term.state_dict())  # the network's weights stay out of checkpoints


def test_missing_weights_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(
        WeightsUnavailableError, match=r"nothing\.safetensors are missing.*make pretrain-aux"
    ):
        AuxPerceptualLoss(weights_file=str(tmp_path / "nothing.safetensors"))


def test_pretraining_is_reproducible(tmp_path):
    a = pretrain_auxnet(
        sample_dir("train"), tmp_path / "a.st", steps=3, batch_size=4, say=lambda m: None
    )
    b = pretrain_auxnet(
        sample_dir("train"), tmp_path / "b.st", steps=3, batch_size=4, say=lambda m: None
    )
    assert a["accuracy"] == b["accuracy"]
    na, nb = load_auxnet(tmp_path / "a.st"), load_auxnet(tmp_path / "b.st")
    for (k, x), (_, y) in zip(na.state_dict().items(), nb.state_dict().items()):
        assert torch.equal(x, y), k
    assert np.isfinite(a["seconds"])
