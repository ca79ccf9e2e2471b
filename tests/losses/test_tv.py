"""Total variation: known values."""

from __future__ import annotations

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.losses.tv import TVLoss, tv_loss

# Vertical differences: 2, 2; horizontal differences: 1, 1.
X = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])


def test_l1_known_value() -> None:
    assert tv_loss(X).item() == pytest.approx(2.0 + 1.0)
    assert tv_loss(X, reduction="sum").item() == pytest.approx(4.0 + 2.0)


def test_l2_known_value() -> None:
    assert tv_loss(X, norm="l2").item() == pytest.approx(4.0 + 1.0)


def test_constant_image_is_zero_and_per_image_reduction() -> None:
    batch = torch.cat([torch.full_like(X, 0.3), X])
    assert torch.allclose(tv_loss(batch, reduction="none"), torch.tensor([0.0, 3.0]))


def test_checkerboard_3x3() -> None:
    # Every neighbour differs by 1: 6 vertical and 6 horizontal pairs, all |d| = 1.
    board = (torch.arange(9).reshape(1, 1, 3, 3) % 2).float()
    assert tv_loss(board).item() == pytest.approx(2.0)


def test_term_uses_sr_only_and_has_gradient(make_inputs) -> None:
    sr = X.clone().requires_grad_(True)
    out = TVLoss(norm="l1")(make_inputs(sr, torch.zeros_like(X), scale=1))
    assert out.loss.item() == pytest.approx(3.0)
    out.loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2x2"):
        tv_loss(torch.zeros(1, 1, 1, 4))
    with pytest.raises(ConfigError, match="norm"):
        TVLoss(norm="l3")
