"""Callbacks that keep a run's work safe: checkpoints, generator weights, signals, NaN saves.

* :class:`RunCheckpoints` writes ``last.ckpt`` at every validation and when training ends
  (whether or not the monitored metric improved), ``best.ckpt`` when it improves, keeps the
  ``keep_last`` newest states as ``iter_<N>.ckpt`` for a fallback, and puts a generator-only
  ``.safetensors`` beside every checkpoint (plus the EMA generator when enabled). Every file is
  written atomically, and a new state is complete on disk before ``last.ckpt`` points to it.
  On an accelerator out-of-memory error it saves ``last.ckpt`` too, as a stop signal does, when
  the state is intact (no update of the current iteration begun: :meth:`SRModule.state_intact`).
* :class:`GracefulStop` turns SIGTERM, SIGUSR1 and SIGINT into "save a resumable checkpoint at
  the end of this iteration, then exit with 128 + signal". Under SLURM, ``sr-train`` then
  requeues the job after SIGUSR1 (:mod:`sr_cli.train.slurm`).
* :class:`LastGoodCheckpoint` saves the state that the NaN guard verified finite when a loss
  diverges. (It is not Lightning's ``OnExceptionCheckpoint``: with one of those attached,
  ``fit(ckpt_path=None)`` silently resumes from its file, and its ``teardown`` deletes it.)
"""

from __future__ import annotations

import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from sr_cli.errors import ConfigError, NonFiniteLossError, is_out_of_memory
from sr_cli.serialization import atomic_link, atomic_save_safetensors

log = logging.getLogger(__name__)

#: Signals that stop a run after saving it (SIGUSR1 is what SLURM sends before the time limit).
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


def generator_weights_path(ckpt: str | Path, ema: bool = False) -> Path:
    """``last.ckpt`` -> ``last.generator.safetensors`` (``last.generator_ema.safetensors``)."""
    ckpt = Path(ckpt)
    return ckpt.with_name(f"{ckpt.stem}.generator{'_ema' if ema else ''}.safetensors")


def save_generator_weights(module: Any, path: Path, ema: bool = False) -> Path:
    """The generator's (or its EMA's) state dict as safetensors, with the model config as metadata."""
    net = module.generator_ema if ema else module.generator
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    config = getattr(module, "config", {}) or {}
    metadata = {
        "format": "sr-cli generator",
        "scale": str(module.scale),
        "iteration": str(module.iteration),
        "ema": str(bool(ema)).lower(),
        "model": json.dumps(config.get("model", {}), sort_keys=True, default=str),
        "name": str(config.get("name", "")),
    }
    atomic_save_safetensors(state, path, metadata)
    return path


class RunCheckpoints(Checkpoint):
    """``last.ckpt`` always at the newest state, ``best.ckpt`` at the best validation score.

    Args:
        dirpath: the run's ``checkpoints/`` folder.
        monitor: metric that decides ``best.ckpt`` (``None``: no best checkpoint).
        mode: ``max`` or ``min``.
        keep_last: how many of the newest states to keep as ``iter_<N>.ckpt`` (at least 1);
            ``resume=auto`` falls back to them when ``last.ckpt`` is unreadable.
        generator_weights: write ``<ckpt>.generator.safetensors`` beside every checkpoint.
        generator_every: also keep ``generator_<N>.safetensors`` every N iterations (0: off).
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str | None = "val/psnr_y",
        mode: str = "max",
        keep_last: int = 2,
        generator_weights: bool = True,
        generator_every: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ConfigError(f"callbacks.checkpoint.mode must be max or min, got {mode!r}")
        if int(keep_last) < 1:
            raise ConfigError(
                f"callbacks.checkpoint.keep_last must be >= 1 (the newest state is always kept), got {keep_last}"
            )
        if int(generator_every) < 0:
            raise ConfigError(
                f"callbacks.checkpoint.generator_every must be >= 0 (0: off), got {generator_every}"
            )
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.keep_last = int(keep_last)
        self.generator_weights = bool(generator_weights)
        self.generator_every = int(generator_every)
        self.best_score: float | None = None
        self.best_iteration: int | None = None
        self.last_saved_iteration: int | None = None
        #: After an out-of-memory error: what became of the state (for the error message).
        self.oom_outcome: str | None = None

    # ------------------------------------------------------------------ paths
    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    @property
    def best_model_path(self) -> str:
        """Lightning's name for it (``trainer.checkpoint_callback.best_model_path``)."""
        return str(self.best_path) if self.best_iteration is not None else ""

    def iteration_path(self, iteration: int) -> Path:
        return self.dirpath / f"iter_{iteration:07d}.ckpt"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "monitor": self.monitor,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("monitor") == self.monitor:
            self.best_score = state_dict.get("best_score")
            self.best_iteration = state_dict.get("best_iteration")

    # ------------------------------------------------------------------ hooks
    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.training and trainer.state.fn != "fit":
            return
        self.save_last(trainer, pl_module)
        self._update_best(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # No validation this epoch (no val set, or a stop without validation): still save.
        if self.last_saved_iteration != pl_module.iteration:
            self.save_last(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.last_saved_iteration != pl_module.iteration:
            self.save_last(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Callbacks run before the module's own hook, which counts the iteration just done.
        done = pl_module.iteration + 1
        if self.generator_every and done % self.generator_every == 0 and trainer.is_global_zero:
            pl_module_iter, pl_module.iteration = pl_module.iteration, done
            try:
                save_generator_weights(
                    pl_module, self.dirpath / f"generator_{done:07d}.safetensors"
                )
            finally:
                pl_module.iteration = pl_module_iter

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        """Out of memory: save ``last.ckpt`` as a stop signal does, if the state is intact."""
        if not is_out_of_memory(exception):
            return
        iteration = int(pl_module.iteration)
        if self.last_saved_iteration is not None:
            previous = f"{self.last_path} keeps iteration {self.last_saved_iteration}"
        elif self.last_path.is_file():
            previous = f"{self.last_path} keeps the state this run resumed from"
        else:
            previous = "no checkpoint was written yet"
        if self.last_saved_iteration is not None and self.last_saved_iteration == iteration:
            self.oom_outcome = f"{self.last_path} holds iteration {iteration}"
            return
        if not getattr(pl_module, "state_intact", lambda: False)():
            self.oom_outcome = (
                f"the weights were being updated, so this state is not saved; {previous}"
            )
            return
        if trainer.world_size > 1:  # saving is collective: other ranks may be stuck elsewhere
            self.oom_outcome = f"not saved under DDP; {previous}"
            return
        # The failed step's activations and gradients are garbage now: free them first.
        for opt in trainer.optimizers:
            opt.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            self.save_last(trainer, pl_module)
        except Exception as exc:  # noqa: BLE001 - the OOM message must still come out
            log.error("could not save last.ckpt after running out of memory: %s", exc)
            self.oom_outcome = f"saving it failed ({exc}); {previous}"
            return
        self.oom_outcome = f"{self.last_path} saved at iteration {iteration}"

    # ------------------------------------------------------------------ saving
    def save_last(self, trainer: pl.Trainer, pl_module: Any) -> Path:
        """Write ``iter_<N>.ckpt`` (+ generator weights), then point ``last.*`` at it."""
        iteration = int(pl_module.iteration)
        target = self.iteration_path(iteration)
        trainer.save_checkpoint(target)  # atomic (AtomicCheckpointIO); collective under DDP
        if trainer.is_global_zero:
            self._write_generator_files(pl_module, target)
            self._link_family(target, self.last_path)
            self._prune(keep={target})
        self.last_saved_iteration = iteration
        trainer.strategy.barrier("RunCheckpoints.save_last")
        return self.last_path

    def _update_best(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.monitor:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isnan(value):
            return
        better = (
            self.best_score is None
            or (self.mode == "max" and value > self.best_score)
            or (self.mode == "min" and value < self.best_score)
        )
        if not better:
            return
        self.best_score, self.best_iteration = value, int(pl_module.iteration)
        if trainer.is_global_zero:
            self._link_family(self.iteration_path(self.best_iteration), self.best_path)

    def _write_generator_files(self, pl_module: Any, ckpt: Path) -> None:
        if not self.generator_weights:
            return
        save_generator_weights(pl_module, generator_weights_path(ckpt))
        if getattr(pl_module, "generator_ema", None) is not None:
            save_generator_weights(pl_module, generator_weights_path(ckpt, ema=True), ema=True)

    def _link_family(self, source: Path, dest: Path) -> None:
        """``dest`` (and its generator files) become the same files as ``source``, atomically."""
        pairs = [(source, dest)]
        for ema in (False, True):
            src = generator_weights_path(source, ema)
            if src.is_file():
                pairs.append((src, generator_weights_path(dest, ema)))
        for src, dst in pairs:
            atomic_link(src, dst)

    def _prune(self, keep: set[Path]) -> None:
        """Delete ``iter_<N>.ckpt`` (and its generator files) beyond the ``keep_last`` newest."""
        states = sorted(self.dirpath.glob("iter_*.ckpt"), reverse=True)
        for old in states[self.keep_last :]:
            if old in keep:
                continue
            for path in (old, generator_weights_path(old), generator_weights_path(old, True)):
                path.unlink(missing_ok=True)


class LastGoodCheckpoint(Checkpoint):
    """On a diverged loss, save the state the NaN guard verified finite (``last_good_iter<N>.ckpt``).

    The module decides the file name (it names it in its error message) through
    :meth:`path_for`; other exceptions save nothing here (``last.ckpt`` is the resume point).
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)

    def path_for(self, iteration: int) -> Path:
        return self.dirpath / f"last_good_iter{iteration:07d}.ckpt"

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, NonFiniteLossError) or exception.checkpoint is None:
            return
        if not _all_finite(pl_module):
            log.error("not saving %s: the weights are no longer finite", exception.checkpoint)
            return
        trainer.save_checkpoint(exception.checkpoint)


def _all_finite(module: torch.nn.Module) -> bool:
    tensors = [t.detach() for t in module.state_dict().values() if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class TrainingInterrupted(Exception):
    """Raised by ``train()`` after a stop signal, once the resumable checkpoint is on disk."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        name = signal.Signals(self.signum).name
        where = f"resumable checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"
        super().__init__(
            f"stopped by {name} at the end of an iteration; {where}. Continue with "
            f"`sr-train <same overrides> resume={checkpoint or 'auto'}`."
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop(pl.Callback):
    """SIGTERM/SIGUSR1/SIGINT: finish the current iteration, save ``last.ckpt``, stop.

    The handlers are installed when training starts (after Lightning's own) and Lightning
    restores the previous ones when ``fit`` ends. A second SIGINT interrupts at once. Under DDP
    every rank learns of a signal received by any rank at the next iteration boundary.
    """

    def __init__(self, signals: tuple[str, ...] = STOP_SIGNALS) -> None:
        super().__init__()
        self.signals = [getattr(signal, s) for s in signals if hasattr(signal, s)]
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "received %s: saving a checkpoint at the end of this iteration, then stopping "
            "(send SIGINT again to stop at once)",
            signal.Signals(signum).name,
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.received = None
        if not _in_main_thread():
            return
        for s in self.signals:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handler)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if not _in_main_thread():
            return
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        received = self.received is not None
        if trainer.world_size > 1:
            signum = torch.tensor([self.received or 0], device=pl_module.device, dtype=torch.int64)
            signum = trainer.strategy.reduce(signum, reduce_op="max")
            received = int(signum) > 0
            self.received = int(signum) if received else None
        if received:
            # Stop like max_steps does, but skip the validation Lightning would run on the way out.
            trainer.should_stop = True
            trainer.limit_val_batches = 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_checkpoints(trainer: pl.Trainer) -> RunCheckpoints | None:
    for cb in trainer.callbacks:
        if isinstance(cb, RunCheckpoints):
            return cb
    return None


def last_good_callback(trainer: pl.Trainer) -> LastGoodCheckpoint | None:
    for cb in trainer.callbacks:
        if isinstance(cb, LastGoodCheckpoint):
            return cb
    return None
