"""SLURM: requeue before the time limit, and a run folder the requeued job finds again.

Under a SLURM batch job (``SLURM_JOB_ID`` set, job name not ``bash``/``interactive``, the same
rule as Lightning's :class:`SLURMEnvironment`):

* the run folder is ``outputs/<run name>/slurm-<job id>`` (``<array job id>_<task id>`` for an
  array task) instead of a time stamp: ``sr-train`` sets ``SR_CLI_RUN_ID``, which
  ``conf/hydra/default.yaml`` puts in ``hydra.run.dir`` / ``hydra.sweep.dir``;
* SIGUSR1 (``#SBATCH --signal=USR1@90``) makes :class:`~sr_cli.train.lit.callbacks.GracefulStop`
  save ``last.ckpt`` at the end of the iteration; once it is on disk, global rank 0 runs
  ``scontrol requeue <job id>`` and the process exits with 128 + SIGUSR1;
* the requeued job (same job id, same folder) finds the checkpoint in its folder and continues
  from it as with ``resume=auto`` (:func:`sr_cli.train.rundir.plan_resume`).

Lightning's own SLURM requeue handler is switched off (``SLURMEnvironment(auto_requeue=False)``):
it would save an ``hpc_ckpt_<n>.ckpt`` from inside the signal handler, in the middle of an
iteration, and resume from it ahead of ``last.ckpt``. There is one state file: ours.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess

log = logging.getLogger(__name__)

#: Set by ``sr-train`` under SLURM (``slurm-<job id>``); names the run folder in place of the time.
RUN_ID_ENV = "SR_CLI_RUN_ID"
#: The signal SLURM sends before the time limit (``--signal=USR1@<seconds>``).
REQUEUE_SIGNAL = signal.SIGUSR1


def slurm_job_id() -> str | None:
    """The SLURM job id (``<array id>_<task id>`` for an array task), or ``None`` outside a
    SLURM batch job (an interactive ``srun --job-name=bash|interactive`` counts as outside)."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_id and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{array_id}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    else:
        job = os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        return None
    return job


def set_run_id() -> None:
    """Under SLURM, name this run's folder after the job (unless the user set ``SR_CLI_RUN_ID``)."""
    job = slurm_job_id()
    if job is not None:
        os.environ.setdefault(RUN_ID_ENV, f"slurm-{job}")


def cluster_plugins() -> list:
    """Trainer plugins: under SLURM (as Lightning detects it), its environment without Lightning's
    own requeue handler and ``hpc_ckpt`` file (ours saves ``last.ckpt``, then requeues)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def _global_rank() -> int:
    for key in ("SLURM_PROCID", "RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def requeue_after(signum: int) -> bool:
    """After a stop by the requeue signal under SLURM, requeue the job (global rank 0 only).
    Returns True when ``scontrol requeue`` succeeded."""
    job = slurm_job_id()
    if job is None or signum != REQUEUE_SIGNAL or _global_rank() != 0:
        return False
    cmd = ["scontrol", "requeue", job]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("could not requeue SLURM job %s (%s): %s", job, " ".join(cmd), exc)
        return False
    if result.returncode != 0:
        log.error(
            "`%s` failed (exit %d): %s",
            " ".join(cmd),
            result.returncode,
            (result.stderr or result.stdout).strip(),
        )
        return False
    log.warning("requeued SLURM job %s; it continues from the last checkpoint", job)
    return True
