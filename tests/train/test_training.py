"""End-to-end training behaviour on tiny configs: outputs, optimization mode, resume, NaN, EMA."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sr_cli.errors import NonFiniteLossError
from sr_cli.losses.base import LossTerm
from sr_cli.train.training import train


def _run(tiny_cfg, *overrides, out=None):
    cfg = tiny_cfg(*overrides, out=out)
    metrics, objects = train(cfg)
    return metrics, objects, Path(cfg.paths.output_dir)


def test_headline_mix_writes_every_output(tiny_cfg, val_subset):
    metrics, objects, out = _run(
        tiny_cfg, "model=esrgan", "loss=[downsample,gan]", f"data.val_dir={val_subset}"
    )
    module = objects["module"]
    # GAN mix: manual optimization with a discriminator optimizer.
    assert not module.automatic_optimization
    assert len(objects["trainer"].optimizers) == 2
    assert module.iteration == 2
    shown = objects["trainer"].progress_bar_metrics  # what the progress bar displays
    assert {"train/loss_downsample", "train/loss_gan", "train/loss_total", "val/psnr_y"} <= set(
        shown
    )
    for name in ("config_resolved.yaml", "metrics.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "best.ckpt").is_file()
    pngs = list((out / "images" / "val").glob("camera_iter*.png"))
    assert pngs, "side-by-side validation image missing"
    from PIL import Image

    w, h = Image.open(pngs[0]).size
    assert (w, h) == (3 * 48, 48)  # LQ (bicubic) | SR | GT
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    keys = set(rows[0])
    for key in (
        "train/loss_downsample",
        "train/loss_downsample_unweighted",
        "train/loss_gan",
        "train/loss_gan_d",
        "train/lr_consistency_psnr",
        "val/psnr_y",
        "val/ssim_y",
    ):
        assert key in keys, key
    assert 0 < metrics["val/psnr_y"] < 60
    assert 0 < metrics["val/ssim_y"] <= 1
    # No temporary files left behind by the atomic checkpoint writer.
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_non_gan_uses_automatic_optimization(tiny_cfg, val_subset):
    _, objects, _ = _run(tiny_cfg, "model=edsr_baseline", "loss=[l1]", f"data.val_dir={val_subset}")
    module = objects["module"]
    assert module.automatic_optimization
    assert len(objects["trainer"].optimizers) == 1
    assert module.discriminator is None


def test_checkpoint_loads_with_weights_only(tiny_cfg, val_subset):
    _, _, out = _run(tiny_cfg, "loss=[l1,gan]", f"data.val_dir={val_subset}")
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["sr_cli"]["iteration"] == 2
    assert any(k.startswith("generator.") for k in ckpt["state_dict"])


@pytest.mark.parametrize("first,total", [(2, 4), (3, 5)])
def test_resume_is_exact(tiny_cfg, val_subset, tmp_path, first, total):
    """Resuming from last.ckpt, at an epoch boundary (2 of 2) or mid-epoch (3 = 1.5 epochs),
    gives bit-identical weights to an uninterrupted run: data, degradation and GAN state."""
    common = ["loss=[l1,gan]", f"data.val_dir={val_subset}", "val.save_images=0"]
    _, straight, _ = _run(tiny_cfg, *common, f"trainer.max_steps={total}", out=tmp_path / "a")
    _, _, part = _run(tiny_cfg, *common, f"trainer.max_steps={first}", out=tmp_path / "b")
    last = part / "checkpoints" / "last.ckpt"
    _, resumed, _ = _run(
        tiny_cfg, *common, f"trainer.max_steps={total}", f"resume={last}", out=tmp_path / "c"
    )
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == total
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} differs after resume"


def test_resuming_a_finished_run_trains_no_further_step(tiny_cfg, val_subset, tmp_path):
    common = ["loss=[l1,gan]", f"data.val_dir={val_subset}", "val.save_images=0"]
    _, done, out = _run(tiny_cfg, *common, "trainer.max_steps=2", out=tmp_path / "a")
    last = out / "checkpoints" / "last.ckpt"
    _, again, _ = _run(
        tiny_cfg, *common, "trainer.max_steps=2", f"resume={last}", out=tmp_path / "b"
    )
    a, b = done["module"], again["module"]
    assert a.iteration == b.iteration == 2
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} changed although the run had already finished"


def test_resume_auto_keeps_one_metrics_file(tiny_cfg, val_subset, tmp_path):
    """A resumed run appends to its own metrics.csv: the rows of both parts, each step once."""
    import csv

    common = ["loss=[l1]", f"data.val_dir={val_subset}", "val.save_images=0"]
    out = tmp_path / "same"
    _run(tiny_cfg, *common, "trainer.max_steps=2", out=out)
    _, objects, _ = _run(tiny_cfg, *common, "trainer.max_steps=4", "resume=auto", out=out)
    assert objects["module"].iteration == 4
    assert sorted(p.name for p in out.glob("metrics*.csv")) == ["metrics.csv"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss_l1")]
    assert train_steps == [0, 1, 2, 3]
    assert len([r for r in rows if r.get("val/psnr_y")]) == 2


def test_missing_resume_checkpoint_is_a_clear_error(tiny_cfg, tmp_path):
    from sr_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does-not-exist.ckpt"):
        train(tiny_cfg("loss=[l1]", f"resume={tmp_path}/does-not-exist.ckpt"))


class ExplodingLoss(LossTerm):
    """Finite for the first iteration, NaN afterwards."""

    def compute(self, inputs):
        value = (inputs.sr - inputs.gt).abs().mean()
        return value * float("nan") if inputs.step >= 1 else value


def test_nan_loss_stops_with_named_term_and_saves_last_good(tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "+loss.boom._target_=tests.train.test_training.ExplodingLoss",
        out=tmp_path / "nan",
    )
    with pytest.raises(NonFiniteLossError, match=r"'boom'.*iteration 1") as info:
        train(cfg)
    saved = list((tmp_path / "nan" / "checkpoints").glob("last_good_iter*.ckpt"))
    assert saved and str(saved[0]) in str(info.value)
    state = torch.load(saved[0], weights_only=True)
    assert state["sr_cli"]["iteration"] == 1
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_inactive_term_costs_no_compute(tiny_cfg, val_subset):
    calls = []

    class Spy(LossTerm):
        def compute(self, inputs):
            calls.append(inputs.step)
            return (inputs.sr - inputs.gt).abs().mean()

    cfg = tiny_cfg(
        "loss=[l1]", f"data.val_dir={val_subset}", "trainer.max_steps=4", "data.iters_per_epoch=4"
    )
    from sr_cli.train.build import build_module, build_trainer

    dm = __import__("hydra").utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, Path(cfg.paths.output_dir))
    module.losses["spy"] = Spy(weight=0.5, start_step=2)
    build_trainer(cfg, module, Path(cfg.paths.output_dir)).fit(module, datamodule=dm)
    assert calls == [2, 3]


def test_ema_generator_tracks_the_average(tiny_cfg, val_subset):
    _, objects, _ = _run(
        tiny_cfg, "loss=[l1]", f"data.val_dir={val_subset}", "ema.enabled=true", "ema.decay=0.5"
    )
    module = objects["module"]
    ema, gen = module.generator_ema, module.generator
    assert ema is not None
    diffs = [(e - g).abs().max().item() for e, g in zip(ema.parameters(), gen.parameters())]
    assert max(diffs) > 0  # lags the trained weights
    assert not any(p.requires_grad for p in ema.parameters())
    # Inference loads the EMA weights by default, the raw generator on request.
    from sr_cli.evaluate.inference import load_generator

    ckpt = Path(objects["output_dir"]) / "checkpoints" / "last.ckpt"
    for prefer_ema, source in ((True, ema), (False, gen)):
        loaded = load_generator(ckpt, prefer_ema=prefer_ema)
        assert loaded.used_ema is prefer_ema
        for a, b in zip(loaded.generator.parameters(), source.parameters()):
            assert torch.equal(a, b)


def inside(x: torch.Tensor, batch: dict) -> torch.Tensor:
    """``x`` without the LR ring where the replay of D on the patch alone lacks the context the
    LQ was made with (``data.lr_context``; the downsample-consistency loss leaves it out too)."""
    k = int(batch.get("lq_border", 0))
    return x[..., k : x.shape[-2] - k, k : x.shape[-1] - k]


@pytest.mark.parametrize("lr_context", ["auto", "0"])
def test_lq_is_made_on_device_with_the_loss_operator(tiny_cfg, lr_context):
    """D(HR) with the same degradation object equals the LQ the pipeline produced (with
    context: inside the ring of LR pixels whose replay lacks it)."""
    from hydra.utils import instantiate

    from sr_cli.degradations.functional import quantize
    from sr_cli.train.build import build_module

    cfg = tiny_cfg("loss=[downsample]", f"data.lr_context={lr_context}")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, Path(cfg.paths.output_dir))
    batch = next(iter(dm.train_dataloader()))
    assert "lq" not in batch  # workers only decode and crop
    batch = module.on_after_batch_transfer(batch, 0)
    gt, lq = batch["gt"], batch["lq"]
    assert lq.shape == (gt.shape[0], 3, gt.shape[2] // 4, gt.shape[3] // 4)
    assert batch.get("lq_border", 0) == (2 if lr_context == "auto" else 0)  # bicubic's reach
    d_hr = module.degradation.replay(gt, batch["degradation_params"])
    assert torch.equal(inside(quantize(d_hr), batch), inside(lq, batch))
    assert (inside(d_hr, batch) - inside(lq, batch)).abs().max() <= 0.5 / 255 + 1e-6
    # The downsample loss of the ground truth is therefore at the quantization floor.
    term = module.losses["downsample"]
    inputs = module.loss_inputs(batch)
    inputs.sr = gt
    assert term(inputs).loss.item() < 0.5 / 255


def test_scale_mismatch_names_all_three_values(tiny_cfg):
    from sr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model scale=2.*degradation scale=4.*data scale=4"):
        train(tiny_cfg("loss=[l1]", "model.generator.scale=2"))


@pytest.mark.parametrize("lr_context", ["auto", "0"])
def test_device_augmentation_is_applied_to_training_batches(tiny_cfg, val_subset, lr_context):
    from hydra.utils import instantiate

    from sr_cli.train.build import build_module

    cfg = tiny_cfg(
        "loss=[l1]", "augment=device", "augment.mixup_prob=1.0", f"data.val_dir={val_subset}",
        f"data.lr_context={lr_context}",
    )  # fmt: skip
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, Path(cfg.paths.output_dir))
    assert module.augment is not None and module.augment.mixup_prob == 1.0
    raw = next(iter(dm.train_dataloader()))
    gt0 = raw["gt"].clone()
    # Outside of training (no trainer attached) the batch is left alone.
    plain = module.on_after_batch_transfer(dict(raw), 0)
    assert torch.equal(plain["gt"], gt0)
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    module.trainer = trainer
    trainer.training = True
    aug = module.on_after_batch_transfer(dict(raw), 0)
    assert not torch.equal(aug["gt"], gt0)  # mixed / flipped
    # Applied identically to the pair: bicubic is linear, so LQ still equals D(GT) up to 8-bit rounding.
    d_gt = module.degradation.replay(aug["gt"])
    assert (inside(d_gt, aug) - inside(aug["lq"], aug)).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("lr_context", ["5", "0"])  # 5 LR px: the blur's reach at x4
def test_augmentation_keeps_lq_equal_to_d_of_gt_for_anisotropic_blur(
    tiny_cfg, val_subset, lr_context
):
    """GT is flipped/rotated before the degradation (with its HR context, if any), so D(GT)
    with the recorded kernels is the LQ."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from sr_cli.degradations.functional import quantize
    from sr_cli.train.build import build_module

    cfg = tiny_cfg(
        "loss=[l1]", "augment=device", "degradation=blur", f"data.val_dir={val_subset}",
        f"data.lr_context={lr_context}", "data.patch_size=96", "data.batch_size=8",
        "degradation.kernel_list=[aniso]", "degradation.kernel_prob=[1.0]",
        "degradation.sigma=[1.0,3.0]",
    )  # fmt: skip
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, Path(cfg.paths.output_dir))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    module.trainer = trainer
    trainer.training = True
    batch = module.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    replay = quantize(module.degradation.replay(batch["gt"], batch["degradation_params"]))
    assert batch.get("lq_border", 0) == int(lr_context)
    assert (inside(replay, batch) - inside(batch["lq"], batch)).abs().max() <= 1 / 255 + 1e-6
