"""LDL artifact map: values against a direct per-pixel computation and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.losses.ldl import LDLLoss, artifact_map, ldl_loss, local_variance


def loop_local_variance(r: np.ndarray, k: int) -> np.ndarray:
    """Direct per-pixel window variance with reflect padding (numpy, ddof=1)."""
    p = (k - 1) // 2
    padded = np.pad(r, p, mode="reflect")
    out = np.empty_like(r)
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            out[i, j] = padded[i : i + k, j : j + k].var(ddof=1)
    return out


def test_local_variance_matches_a_direct_loop():
    r = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    ref = loop_local_variance(r[0, 0].numpy(), 5)
    np.testing.assert_allclose(local_variance(r, 5)[0, 0].numpy(), ref, rtol=1e-10)


def test_artifact_map_and_loss_known_values():
    gt = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    # a constant residual has no local variance: the map and the loss are 0
    assert ldl_loss(gt + 0.3, gt).item() == 0.0
    # a residual of d on one pixel (first channel): the map follows the definition
    sr = gt.clone()
    sr[0, 0, 4, 4] = 0.5
    r = np.zeros((8, 8))
    r[4, 4] = 0.5
    expected = r.var(ddof=1) ** 0.2 * loop_local_variance(r, 7)
    m = artifact_map(sr, gt)[0, 0].numpy()
    np.testing.assert_allclose(m, expected, rtol=1e-10)
    # only the pixel with a residual contributes: mean |M * 0.5| over 3 * 64 values
    assert ldl_loss(sr, gt).item() == pytest.approx(expected[4, 4] * 0.5 / (3 * 64))


def test_ema_refinement_zeroes_pixels_the_ema_gets_worse():
    gt = torch.zeros(1, 3, 8, 8)
    sr = torch.rand(1, 3, 8, 8) * 0.1
    worse_ema = sr * 2
    assert ldl_loss(sr, gt, sr_ema=worse_ema).item() == 0.0
    assert ldl_loss(sr, gt, sr_ema=gt).item() == pytest.approx(ldl_loss(sr, gt).item())


def test_gradient_flows_to_sr_only_through_the_l1():
    gt = torch.zeros(1, 3, 8, 8)
    sr = (torch.rand(1, 3, 8, 8) * 0.2).requires_grad_()
    ldl_loss(sr, gt).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_even_kernel_is_a_config_error():
    with pytest.raises(ConfigError, match="kernel_size"):
        LDLLoss(kernel_size=4)


def test_the_trainer_passes_the_ema_generator_for_refinement():
    """LossInputs.ema_generator (set by the trainer with ema.enabled=true) refines the map."""
    import torch

    from sr_cli.losses.base import LossInputs
    from sr_cli.losses.ldl import LDLLoss

    gt = torch.rand(1, 3, 16, 16)
    sr = gt + 0.1 * torch.randn_like(gt)
    lq = gt[..., ::2, ::2]
    plain = LossInputs(sr=sr, gt=gt, lq=lq, sr_levels=[sr], scale=2)
    worse = LossInputs(
        sr=sr,
        gt=gt,
        lq=lq,
        sr_levels=[sr],
        scale=2,
        ema_generator=lambda x: 2 * torch.nn.functional.interpolate(x, scale_factor=2) + 5,
    )
    assert LDLLoss()(worse).loss.item() == 0.0  # the EMA is worse everywhere: nothing to fix
    assert LDLLoss()(plain).loss.item() > 0.0
