"""Mixed precision on the manual GAN path, for real on the CPU: bf16 autocast through Lightning's
precision plugin, and fp16 with a GradScaler that skips overflowing steps (the NaN guard leaves
those to the scaler)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from sr_cli.errors import ConfigError
from sr_cli.train.build import build_datamodule, build_module, build_trainer
from sr_cli.train.training import train

GAN = ["loss=[l1,gan]", "val.save_images=0"]


def _initial_module(cfg):
    """The module exactly as ``train`` builds it before the first step (same seed, same order)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return build_module(cfg, dm.val_names, Path(cfg.paths.output_dir)), dm


def _adam_steps(optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_bf16_mixed_gan_trains_and_moves_both_networks(tiny_cfg, val_subset, tmp_path):
    common = [*GAN, f"data.val_dir={val_subset}", "trainer.precision=bf16-mixed"]
    cfg = tiny_cfg(*common, "trainer.max_steps=2", out=tmp_path / "part")
    start, _ = _initial_module(cfg)
    metrics, objects = train(cfg)
    trainer, module = objects["trainer"], objects["module"]
    assert trainer.precision == "bf16-mixed"
    assert trainer.precision_plugin.scaler is None  # bf16 needs no loss scaling
    assert not module.automatic_optimization
    for key in ("train/loss_l1", "train/loss_gan", "train/loss_gan_d", "train/loss_total"):
        assert math.isfinite(metrics[key]), key
    # Both networks moved, and both optimizers stepped twice.
    opt_g, opt_d = trainer.optimizers
    assert _adam_steps(opt_g) == _adam_steps(opt_d) == {2}
    for prefix in ("generator.", "losses.gan.discriminator."):
        before = {k: v for k, v in start.state_dict().items() if k.startswith(prefix)}
        after = module.state_dict()
        moved = [
            k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])
        ]
        assert moved, f"no {prefix}* weight changed"
        assert all(torch.isfinite(after[k]).all() for k in before)


@pytest.mark.slow
def test_bf16_mixed_gan_resumes_exactly(tiny_cfg, val_subset, tmp_path):
    """A bf16-mixed checkpoint resumes exactly: 2 + 1 iterations == 3 straight."""
    common = [*GAN, f"data.val_dir={val_subset}", "trainer.precision=bf16-mixed"]
    train(tiny_cfg(*common, "trainer.max_steps=2", out=tmp_path / "part"))
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    _, resumed = train(
        tiny_cfg(*common, "trainer.max_steps=3", f"resume={last}", out=tmp_path / "c")
    )
    _, straight = train(tiny_cfg(*common, "trainer.max_steps=3", out=tmp_path / "s"))
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == 3
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} differs after a bf16 resume"


def test_fp16_mixed_on_cpu_is_a_clear_error(tiny_cfg):
    cfg = tiny_cfg(*GAN, "trainer.precision=16-mixed")
    with pytest.raises(ConfigError, match=r"trainer.precision=16-mixed .*bf16-mixed"):
        train(cfg)


@pytest.mark.slow
def test_fp16_gradscaler_skips_overflow_on_both_gan_steps_without_a_nan_fault(tiny_cfg, val_subset):
    """fp16 autocast with a real GradScaler on the CPU (Lightning's MixedPrecision plugin, given
    explicitly since Lightning's flag turns CPU fp16 into bf16). A huge initial scale makes the
    first generator backward overflow: the scaler skips that step and backs off, the NaN guard
    (policy stop) does not fire, and both networks then train with finite weights."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    cfg = tiny_cfg(
        *GAN, f"data.val_dir={val_subset}", "trainer.precision=null", "trainer.max_steps=2"
    )
    module, dm = _initial_module(cfg)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60, backoff_factor=2.0**-50)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = build_trainer(cfg, module, Path(cfg.paths.output_dir), plugins=(plugin,))
    trainer.fit(module, datamodule=dm)
    assert module.iteration == 2
    assert module.scaler_skipped_steps >= 1  # the overflow was the scaler's, not a NaN fault
    assert module.skipped_steps == 0
    assert scaler.get_scale() < 2.0**60  # it backed off
    opt_g, opt_d = trainer.optimizers
    # Scaler-skipped steps do not reach Adam: fewer than 2 + 2 updates, but each network moved.
    g_steps, d_steps = _adam_steps(opt_g) or {0}, _adam_steps(opt_d) or {0}
    assert max(g_steps) + max(d_steps) == 4 - module.scaler_skipped_steps
    state = module.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    for prefix in ("generator.", "losses.gan.discriminator."):
        assert any(
            not torch.equal(v, state[k])
            for k, v in start.items()
            if k.startswith(prefix) and v.is_floating_point()
        ), prefix
