"""Adversarial losses: known values on hand-made logits, analytic penalties, feature matching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.losses.adversarial import (
    GAN_TYPES,
    AdversarialLoss,
    FeatureMatchingLoss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    gradient_penalty,
    r1_penalty,
)
from sr_cli.models.discriminators import VGGStyleDiscriminator


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# BCE with logits: target 1 -> softplus(-z); target 0 -> softplus(z).
REAL = torch.tensor([1.0, 3.0])
FAKE = torch.tensor([0.0, 2.0])
# (gan_type, expected generator loss, expected discriminator loss) for REAL/FAKE above.
KNOWN = [
    (
        "vanilla",
        (softplus(0) + softplus(-2)) / 2,
        0.5 * ((softplus(-1) + softplus(-3)) / 2 + (softplus(0) + softplus(2)) / 2),
    ),
    # ragan: real - mean(fake) = [0, 2]; fake - mean(real) = [-2, 0].
    ("ragan", (softplus(0) + softplus(2)) / 2, (softplus(0) + softplus(-2)) / 2),
    ("lsgan", 0.5 * (1 + 1) / 2, 0.5 * ((0 + 4) / 2 + (0 + 4) / 2)),
    ("hinge", -1.0, (0 + 0) / 2 + (1 + 3) / 2),
    ("wgan_gp", -1.0, 1.0 - 2.0),
]


@pytest.mark.parametrize(("gan_type", "g_expected", "d_expected"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_values(gan_type: str, g_expected: float, d_expected: float) -> None:
    g = generator_adversarial_loss(FAKE, REAL, gan_type)
    d = discriminator_adversarial_loss(REAL, FAKE, gan_type)
    assert g.item() == pytest.approx(g_expected, rel=1e-6)
    assert d.item() == pytest.approx(d_expected, rel=1e-6)


def test_known_values_cover_every_type() -> None:
    assert {k[0] for k in KNOWN} == set(GAN_TYPES)


def test_hinge_margin_and_ragan_needs_real() -> None:
    # Beyond the margin the hinge discriminator loss is exactly 0.
    assert discriminator_adversarial_loss(torch.tensor([1.5]), torch.tensor([-2.0]), "hinge") == 0
    with pytest.raises(ValueError, match="real logits"):
        generator_adversarial_loss(FAKE, None, "ragan")
    with pytest.raises(ValueError, match="gan_type"):
        generator_adversarial_loss(FAKE, REAL, "wgan")


class LinearD(nn.Module):
    """``D(x) = <w, x>`` per sample: its input gradient is ``w`` everywhere."""

    def __init__(self, norm: float, shape=(3, 4, 4)) -> None:
        super().__init__()
        w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x: Tensor, return_features: bool = False):
        logits = (x * self.w).flatten(1).sum(1, keepdim=True)
        return (logits, [x * self.w]) if return_features else logits


class QuadraticD(nn.Module):
    """``D(x) = a * ||x||^2`` per sample: its input gradient is ``2 a x``."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x: Tensor, return_features: bool = False):
        logits = self.a * x.flatten(1).pow(2).sum(1, keepdim=True)
        return (logits, [x, 2 * x]) if return_features else logits


def test_gradient_penalty_zero_for_unit_norm_linear_d() -> None:
    real, fake = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4)
    assert gradient_penalty(LinearD(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_linear_d_and_its_gradient() -> None:
    d = LinearD(3.0)
    gp = gradient_penalty(d, torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4))
    assert gp.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-5)
    # The penalty trains D: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    gp.backward()
    torch.testing.assert_close(d.w.grad, 2 * (3.0 - 1.0) * d.w.detach() / 3.0)


def test_gradient_penalty_quadratic_d_at_known_point() -> None:
    # real == fake, so every interpolate is x itself: GP = mean (||2 a x|| - 1)^2.
    x = torch.rand(3, 3, 4, 4)
    a = 0.25
    expected = ((2 * a * x.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gradient_penalty(QuadraticD(a), x, x.clone()).item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    # Fixed alpha: x_hat = 0.5 (x + y).
    y = torch.rand(3, 3, 4, 4)
    alpha = torch.full((3, 1, 1, 1), 0.5)
    mid = 0.5 * (x + y)
    expected = ((2 * a * mid.flatten(1).norm(dim=1) - 1) ** 2).mean()
    got = gradient_penalty(QuadraticD(a), x, y, alpha=alpha)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_r1_penalty_quadratic_d_analytic() -> None:
    x = torch.rand(2, 3, 4, 4)
    d = QuadraticD(0.5)
    r1 = r1_penalty(d, x)
    norms = x.flatten(1).pow(2).sum(1)  # ||x||^2 per sample
    assert r1.item() == pytest.approx((4 * 0.5**2 * norms).mean().item(), rel=1e-5)
    r1.backward()  # d/da 4 a^2 ||x||^2 = 8 a ||x||^2
    assert d.a.grad.item() == pytest.approx((8 * 0.5 * norms).mean().item(), rel=1e-5)


def test_term_discriminator_loss_adds_r1_and_gp(make_inputs) -> None:
    gt, sr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4, requires_grad=True)
    inputs = make_inputs(sr, gt, scale=1)
    # Hinge + R1 (gamma = 2) with the quadratic D: base + gamma / 2 * mean 4 a^2 ||gt||^2.
    a = 0.1
    term = AdversarialLoss(QuadraticD(a), gan_type="hinge", r1_weight=2.0)
    real_logits = a * gt.flatten(1).pow(2).sum(1, keepdim=True)
    fake_logits = a * sr.detach().flatten(1).pow(2).sum(1, keepdim=True)
    base = discriminator_adversarial_loss(real_logits, fake_logits, "hinge")
    r1 = (4 * a**2 * gt.flatten(1).pow(2).sum(1)).mean()
    assert term.discriminator_loss(inputs).item() == pytest.approx((base + r1).item(), rel=1e-5)
    # WGAN-GP with a linear D of norm 2: critic loss + 10 * (2 - 1)^2.
    d = LinearD(2.0)
    term = AdversarialLoss(d, gan_type="wgan_gp")
    with torch.no_grad():
        critic = d(sr).mean() - d(gt).mean()
    assert term.discriminator_loss(inputs).item() == pytest.approx(critic.item() + 10.0, rel=1e-5)
    assert term.gp_weight == 10.0 and term.r1_weight == 0.0


def test_discriminator_step_sees_detached_sr(make_inputs) -> None:
    sr = torch.rand(2, 3, 4, 4, requires_grad=True)
    term = AdversarialLoss(LinearD(1.0), gan_type="wgan_gp", r1_weight=1.0)
    term.discriminator_loss(make_inputs(sr, torch.rand(2, 3, 4, 4), scale=1)).backward()
    assert sr.grad is None
    assert term.discriminator.w.grad is not None


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_term_with_vgg_discriminator(gan_type: str, make_inputs) -> None:
    torch.manual_seed(0)
    disc = VGGStyleDiscriminator(input_size=32, num_feat=4)
    term = AdversarialLoss(disc, gan_type=gan_type, r1_weight=1.0)
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    inputs = make_inputs(sr, torch.rand(2, 3, 32, 32))
    g = term(inputs).loss
    g.backward()
    assert torch.isfinite(g) and sr.grad.abs().sum() > 0
    disc.zero_grad()
    d = term.discriminator_loss(inputs.detached())
    d.backward()
    assert torch.isfinite(d)
    assert all(p.grad is not None for p in disc.parameters())


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="gan_type"):
        AdversarialLoss(LinearD(1.0), gan_type="wgan")
    with pytest.raises(ConfigError, match="r1_weight"):
        AdversarialLoss(LinearD(1.0), r1_weight=-1)


def test_feature_matching_needs_discriminator(make_inputs) -> None:
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ConfigError, match=r"gan.*loss=l1\+gan\+feature_matching"):
        FeatureMatchingLoss()(make_inputs(x, x, scale=1))


def test_feature_matching_known_value_and_gradients(make_inputs) -> None:
    # QuadraticD returns features [x, 2x]: mean over layers of mean |.| = 1.5 mean |sr - gt|.
    sr = torch.rand(2, 3, 4, 4, requires_grad=True)
    gt = torch.rand(2, 3, 4, 4, requires_grad=True)
    term = FeatureMatchingLoss()
    value = term(make_inputs(sr, gt, scale=1, discriminator=QuadraticD(1.0))).loss
    assert value.item() == pytest.approx(1.5 * (sr - gt).abs().mean().item(), rel=1e-6)
    value.backward()
    assert sr.grad.abs().sum() > 0 and gt.grad is None  # GT features are detached

    weighted = FeatureMatchingLoss(layer_weights=[1.0, 0.0])
    value = weighted(make_inputs(sr, gt, scale=1, discriminator=QuadraticD(1.0))).loss
    assert value.item() == pytest.approx((sr - gt).abs().mean().item(), rel=1e-6)
    with pytest.raises(ConfigError, match="layer_weights"):
        FeatureMatchingLoss(layer_weights=[1.0])(
            make_inputs(sr, gt, scale=1, discriminator=QuadraticD(1.0))
        )
    assert feature_matching_loss([torch.ones(2)], [torch.ones(2)]).item() == 0.0


def test_feature_matching_with_vgg_discriminator(make_inputs) -> None:
    disc = VGGStyleDiscriminator(input_size=32, num_feat=4).eval()
    gt = torch.rand(2, 3, 32, 32)
    term = FeatureMatchingLoss()
    assert term(make_inputs(gt.clone(), gt, discriminator=disc)).loss.item() == 0.0
    assert term(make_inputs(torch.rand(2, 3, 32, 32), gt, discriminator=disc)).loss.item() > 0
