"""The adversarial-term contract: a new GAN objective with its own discriminator, defined here in
the test folder alone, trains next to the shipped `gan` term without touching the trainer."""

from __future__ import annotations

import torch
from torch import nn

from sr_cli.losses.base import AdversarialTerm, ExtraPass, LossInputs, LossOutput, LossTerm
from sr_cli.train.training import train


class TinyCritic(nn.Module):
    """A two-layer patch critic returning one logit per image."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(channels, 1, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(1, 2, 3))


class LeastSquaresTerm(AdversarialTerm):
    """An LSGAN objective written from scratch against the declared contract."""

    def __init__(self, weight: float = 0.01, start_step: int = 0, d_start_step: int = 1) -> None:
        super().__init__(TinyCritic(), weight, start_step, d_start_step)

    def compute(self, inputs: LossInputs) -> torch.Tensor:
        return (self.discriminator(inputs.sr) - 1).pow(2).mean()

    def discriminator_loss(self, inputs: LossInputs) -> torch.Tensor:
        real = self.discriminator(inputs.gt)
        fake = self.discriminator(inputs.sr)
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


class SeesAllCritics(LossTerm):
    """A term that reads every discriminator by its term name, and asks for an extra pass."""

    seen: list[list[str]] = []

    def compute(self, inputs: LossInputs) -> LossOutput:
        SeesAllCritics.seen.append(sorted(inputs.discriminators))
        half = inputs.lq[..., : inputs.lq.shape[-2] // 2, :]
        sr = inputs.generator(half)
        gt = inputs.gt[..., : sr.shape[-2], :]
        second = LossInputs(sr=sr, gt=gt, lq=half, sr_levels=[sr], step=inputs.step)
        return LossOutput(inputs.sr.new_zeros(()), extra_passes=[ExtraPass(second, ["l1"])])


def test_a_new_adversarial_term_trains_its_own_discriminator(tiny_cfg, val_subset, tmp_path):
    SeesAllCritics.seen.clear()
    cfg = tiny_cfg(
        "loss=[l1,gan]",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
        "trainer.max_steps=3",
        "+loss.lsq._target_=tests.losses.test_contract.LeastSquaresTerm",
        "+loss.spy._target_=tests.losses.test_contract.SeesAllCritics",
        out=tmp_path / "run",
    )
    _, objects = train(cfg)
    module = objects["module"]
    assert sorted(module.adversarial) == ["gan", "lsq"]
    assert not module.automatic_optimization
    # each discriminator has its own optimizer (generator, gan's, lsq's), holding its parameters
    _, opt_gan, opt_lsq = objects["trainer"].optimizers
    d_params = {id(p) for g in opt_lsq.param_groups for p in g["params"]}
    critic = module.losses["lsq"].discriminator
    assert d_params == {id(p) for p in critic.parameters()}
    gan_params = {id(p) for g in opt_gan.param_groups for p in g["params"]}
    assert gan_params == {id(p) for p in module.losses["gan"].discriminator.parameters()}
    assert SeesAllCritics.seen[0] == ["gan", "lsq"]
    logged = objects["trainer"].callback_metrics
    assert "train/loss_lsq_d" in logged and "train/loss_lsq" in logged
    assert "train/loss_l1_aux" in logged  # the extra pass was scored by the l1 term
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["sr_cli"]["adversarial_terms"] == ["gan", "lsq"]
    assert any(k.startswith("losses.lsq.discriminator.") for k in ckpt["state_dict"])


def test_d_start_step_is_respected(tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
        "trainer.max_steps=2",
        "+loss.lsq._target_=tests.losses.test_contract.LeastSquaresTerm",
        "+loss.lsq.d_start_step=5",
        out=tmp_path / "late",
    )
    _, objects = train(cfg)
    critic = objects["module"].losses["lsq"].discriminator
    # never trained before d_start_step: the critic's Adam state is empty
    opt_d = objects["trainer"].optimizers[1]
    assert all(not opt_d.state.get(p) for p in critic.parameters())


def test_the_stage_runner_asks_the_terms(tiny_cfg):
    from sr_cli.train.stages import _adversarial_term

    cfg = tiny_cfg("loss=[l1]", "+loss.lsq._target_=tests.losses.test_contract.LeastSquaresTerm")
    assert _adversarial_term(cfg) == "lsq"
