"""``init_from=CKPT``: continue another run's training state in a new run folder.

``resume=`` continues a run in its own folder, under the same recipe. ``init_from=`` forks: it
restores everything the checkpoint holds (the generator, every discriminator, the optimizers and
schedulers, the iteration) into *this* run's folder, which then trains under its own recipe: a
changed loss mix (a term without parameters added or removed, e.g. ``translational``), other
learning rates, a later ``trainer.max_steps`` (which counts from the fork's iteration, like a
resume). The forked run never writes into the checkpoint's folder.

Once the fork has a checkpoint of its own, a rerun with the same ``init_from`` continues the fork
(its own ``last.ckpt``), not the original again. A term that owns networks (a discriminator)
cannot be added by a fork: there is no state for it in the checkpoint; the error says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.serialization import is_readable_checkpoint
from sr_cli.train import rundir

log = logging.getLogger(__name__)


def plan_fork(init_from: str, output_dir: Path, resume: str | None = None) -> rundir.ResumePlan:
    """The plan of a forked run: this folder's own state when it has one, else ``init_from``."""
    if resume:
        raise ConfigError(
            "resume= and init_from= cannot be combined: resume continues a run in its own "
            "folder, init_from starts a new folder from another run's state"
        )
    own, problems = rundir.readable_state(output_dir)
    if own is not None:
        log.warning("init_from: %s already holds this fork's state; continuing it", output_dir)
        return rundir._with_meta(rundir.ResumePlan(output_dir, str(own)))
    path = Path(str(init_from)).expanduser()
    if path.is_dir():
        ckpt, problems = rundir.readable_state(path)
        if ckpt is None:
            raise CheckpointError(
                f"init_from={init_from}: no readable checkpoint in {path / 'checkpoints'}"
                + (": " + "; ".join(problems) if problems else "")
            )
        path = ckpt
    if not path.is_file():
        raise CheckpointError(
            f"init_from checkpoint {str(path)!r} does not exist; pass a .ckpt written by sr-train "
            "or its run folder"
        )
    reason = is_readable_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"init_from checkpoint {str(path)!r} is unreadable ({reason})")
    plan = rundir._with_meta(rundir.ResumePlan(output_dir, str(path)))
    plan.forked = True  # type: ignore[attr-defined]
    log.info("init_from: starting %s from %s (iteration %d)", output_dir, path, plan.iteration)
    return plan


def is_fork(plan: rundir.ResumePlan) -> bool:
    return bool(getattr(plan, "forked", False))


def check_fork_compatible(plan: rundir.ResumePlan, module, cfg) -> None:
    """The forked state must fill the new run's networks: same generator; no new network."""
    from omegaconf import OmegaConf

    from sr_cli.serialization import safe_torch_load

    meta = plan.meta or {}
    current = OmegaConf.to_container(cfg, resolve=True)
    old_gen = (meta.get("model") or {}).get("generator")
    if old_gen is not None and old_gen != current["model"].get("generator"):
        raise CheckpointError(
            f"init_from={plan.checkpoint}: the generator differs from the checkpoint's; a fork "
            "continues the same network (use model.pretrained= to start another one from it)"
        )
    if bool(meta.get("ema")) != bool((current.get("ema") or {}).get("enabled")):
        raise CheckpointError(
            f"init_from={plan.checkpoint}: ema.enabled differs from the checkpoint's "
            f"({bool(meta.get('ema'))}); set it the same way"
        )
    stored = set(safe_torch_load(plan.checkpoint).get("state_dict", {}))
    missing = sorted(k for k in module.state_dict() if k not in stored)
    if missing:
        terms = sorted({k.split(".")[1] for k in missing if k.startswith("losses.")})
        raise CheckpointError(
            f"init_from={plan.checkpoint}: the checkpoint has no state for "
            + (f"the loss term(s) {terms}" if terms else f"{missing[:3]}")
            + "; a fork can add terms without networks only. Train those from the start, or "
            "start a new run from the generator with model.pretrained=<checkpoint>."
        )
