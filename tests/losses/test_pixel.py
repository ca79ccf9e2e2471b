"""Pixel losses: known values on tiny tensors, functional == module term."""

from __future__ import annotations

import math

import pytest
import torch

from sr_cli.losses.pixel import (
    CharbonnierLoss,
    L1Loss,
    MSELoss,
    SmoothL1Loss,
    charbonnier_loss,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)

PRED = torch.tensor([[[[0.0, 1.0], [2.0, 0.5]]]])
TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # differences: -1, 0, 2, 0.5


def test_l1_known_value() -> None:
    assert l1_loss(PRED, TARGET).item() == pytest.approx((1 + 0 + 2 + 0.5) / 4)
    assert l1_loss(PRED, TARGET, reduction="sum").item() == pytest.approx(3.5)


def test_mse_known_value() -> None:
    assert mse_loss(PRED, TARGET).item() == pytest.approx((1 + 0 + 4 + 0.25) / 4)


def test_charbonnier_known_value() -> None:
    eps = 0.5
    expected = sum(math.sqrt(d * d + eps * eps) for d in (1, 0, 2, 0.5)) / 4
    assert charbonnier_loss(PRED, TARGET, eps=eps).item() == pytest.approx(expected)
    # At zero difference the penalty is eps, not 0.
    assert charbonnier_loss(TARGET, TARGET, eps=1e-3).item() == pytest.approx(1e-3)


def test_smooth_l1_known_value() -> None:
    beta = 1.0  # |d| < 1: 0.5 d^2 / beta; else |d| - 0.5 beta
    expected = (0.5 + 0.0 + 1.5 + 0.5 * 0.25) / 4
    assert smooth_l1_loss(PRED, TARGET, beta=beta).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("term", "fn"),
    [
        (L1Loss(), l1_loss),
        (MSELoss(), mse_loss),
        (CharbonnierLoss(eps=1e-3), lambda p, t: charbonnier_loss(p, t, 1e-3)),
        (SmoothL1Loss(beta=0.01), lambda p, t: smooth_l1_loss(p, t, 0.01)),
    ],
    ids=["l1", "l2", "charbonnier", "smooth_l1"],
)
def test_term_matches_function(term, fn, make_inputs) -> None:
    out = term(make_inputs(PRED, TARGET))
    assert torch.equal(out.loss, fn(PRED, TARGET))


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
