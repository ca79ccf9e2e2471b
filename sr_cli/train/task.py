"""The ``sr-train`` task: one run or its stages, and how a job ends.

:func:`run` trains one run (:func:`sr_cli.train.training.train`) or, with ``stages=N``, the
iterative learned-perceptual stages (:mod:`sr_cli.train.stages`). :func:`after_stop` records a
job stopped by a signal in its sweep summary and requeues it under SLURM;
:func:`close_process_group` ends DDP's process group with the job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sr_cli.config import is_multirun
from sr_cli.train.stages import train_stages
from sr_cli.train.training import train

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The ``sr-train`` task: one run, or ``cfg.stages`` iterative learned-perceptual stages."""
    if int(cfg.get("stages", 1)) > 1:
        return train_stages(cfg)
    return train(cfg)


def close_process_group() -> None:
    """End DDP's process group with the job (Lightning leaves it open): a gloo group still alive
    when the interpreter exits can abort the process ("terminate called without an active
    exception", exit -6) after the run has finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def after_stop(stop) -> None:
    """A stopped sweep job gets its row in the sweep summary (the process exits here, before
    Hydra's job callbacks run); under SLURM, SIGUSR1 requeues the job once last.ckpt is saved."""
    from sr_cli.train import slurm, sweep

    if is_multirun() and slurm._global_rank() == 0:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        run_dir = Path(stop.checkpoint).parent.parent if stop.checkpoint else None
        try:
            sweep.record_preempted(Path(hc.runtime.output_dir), stop.signum, run_dir)
            sweep.write_summary(hc.sweep.dir)
        except Exception as exc:  # the summary never hides the stop
            log.warning("could not update the sweep summary: %s", exc)
    if stop.checkpoint is not None:
        slurm.requeue_after(stop.signum)
