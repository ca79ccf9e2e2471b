"""optim=adan: pytorch-optimizer's Adan follows the authors' algorithm, step by step.

The reference below is Algorithm 1 of Xie et al. ("Adan: Adaptive Nesterov Momentum Algorithm
for Faster Optimizing Deep Models", TPAMI 2024) as the authors' code runs it: running averages
started at zero with bias correction, the first gradient difference taken as zero, and the
proximal weight decay ``theta / (1 + lr * wd)``. It is written here in float64 NumPy with the
gradient in closed form, so it shares nothing with the optimizer it checks.

adan-pytorch 0.1.0 (the package optim=adan used before) differs by design in one place: its
first step updates no running average, so it moves the weights by weight decay only, and its
bias correction counts that step. ``skip_first=True`` models exactly that, and reproduces the
numbers adan-pytorch 0.1.0 gave on the same problem (recorded below).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

A = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])
B = np.array([1.0, -1.0, 0.5])
X0 = np.array([0.3, -0.7])
LR, WD, EPS = 0.05, 0.02, 1e-8
BETAS = (0.98, 0.92, 0.99)

#: adan-pytorch 0.1.0, ``Adan([p], lr=0.05, betas=(0.02, 0.08, 0.01), weight_decay=0.02)`` on
#: :func:`loss` from :data:`X0` in float64: the weights after steps 1..6.
ADAN_PYTORCH_0_1_0 = [
    [0.2997002997002997, -0.6993006993006994],
    [0.2638143181354374, -0.6630167722900496],
    [0.22274059514192696, -0.6217342024507331],
    [0.17950773113474716, -0.5785468562106552],
    [0.1352742864066375, -0.5347613108415342],
    [0.0906889386632696, -0.49125656172990784],
]


def loss(x: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||A x - b||^2 + 0.1 * sum(x^4)``: curved enough that every step differs."""
    a, b = torch.tensor(A, dtype=x.dtype), torch.tensor(B, dtype=x.dtype)
    return 0.5 * (a @ x - b).pow(2).sum() + 0.1 * x.pow(4).sum()


def grad(x: np.ndarray) -> np.ndarray:
    return A.T @ (A @ x - B) + 0.4 * x**3


def reference_adan(steps: int, skip_first: bool = False) -> list[np.ndarray]:
    """The weights after each of ``steps`` Adan steps on :func:`loss` (see the module doc)."""
    b1, b2, b3 = BETAS
    x = X0.copy()
    m, v, n = np.zeros(2), np.zeros(2), np.zeros(2)
    prev = None
    out = []
    for k in range(1, steps + 1):
        g = grad(x)
        if skip_first and k == 1:
            x = x / (1 + LR * WD)
        else:
            diff = np.zeros(2) if prev is None else g - prev
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * diff
            n = b3 * n + (1 - b3) * (g + b2 * diff) ** 2
            denom = np.sqrt(n / (1 - b3**k)) + EPS
            step = m / (1 - b1**k) + b2 * v / (1 - b2**k)
            x = (x - LR * step / denom) / (1 + LR * WD)
        prev = g
        out.append(x.copy())
    return out


def run(optimizer_factory, steps: int, dtype=torch.float64) -> list[np.ndarray]:
    p = torch.nn.Parameter(torch.tensor(X0, dtype=dtype))
    opt = optimizer_factory([p])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss(p).backward()
        opt.step()
        out.append(p.detach().double().numpy().copy())
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pytorch_optimizer_adan_is_the_authors_algorithm(dtype):
    from pytorch_optimizer import Adan

    got = run(lambda ps: Adan(ps, lr=LR, betas=BETAS, weight_decay=WD, eps=EPS), 6, dtype)
    want = reference_adan(6)
    assert np.abs(np.stack(got) - np.stack(want)).max() < (
        1e-12 if dtype == torch.float64 else 1e-6
    )
    assert np.abs(got[0] - X0).min() > 0.04  # the first step is a full step (~lr per weight)


def test_adan_pytorch_differed_by_design_on_the_first_step():
    """The recorded adan-pytorch numbers are the same algorithm with the first step skipped."""
    want = np.stack(reference_adan(6, skip_first=True))
    assert np.abs(np.array(ADAN_PYTORCH_0_1_0) - want).max() < 1e-12
    assert np.allclose(ADAN_PYTORCH_0_1_0[0], X0 / (1 + LR * WD))  # weight decay only
    # ... so the two trajectories are apart by about one step early on.
    gap = np.abs(np.stack(reference_adan(6)) - np.array(ADAN_PYTORCH_0_1_0)).max()
    assert 0.01 < gap < 0.1


def test_optim_adan_config_builds_the_authors_adan(tiny_cfg):
    cfg = tiny_cfg("optim=adan")
    got = run(lambda ps: instantiate(cfg.optim.generator, _convert_="all")(ps, lr=LR), 6)
    # The config's own betas, weight decay and eps against the reference with the same values.
    assert list(cfg.optim.generator.betas) == list(BETAS)
    assert cfg.optim.generator.weight_decay == WD and not cfg.optim.generator.weight_decouple
    assert np.abs(np.stack(got) - np.stack(reference_adan(6))).max() < 1e-12
