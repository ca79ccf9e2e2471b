"""Adversarial losses. The term owns its discriminator network.

GAN types (``gan_type``):

* ``vanilla``: the non-saturating GAN of Goodfellow et al. (2014), with BCE on logits.
* ``ragan``: the relativistic average GAN (Jolicoeur-Martineau, 2018) used by ESRGAN:
  ``D_Ra(a, b) = sigmoid(C(a) - mean C(b))``; the generator loss uses both real and fake
  terms, each halved.

The discriminator sees a detached SR in its own step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.losses.base import LossInputs, LossTerm

GAN_TYPES = ("vanilla", "ragan")


def _bce(logits: Tensor, target_is_real: bool) -> Tensor:
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_adversarial_loss(fake_logits: Tensor, real_logits: Tensor | None, gan_type: str) -> Tensor:
    """The generator's adversarial loss from discriminator logits.

    ``real_logits`` is needed (detached) by ``ragan`` only.
    """
    if gan_type == "vanilla":
        return _bce(fake_logits, True)
    if gan_type == "ragan":
        if real_logits is None:
            raise ValueError("ragan needs the real logits")
        real = real_logits.detach()
        return 0.5 * (_bce(real - fake_logits.mean(), False) + _bce(fake_logits - real.mean(), True))
    raise ValueError(f"unknown gan_type {gan_type!r}; choose one of {GAN_TYPES}")


def discriminator_adversarial_loss(real_logits: Tensor, fake_logits: Tensor, gan_type: str) -> Tensor:
    """The discriminator's loss; ``fake_logits`` must come from a detached SR."""
    if gan_type == "vanilla":
        return 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))
    if gan_type == "ragan":
        return 0.5 * (
            _bce(real_logits - fake_logits.mean(), True) + _bce(fake_logits - real_logits.mean(), False)
        )
    raise ValueError(f"unknown gan_type {gan_type!r}; choose one of {GAN_TYPES}")


class AdversarialLoss(LossTerm):
    """The adversarial term and its discriminator.

    Args:
        discriminator: the network judging HR patches (instantiated from the config).
        gan_type: ``vanilla`` or ``ragan``.
        weight: generator loss weight (ESRGAN: 5e-3).
        start_step: first iteration with a generator adversarial loss.
        d_start_step: first iteration at which the discriminator is trained.
    """

    needs_discriminator = True

    def __init__(
        self,
        discriminator: nn.Module,
        gan_type: str = "ragan",
        weight: float = 5e-3,
        start_step: int = 0,
        d_start_step: int = 0,
    ) -> None:
        super().__init__(weight, start_step)
        if gan_type not in GAN_TYPES:
            raise ValueError(f"unknown gan_type {gan_type!r}; choose one of {', '.join(GAN_TYPES)}")
        self.discriminator = discriminator
        self.gan_type = gan_type
        self.d_start_step = int(d_start_step)

    def compute(self, inputs: LossInputs) -> Tensor:
        fake = self.discriminator(inputs.sr)
        real = self.discriminator(inputs.gt) if self.gan_type == "ragan" else None
        return generator_adversarial_loss(fake, real, self.gan_type)

    def discriminator_active(self, step: int) -> bool:
        return step >= self.d_start_step

    def discriminator_loss(self, inputs: LossInputs) -> Tensor:
        real = self.discriminator(inputs.gt)
        fake = self.discriminator(inputs.sr.detach())
        return discriminator_adversarial_loss(real, fake, self.gan_type)

    def extra_repr(self) -> str:
        return f"gan_type={self.gan_type}, " + super().extra_repr()
