"""optim=adamw|adan|schedule_free and the cosine-with-warm-up schedule."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from sr_cli.config import group_options
from sr_cli.errors import ConfigError
from sr_cli.optim import cosine_factor, cosine_with_warmup
from sr_cli.train.training import train


def test_cosine_with_warmup_known_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # warm-up 1/2, 2/2
    assert lrs[2] == pytest.approx(1.0)  # cosine starts at the base rate
    # half-way through the decay (t = 5/10): 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    assert lrs[7] == pytest.approx(0.55)
    assert lrs[12] == pytest.approx(0.1) and lrs[13] == pytest.approx(0.1)  # floor after the end
    assert cosine_factor(4, 2, 12, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=10, warmup_steps=10), "warmup_steps"),
        (dict(total_steps=10, min_lr_ratio=2.0), "min_lr_ratio"),
    ],
)
def test_bad_schedule_options_are_config_errors(kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match=match):
        cosine_with_warmup(opt, **kwargs)


@pytest.mark.parametrize("name", ["adamw", "adan", "schedule_free"])
def test_optimizer_configs_build_and_step(name, tiny_cfg):
    assert name in group_options("optim")
    cfg = tiny_cfg(f"optim={name}")
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    opt = instantiate(cfg.optim.generator, _convert_="all")(net.parameters())
    assert (
        type(opt).__name__
        == {"adamw": "AdamW", "adan": "Adan", "schedule_free": "AdamWScheduleFree"}[name]
    )
    before = net.weight.detach().clone()
    net(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, net.weight)
    if cfg.optim.get("scheduler"):
        sched = instantiate(cfg.optim.scheduler, _convert_="all")(opt)
        assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)


@pytest.mark.parametrize("name", ["adamw", "adan", "schedule_free"])
def test_training_runs_with_each_optimizer(name, tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        f"optim={name}",
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "+trainer.fast_dev_run=true",
        out=tmp_path / name,
    )
    metrics, objects = train(cfg)
    assert objects["module"].iteration == 1 and math.isfinite(metrics["train/loss_l1"])
