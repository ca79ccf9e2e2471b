"""Every conf/loss/*.yaml instantiates with hydra and its term runs on a tiny LossInputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sr_cli.losses.base import LossTerm
from sr_cli.models.discriminators import VGGStyleDiscriminator

ROOT = Path(__file__).resolve().parents[2]
LOSS_CONFS = sorted((ROOT / "conf" / "loss").glob("*.yaml"))
PATCH, SCALE = 32, 2


def compose(path: Path) -> OmegaConf:
    """The loss file merged under a small root config providing the interpolated keys."""
    root = OmegaConf.create(
        {"scale": SCALE, "seed": 0, "data": {"patch_size": PATCH, "scale": SCALE}}
    )
    return OmegaConf.merge(root, OmegaConf.load(path))


def test_there_are_loss_configs() -> None:
    names = {p.stem for p in LOSS_CONFS}
    expected = {"l1", "l2", "charbonnier", "smooth_l1", "perceptual", "texture", "tv", "gan"}
    expected |= {"lsgan", "hinge_gan", "wgan_gp", "vanilla_gan", "feature_matching"}
    expected |= {"fft", "focal_frequency", "downsample"}
    assert expected <= names


@pytest.mark.parametrize("path", LOSS_CONFS, ids=[p.stem for p in LOSS_CONFS])
def test_loss_config_instantiates_and_runs(
    path: Path, vgg_cache, make_inputs, request: pytest.FixtureRequest
) -> None:
    cfg = compose(path)
    name = path.stem
    assert name in cfg, f"{path.name} must nest its term under the key {name!r}"
    node = cfg[name]
    if "checkpoint" in node and node.checkpoint is None:  # disc_perceptual: a trained GAN run
        node.checkpoint = str(request.getfixturevalue("gan_checkpoint"))
    assert "weight" in node and "_target_" in node

    torch.manual_seed(0)
    term = instantiate(node)  # perceptual/texture read the fake VGG19 from the hub cache
    assert isinstance(term, LossTerm)
    assert term.weight == node.weight and term.start_step == node.get("start_step", 0)

    gt = torch.rand(2, 3, PATCH, PATCH)
    sr = torch.rand(2, 3, PATCH, PATCH, requires_grad=True)
    degradation = instantiate(
        OmegaConf.load(ROOT / "conf" / "degradation" / "bicubic.yaml"), scale=SCALE
    )
    # What the trainer passes: the adversarial term's own discriminator (or, for terms that
    # borrow one such as feature_matching, the discriminator of the gan term they are mixed with).
    disc = (
        term.discriminator if term.needs_discriminator else VGGStyleDiscriminator(PATCH, num_feat=8)
    )
    # A tiny generator with one parameter, for terms that run the generator again.
    gain = torch.ones((), requires_grad=True)

    def generator(x: torch.Tensor) -> torch.Tensor:
        return gain * torch.nn.functional.interpolate(x, scale_factor=SCALE, mode="bilinear")

    inputs = make_inputs(
        sr, gt, scale=SCALE, degradation=degradation, discriminator=disc, generator=generator
    )
    inputs.lq = degradation(gt)

    out = term(inputs)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    (term.weight * out.loss).backward()
    if name == "translational":  # compares two fresh generator passes, not `sr`
        assert gain.grad is not None and torch.isfinite(gain.grad)
    else:
        assert sr.grad is not None and torch.isfinite(sr.grad).all()

    if term.needs_discriminator:
        d_loss = term.discriminator_loss(inputs.detached())
        assert d_loss.dim() == 0 and torch.isfinite(d_loss)
        d_loss.backward()
