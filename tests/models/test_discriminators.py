"""Discriminators: logits, feature lists, gradients, key layouts and receptive field."""

from __future__ import annotations

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.models.discriminators import (
    PatchGANDiscriminator,
    UNetDiscriminatorSN,
    VGGStyleDiscriminator,
)

CASES = [
    (lambda: VGGStyleDiscriminator(input_size=32, num_feat=8), (2, 3, 32, 32), (2, 1), 5),
    (lambda: UNetDiscriminatorSN(num_feat=8), (2, 3, 33, 27), (2, 1, 33, 27), 9),
    (lambda: PatchGANDiscriminator(num_feat=8), (2, 3, 64, 64), (2, 1, 6, 6), 4),
]


@pytest.mark.parametrize(("make", "in_shape", "out_shape", "n_feats"), CASES)
def test_logits_and_features(make, in_shape, out_shape, n_feats):
    torch.manual_seed(0)
    d = make()
    x = torch.rand(in_shape, requires_grad=True)
    logits = d(x)
    assert logits.shape == out_shape
    logits2, feats = d(x, return_features=True)
    assert logits2.shape == out_shape
    assert isinstance(feats, list) and len(feats) == n_feats
    assert all(isinstance(f, torch.Tensor) and f.shape[0] == in_shape[0] for f in feats)
    (logits2.mean() + sum(f.mean() for f in feats)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unet_discriminator_keys_follow_real_esrgan():
    keys = set(UNetDiscriminatorSN().state_dict())
    assert {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"} <= keys
    for i in range(1, 9):
        assert {f"conv{i}.weight_orig", f"conv{i}.weight_u", f"conv{i}.weight_v"} <= keys


def test_unet_discriminator_without_skips():
    d = UNetDiscriminatorSN(num_feat=8, skip_connection=False)
    assert d(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)


def test_patchgan_receptive_field_is_70():
    d = PatchGANDiscriminator(num_feat=8).eval()  # eval: batch norm does not mix positions
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_patchgan_params_and_options():
    from sr_cli.models.common import count_parameters

    # CycleGAN's basic D (instance norm, 3 channels) prints 2.765 M parameters.
    assert count_parameters(PatchGANDiscriminator(norm="instance")) == 2_764_737
    with pytest.raises(ConfigError):
        PatchGANDiscriminator(norm="group")
