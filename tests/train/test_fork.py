"""``init_from=``: a run continues another run's whole training state in its own folder."""

from __future__ import annotations

import json

import pytest
import torch

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.serialization import safe_torch_load
from sr_cli.train.training import train

COMMON = ["val.save_images=0", "optim.scheduler=null"]


def _gan_state(ckpt):
    sd = safe_torch_load(ckpt)["state_dict"]
    return {k: v for k, v in sd.items() if k.startswith(("generator.", "losses.gan."))}


def test_a_fork_continues_both_networks_and_the_iteration_under_a_new_recipe(
    tiny_cfg, val_subset, tmp_path
):
    base = tmp_path / "base"
    common = [*COMMON, f"data.val_dir={val_subset}", "loss.gan.discriminator.num_feat=16"]
    train(tiny_cfg("loss=[l1,gan]", *common, out=base))
    before = {k: v.clone() for k, v in _gan_state(base / "checkpoints" / "last.ckpt").items()}
    fork = tmp_path / "fork"
    _, objects = train(
        tiny_cfg(
            "loss=[l1,gan,translational]",
            "loss.translational.start_step=0",
            *common,
            "trainer.max_steps=4",
            f"init_from={base / 'checkpoints' / 'last.ckpt'}",
            out=fork,
        )
    )
    summary = json.loads((fork / "summary.json").read_text())
    assert summary["iteration"] == 4  # counted on from the base's 2 iterations
    # The base run is untouched and the fork started from its networks, then trained them on.
    assert json.loads((base / "summary.json").read_text())["iteration"] == 2
    after_base = _gan_state(base / "checkpoints" / "last.ckpt")
    assert all(torch.equal(before[k], after_base[k]) for k in before)
    module = objects["module"]
    d_key = next(k for k in before if k.startswith("losses.gan.discriminator") and "weight" in k)
    assert not torch.equal(module.state_dict()[d_key], before[d_key])  # D trained on
    # Adam's step count went on from the base's (the optimizer state was restored, not new).
    g_opt = objects["trainer"].optimizers[0]
    steps = [float(s["step"]) for s in g_opt.state.values() if "step" in s]
    assert steps and min(steps) == 4
    # A rerun of the same command continues the fork's own state, not the base again.
    train(
        tiny_cfg(
            "loss=[l1,gan,translational]",
            "loss.translational.start_step=0",
            *common,
            "trainer.max_steps=6",
            f"init_from={base}",
            out=fork,
        )
    )
    assert json.loads((fork / "summary.json").read_text())["iteration"] == 6


def test_a_fork_cannot_add_a_network_nor_change_the_generator(tiny_cfg, val_subset, tmp_path):
    base = tmp_path / "base"
    common = [*COMMON, f"data.val_dir={val_subset}"]
    train(tiny_cfg("loss=[l1]", *common, out=base))
    with pytest.raises(CheckpointError, match=r"no state for the loss term\(s\) \['gan'\]"):
        train(
            tiny_cfg(
                "loss=[l1,gan]",
                "loss.gan.discriminator.num_feat=16",
                *common,
                "trainer.max_steps=4",
                f"init_from={base}",
                out=tmp_path / "f1",
            )
        )
    with pytest.raises(CheckpointError, match="generator differs"):
        train(
            tiny_cfg(
                "loss=[l1]",
                "+model.generator.num_feat=8",
                *common,
                "trainer.max_steps=4",
                f"init_from={base}",
                out=tmp_path / "f2",
            )
        )
    with pytest.raises(ConfigError, match="cannot be combined"):
        train(
            tiny_cfg("loss=[l1]", *common, f"init_from={base}", "resume=auto", out=tmp_path / "f3")
        )
    assert not (tmp_path / "f1").exists() and not (tmp_path / "f2").exists()
