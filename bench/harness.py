"""The two sides of a training comparison: the real ``sr-train`` path (the config a user gets,
built by :mod:`sr_cli.train.build`, timed by :class:`bench.clock.StepClock` inside the
``Trainer``) and the same iteration as a plain PyTorch loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.measure import sync


def compose_train(overrides: list[str]):
    """The sr-train config a user gets for these overrides (logger off, output in a temp dir)."""
    from hydra import compose, initialize_config_dir

    from sr_cli.config import config_dir, register_resolvers, rewrite_overrides

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=rewrite_overrides(overrides))


def train_overrides(p: dict, model: str, loss: str, out: Path, device: str, extra=()) -> list[str]:
    model_args = (
        ["model=edsr_baseline", f"model.preset={p['edsr_preset']}"]
        if model == "edsr"
        else ["model=esrgan", "model.preset=small"]
    )
    return [
        *model_args,
        f"loss={loss}",
        "logger=none",
        f"data.batch_size={p['batch']}",
        f"data.patch_size={p['patch']}",
        f"data.num_workers={p['workers']}",
        f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
        "trainer.enable_model_summary=false",
        f"paths.output_dir={out}",
        *extra,
    ]


class PlainLoop:
    """The same training iteration written as a plain PyTorch loop.

    Same generator architecture and initialisation, batch, loss weights, optimizer settings and
    on-device degradation as the sr-train config; GT batches are drawn once from the same
    datamodule and cycled (data loading is measured separately, in the data section)."""

    def __init__(self, cfg, device: str, n_batches: int = 4, channels_last: bool = False):
        from hydra.utils import instantiate

        from sr_cli.train.build import build_datamodule

        torch.manual_seed(int(cfg.seed))
        self.device = torch.device(device)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.gen = instantiate(cfg.model.generator, _convert_="all").to(
            self.device, memory_format=fmt
        )
        self.opt = instantiate(cfg.optim.generator, _convert_="all")(self.gen.parameters())
        self.deg = instantiate(cfg.degradation, _convert_="all").to(self.device)
        self.terms = {k: v for k, v in cfg.loss.items() if v is not None}
        self.disc = None
        if "gan" in self.terms:
            g = self.terms["gan"]
            self.disc = instantiate(g.discriminator, _convert_="all").to(self.device)
            self.opt_d = instantiate(cfg.optim.discriminator, _convert_="all")(
                self.disc.parameters()
            )
        dm = build_datamodule(cfg, num_workers=0)
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        self.batches = [next(it)["gt"].to(self.device) for _ in range(n_batches)]
        self.rng = torch.Generator(self.device).manual_seed(0)
        self.i = 0

    def _ragan(self, real: torch.Tensor, fake: torch.Tensor, fake_is_real: bool) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits
        one, zero = torch.ones_like(real), torch.zeros_like(real)
        a, b = (one, zero) if fake_is_real else (zero, one)
        return (bce(real - fake.mean(), b) + bce(fake - real.mean(), a)) / 2

    def step(self) -> None:
        gt = self.batches[self.i % len(self.batches)]
        self.i += 1
        with torch.no_grad():
            params = self.deg.sample(gt, generator=self.rng)
            lq = self.deg(gt, params)
        sr = self.gen(lq)
        loss = sr.new_zeros(())
        t = self.terms
        if "l1" in t:
            loss = loss + t["l1"].weight * (sr - gt).abs().mean()
        if "downsample" in t:
            loss = loss + t["downsample"].weight * (self.deg.replay(sr, params) - lq).abs().mean()
        if self.disc is not None:
            self.disc.requires_grad_(False)
            real = self.disc(gt).detach()
            loss = loss + t["gan"].weight * self._ragan(real, self.disc(sr), fake_is_real=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.disc is not None:
            self.disc.requires_grad_(True)
            real, fake = self.disc(gt), self.disc(sr.detach())
            d_loss = self._ragan(real, fake, fake_is_real=False)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

    def run(self, n: int) -> float:
        """Seconds per iteration over ``n`` iterations."""
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        return (time.perf_counter() - t0) / n


def run_real_trainer(cfg, p: dict, pause: Callable[[int], None] | None, rounds: int):
    """Fit with the real sr-train objects (datamodule, SRModule, callbacks, loggers) and a clock."""
    import pytorch_lightning as pl

    from bench.clock import StepClock
    from sr_cli.environment import setup_environment
    from sr_cli.train.build import build_datamodule, build_module, build_trainer

    setup_environment()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, out)
    trainer = build_trainer(cfg, module, out)
    clock = StepClock(warmup=p["warmup"], block=p["block"], rounds=rounds, pause=pause)
    trainer.callbacks.append(clock)
    t0 = time.perf_counter()
    clock.start()
    trainer.fit(module, datamodule=dm)
    total = time.perf_counter() - t0
    return clock, total
