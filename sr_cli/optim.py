"""Optimizer and learning-rate schedule factories for ``conf/optim/*.yaml``.

The optimizers themselves come from their maintained packages (``torch.optim.AdamW``,
``pytorch_optimizer.Adan``, ``schedulefree.AdamWScheduleFree``); this module only adds what a config
cannot express:

* :func:`cosine_with_warmup`: linear warm-up to the base rate, then a cosine decay to
  ``min_lr_ratio`` times the base rate (Loshchilov & Hutter, SGDR, ICLR 2017; the warm-up of
  Goyal et al. 2017), stepped once per iteration;
* :func:`adamw_schedule_free`: schedule-free AdamW (Defazio et al., "The Road Less Scheduled",
  NeurIPS 2024), returned in train mode so the trainer can step it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from sr_cli.errors import ConfigError


def cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base rate at ``step`` (0-based): ``(step + 1) / warmup_steps`` during
    warm-up, then ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t`` going 0 -> 1 over the
    remaining steps, and ``min_lr_ratio`` after ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` iterations, cosine decay until ``total_steps``.

    Raises:
        ConfigError: non-positive ``total_steps``, warm-up longer than the run, or a ratio
            outside ``[0, 1]``.
    """
    if total_steps <= 0:
        raise ConfigError(f"optim.scheduler.total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ConfigError(
            f"optim.scheduler.warmup_steps={warmup_steps} must be in [0, total_steps={total_steps})"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"optim.scheduler.min_lr_ratio={min_lr_ratio} must be in [0, 1]")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, warmup_steps, total_steps, min_lr_ratio)
    )


def adamw_schedule_free(params: Iterable, **kwargs) -> torch.optim.Optimizer:
    """``schedulefree.AdamWScheduleFree`` in train mode (it refuses to step otherwise).

    The averaged weights it evaluates with are swapped in by ``optimizer.eval()``; see the
    note in ``conf/optim/schedule_free.yaml``.
    """
    from schedulefree import AdamWScheduleFree

    opt = AdamWScheduleFree(params, **kwargs)
    opt.train()
    return opt
