"""Adversarial losses. The term owns its discriminator network.

GAN types (``gan_type``), with ``r``/``f`` the discriminator's logits on real (GT) and fake
(SR) patches:

* ``vanilla``: the non-saturating GAN of Goodfellow et al. (2014), with BCE on logits.
  ``L_G = -log sigmoid(f)``; ``L_D = 1/2 [-log sigmoid(r) - log(1 - sigmoid(f))]``.
* ``ragan``: the relativistic average GAN (Jolicoeur-Martineau, 2018) used by ESRGAN:
  ``D_Ra(a, b) = sigmoid(C(a) - mean C(b))``; the generator loss uses both real and fake
  terms, each halved.
* ``lsgan``: least squares GAN (Mao et al., ICCV 2017) with targets ``a=0, b=c=1``:
  ``L_G = 1/2 mean (f - 1)^2``; ``L_D = 1/2 [mean (r - 1)^2 + mean f^2]``.
* ``hinge``: the hinge loss (Lim and Ye, 2017; Miyato et al., ICLR 2018):
  ``L_G = -mean f``; ``L_D = mean relu(1 - r) + mean relu(1 + f)``.
* ``wgan_gp``: Wasserstein GAN with gradient penalty (Gulrajani et al., NeurIPS 2017):
  ``L_G = -mean f``; ``L_D = mean f - mean r + gp_weight * mean (||grad D(x_hat)||_2 - 1)^2``
  with ``x_hat`` a random interpolate of real and fake. The penalty is per sample, so the
  discriminator should not use batch norm (the VGG-style one does); ``conf/loss/wgan_gp.yaml``
  uses a PatchGAN without normalization. For a patch discriminator the gradient is that of the
  sum of its logits per sample.

Optionally, an R1 penalty (Mescheder et al., ICML 2018) is added to any type's discriminator
loss: ``r1_weight / 2 * mean ||grad D(real)||^2``.

The discriminator sees a detached SR in its own step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.losses.base import AdversarialTerm, LossInputs, LossTerm

GAN_TYPES = ("vanilla", "ragan", "lsgan", "hinge", "wgan_gp")


def _bce(logits: Tensor, target_is_real: bool) -> Tensor:
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _unknown(gan_type: str) -> ValueError:
    return ValueError(f"unknown gan_type {gan_type!r}; choose one of {', '.join(GAN_TYPES)}")


def generator_adversarial_loss(
    fake_logits: Tensor, real_logits: Tensor | None, gan_type: str
) -> Tensor:
    """The generator's adversarial loss from discriminator logits.

    ``real_logits`` is needed (detached) by ``ragan`` only.

    Example:
        >>> generator_adversarial_loss(torch.tensor([0.0, 2.0]), None, "hinge")
        tensor(-1.)
    """
    if gan_type == "vanilla":
        return _bce(fake_logits, True)
    if gan_type == "ragan":
        if real_logits is None:
            raise ValueError("ragan needs the real logits")
        real = real_logits.detach()
        return 0.5 * (
            _bce(real - fake_logits.mean(), False) + _bce(fake_logits - real.mean(), True)
        )
    if gan_type == "lsgan":
        return 0.5 * ((fake_logits - 1) ** 2).mean()
    if gan_type in ("hinge", "wgan_gp"):
        return -fake_logits.mean()
    raise _unknown(gan_type)


def discriminator_adversarial_loss(
    real_logits: Tensor, fake_logits: Tensor, gan_type: str
) -> Tensor:
    """The discriminator's loss; ``fake_logits`` must come from a detached SR.

    For ``wgan_gp`` this is the Wasserstein critic loss only; add :func:`gradient_penalty`.

    Example:
        >>> discriminator_adversarial_loss(torch.tensor([2.0]), torch.tensor([0.0]), "hinge")
        tensor(1.)
    """
    if gan_type == "vanilla":
        return 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))
    if gan_type == "ragan":
        return 0.5 * (
            _bce(real_logits - fake_logits.mean(), True)
            + _bce(fake_logits - real_logits.mean(), False)
        )
    if gan_type == "lsgan":
        return 0.5 * (((real_logits - 1) ** 2).mean() + (fake_logits**2).mean())
    if gan_type == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if gan_type == "wgan_gp":
        return fake_logits.mean() - real_logits.mean()
    raise _unknown(gan_type)


def _input_gradient(discriminator: nn.Module, x: Tensor) -> Tensor:
    """``d sum(D(x)) / dx`` with a graph, so a penalty on it trains D (``(B, ...)``)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = discriminator(x)
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad


def gradient_penalty(
    discriminator: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """WGAN-GP penalty ``mean (||grad_x D(x_hat)||_2 - 1)^2`` (unweighted).

    ``x_hat = alpha * real + (1 - alpha) * fake`` with ``alpha ~ U(0, 1)`` per sample, unless
    ``alpha`` (shape ``(B, 1, 1, 1)``) is given.

    Shape:
        ``real``, ``fake``: ``(B, C, H, W)``; ``D`` maps a sample to one logit (``(B,)`` or
        ``(B, 1)``; a patch map is summed per sample).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ"
        )
    if alpha is None:
        alpha = torch.rand(
            real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype
        )
    interpolates = alpha * real.detach() + (1 - alpha) * fake.detach()
    grad = _input_gradient(discriminator, interpolates)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """R1 penalty ``mean ||grad_x D(x)||_2^2`` on real samples (unweighted, without the 1/2).

    Shape:
        ``real``: ``(B, C, H, W)``.
    """
    grad = _input_gradient(discriminator, real)
    return grad.flatten(1).pow(2).sum(1).mean()


class AdversarialLoss(AdversarialTerm):
    """The adversarial term and its discriminator.

    Args:
        discriminator: the network judging HR patches (instantiated from the config).
        gan_type: one of ``vanilla``, ``ragan``, ``lsgan``, ``hinge``, ``wgan_gp``.
        weight: generator loss weight (ESRGAN: 5e-3).
        start_step: first iteration with a generator adversarial loss.
        d_start_step: first iteration at which the discriminator is trained.
        gp_weight: WGAN-GP penalty weight (10 in the paper); used by ``wgan_gp`` only.
        r1_weight: R1 penalty ``gamma`` (0 = off); the D loss gains ``gamma/2 * E||grad D(GT)||^2``.

    The discriminator loss logs nothing itself; it returns one scalar.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        gan_type: str = "ragan",
        weight: float = 5e-3,
        start_step: int = 0,
        d_start_step: int = 0,
        gp_weight: float = 10.0,
        r1_weight: float = 0.0,
    ) -> None:
        super().__init__(discriminator, weight, start_step, d_start_step)
        if gan_type not in GAN_TYPES:
            raise ConfigError(
                f"unknown gan_type {gan_type!r}; choose one of {', '.join(GAN_TYPES)}"
            )
        if gp_weight < 0 or r1_weight < 0:
            raise ConfigError(f"gp_weight and r1_weight must be >= 0, got {gp_weight}, {r1_weight}")
        self.gan_type = gan_type
        self.gp_weight = float(gp_weight)
        self.r1_weight = float(r1_weight)

    def compute(self, inputs: LossInputs) -> Tensor:
        fake = self.discriminator(inputs.sr)
        real = self.discriminator(inputs.gt) if self.gan_type == "ragan" else None
        return generator_adversarial_loss(fake, real, self.gan_type)

    def discriminator_loss(self, inputs: LossInputs) -> Tensor:
        sr = inputs.sr.detach()
        real = self.discriminator(inputs.gt)
        fake = self.discriminator(sr)
        loss = discriminator_adversarial_loss(real, fake, self.gan_type)
        if self.gan_type == "wgan_gp" and self.gp_weight > 0:
            loss = loss + self.gp_weight * gradient_penalty(self.discriminator, inputs.gt, sr)
        if self.r1_weight > 0:
            loss = loss + 0.5 * self.r1_weight * r1_penalty(self.discriminator, inputs.gt)
        return loss

    def extra_repr(self) -> str:
        extra = f"gan_type={self.gan_type}, "
        if self.gan_type == "wgan_gp":
            extra += f"gp_weight={self.gp_weight}, "
        if self.r1_weight:
            extra += f"r1_weight={self.r1_weight}, "
        return extra + super().extra_repr()


class FeatureMatchingLoss(LossTerm):
    """L1 between the discriminator's intermediate features on SR and on GT (GT detached).

    Feature matching (Salimans et al., NeurIPS 2016; pix2pixHD, Wang et al., CVPR 2018) gives
    the generator a denser signal than the logit alone. It uses the adversarial term's
    discriminator (``inputs.discriminators``), so combine it with a GAN term:
    ``loss=l1+gan+feature_matching``.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        layer_weights: one weight per discriminator feature map, shallow to deep; ``None``
            averages all of them equally.
        term: the adversarial term whose discriminator is used (``None``: the first one).

    Shape:
        ``inputs.sr``, ``inputs.gt``: what the discriminator accepts.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        layer_weights: list[float] | None = None,
        term: str | None = None,
    ) -> None:
        super().__init__(weight, start_step)
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.term = term

    def compute(self, inputs: LossInputs) -> Tensor:
        if self.term is not None:
            if self.term not in inputs.discriminators:
                raise ConfigError(
                    f"feature_matching.term={self.term!r} is not an adversarial term of this run; "
                    f"adversarial terms: {', '.join(inputs.discriminators) or 'none'}"
                )
            disc = inputs.discriminators[self.term]
        else:
            disc = inputs.discriminator
        if disc is None:
            raise ConfigError(
                "feature_matching needs a discriminator but there is none: combine it with an "
                "adversarial term such as gan, e.g. loss=l1+gan+feature_matching"
            )
        _, fake_feats = disc(inputs.sr, return_features=True)
        with torch.no_grad():
            _, real_feats = disc(inputs.gt.detach(), return_features=True)
        return feature_matching_loss(fake_feats, real_feats, self.layer_weights)

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, " + super().extra_repr()


def feature_matching_loss(
    fake_features: list[Tensor],
    real_features: list[Tensor],
    layer_weights: list[float] | None = None,
) -> Tensor:
    """``sum_l w_l * mean |phi_l(fake) - phi_l(real)|`` with ``w_l = 1/L`` by default.

    Example:
        >>> feature_matching_loss([torch.ones(2), torch.zeros(2)], [torch.zeros(2), torch.zeros(2)])
        tensor(0.5000)
    """
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(
            f"feature_matching_loss: got {len(fake_features)} fake and {len(real_features)} real "
            "feature maps; need the same non-zero number"
        )
    if layer_weights is None:
        layer_weights = [1.0 / len(fake_features)] * len(fake_features)
    if len(layer_weights) != len(fake_features):
        raise ConfigError(
            f"feature_matching.layer_weights has {len(layer_weights)} entries but the discriminator "
            f"returns {len(fake_features)} feature maps"
        )
    terms = []
    for w, fake, real in zip(layer_weights, fake_features, real_features, strict=True):
        if fake.shape != real.shape:
            raise ValueError(
                f"feature_matching_loss: feature shapes {tuple(fake.shape)} and {tuple(real.shape)} differ"
            )
        terms.append(w * (fake - real.detach()).abs().mean())
    return torch.stack(terms).sum()
