"""Speed and GAN-balance knobs: D:G update ratio, separate G/D schedules, channels_last,
torch.compile of the generator."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.train.training import train

GAN = ["loss=[l1,gan]", "val.save_images=0"]


def _adam_steps(optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_d_steps_per_g_and_separate_schedules(tiny_cfg, val_subset):
    """3 discriminator updates per generator update for 2 iterations: Adam counts 2 and 6 steps.
    The generator's MultiStepLR (halve at its step 1) and the discriminator's StepLR (x0.1 every
    2 of its steps) each follow their own optimizer's steps, as logged in lr/<role>."""
    cfg = tiny_cfg(
        *GAN,
        f"data.val_dir={val_subset}",
        "optim.d_steps_per_g=3",
        "optim.generator.lr=1e-4",
        "optim.discriminator.lr=1e-3",
        "optim.scheduler={_target_:torch.optim.lr_scheduler.MultiStepLR,_partial_:true,"
        "milestones:[1],gamma:0.5}",
        "optim.discriminator_scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,"
        "step_size:2,gamma:0.1}",
    )
    _, objects = train(cfg)
    trainer, module = objects["trainer"], objects["module"]
    opt_g, opt_d = trainer.optimizers
    assert module.iteration == 2
    assert _adam_steps(opt_g) == {2}
    assert _adam_steps(opt_d) == {6}
    g_sched, d_sched = (c.scheduler for c in trainer.lr_scheduler_configs)
    assert g_sched.optimizer is opt_g and d_sched.optimizer is opt_d
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**3)  # 6 steps // 2
    rows = [r for r in csv.DictReader(open(Path(cfg.paths.output_dir) / "metrics.csv"))]
    logged = [
        (float(r["lr/generator"]), float(r["lr/discriminator"]))
        for r in rows
        if r.get("lr/generator")
    ]
    # After iteration 0: G stepped once (milestone 1 reached), D three times (one decay).
    assert logged[0] == (pytest.approx(5e-5), pytest.approx(1e-4))
    assert logged[1] == (pytest.approx(5e-5), pytest.approx(1e-6))


def test_discriminator_scheduler_null_keeps_its_rate_constant(tiny_cfg, val_subset):
    cfg = tiny_cfg(
        *GAN,
        f"data.val_dir={val_subset}",
        "optim.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,"
        "step_size:1,gamma:0.5}",
        "optim.discriminator_scheduler=null",
    )
    _, objects = train(cfg)
    opt_g, opt_d = objects["trainer"].optimizers
    assert len(objects["trainer"].lr_scheduler_configs) == 1
    assert opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.generator.lr * 0.25)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(cfg.optim.discriminator.lr)


def test_bad_d_steps_per_g_is_a_config_error(tiny_cfg):
    with pytest.raises(ConfigError, match="optim.d_steps_per_g"):
        train(tiny_cfg(*GAN, "optim.d_steps_per_g=0"))


def test_channels_last_matches_contiguous_and_trains(tiny_cfg, val_subset):
    from hydra.utils import instantiate

    cfg = tiny_cfg("speed.channels_last=true", f"data.val_dir={val_subset}", "loss=[l1]")
    torch.manual_seed(0)
    net = instantiate(cfg.model.generator, _convert_="all").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        fast = net.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    assert torch.allclose(ref, fast, atol=1e-5, rtol=0)

    metrics, objects = train(cfg)
    module = objects["module"]
    assert module.iteration == 2
    convs = [m.weight for m in module.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert torch.isfinite(torch.tensor(metrics["train/loss_total"]))
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("generator.") for k in ckpt["state_dict"])


def _can_compile() -> str | None:
    """Why torch.compile cannot run here (``None`` when it can)."""
    try:
        fn = torch.compile(lambda t: t * 2 + 1)
        fn(torch.ones(2))
    except Exception as exc:  # no C++ compiler, unsupported Python ...
        return f"torch.compile unavailable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


@pytest.mark.slow
def test_compiled_generator_keeps_plain_state_dict_keys_and_trains(tiny_cfg, val_subset):
    reason = _can_compile()
    if reason:
        pytest.skip(reason)
    from hydra.utils import instantiate

    cfg = tiny_cfg("model=espcn", "speed.compile=true", f"data.val_dir={val_subset}", *GAN)
    plain = instantiate(cfg.model.generator, _convert_="all")
    _, objects = train(cfg)
    module = objects["module"]
    assert module.iteration == 2
    assert module.generator._compiled_call_impl is not None  # it really ran compiled
    assert set(module.generator.state_dict()) == set(plain.state_dict())  # no _orig_mod. prefix
    out = Path(cfg.paths.output_dir) / "checkpoints"
    from safetensors.torch import load_file

    assert set(load_file(out / "last.generator.safetensors")) == set(plain.state_dict())


def _generator_close(a, b, atol=1e-6, network="generator"):
    sa, sb = getattr(a, network).state_dict(), getattr(b, network).state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa) <= atol


@pytest.mark.parametrize(
    "loss",
    [
        ["loss=[l1]"],
        # GAN path (manual accumulation). The generator objective is L1 alone until the GAN term
        # starts (start_step), so its accumulated gradient equals the big batch's; the
        # discriminator (with BatchNorm, relativistic batch means) trains but is not comparable.
        pytest.param(
            ["loss=[l1,gan]", "loss.gan.start_step=1000", "loss.gan.d_start_step=0"],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["plain", "gan"],
)
def test_accumulating_two_batches_equals_one_batch_twice_as_big(
    tiny_cfg, val_subset, loss, tmp_path
):
    """trainer.accumulate_grad_batches=2 with data.batch_size=2 gives the generator update of
    data.batch_size=4 (bicubic LQ: the degradation draws nothing at random). max_steps counts
    optimizer updates: 1 update = 2 batches. The EMA (decay 0.5, so that an extra average shows)
    is updated once per optimizer update, as with the big batch: over 2 updates, not 4 batches."""
    common = [
        *loss,
        f"data.val_dir={val_subset}",
        "val.save_images=0",
        "trainer.max_steps=2",
        "data.iters_per_epoch=4",
        "ema.enabled=true",
        "ema.decay=0.5",
    ]
    _, acc = train(
        tiny_cfg(
            *common, "data.batch_size=2", "trainer.accumulate_grad_batches=2", out=tmp_path / "a"
        )
    )
    _, big = train(tiny_cfg(*common, "data.batch_size=4", out=tmp_path / "b"))
    assert acc["module"].iteration == 4 and big["module"].iteration == 2
    for opt in acc["trainer"].optimizers:
        assert _adam_steps(opt) == {2}
    assert _generator_close(acc["module"], big["module"])
    assert _generator_close(acc["module"], big["module"], network="generator_ema")
    module = acc["module"]  # the EMA is an average, not a copy of the generator
    pairs = zip(module.generator.parameters(), module.generator_ema.parameters())
    assert any(not torch.equal(p, q) for p, q in pairs)


def test_accumulation_must_divide_the_epoch(tiny_cfg):
    with pytest.raises(ConfigError, match="data.iters_per_epoch=2 must be a multiple"):
        train(tiny_cfg("trainer.accumulate_grad_batches=3"))


@pytest.mark.slow
def test_gan_accumulation_resumes_exactly(tiny_cfg, val_subset, tmp_path):
    common = [
        *GAN,
        f"data.val_dir={val_subset}",
        "trainer.accumulate_grad_batches=2",
    ]
    _, straight = train(tiny_cfg(*common, "trainer.max_steps=2", out=tmp_path / "s"))
    train(tiny_cfg(*common, "trainer.max_steps=1", out=tmp_path / "p"))
    last = tmp_path / "p" / "checkpoints" / "last.ckpt"
    _, resumed = train(
        tiny_cfg(*common, "trainer.max_steps=2", f"resume={last}", out=tmp_path / "r")
    )
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == 4
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} differs after resume"
