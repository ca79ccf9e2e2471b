"""A Lightning callback that times the real ``sr-train`` loop from the inside.

:class:`StepClock` records, for every training iteration, the wall time from the end of the
previous iteration to the end of this one (``iteration``) and the part of it spent before the
batch reached ``training_step`` (``wait``: fetching the next batch from the dataloader and
moving it to the device). The time from ``fit`` to the first batch is ``startup``.

Two ways to use it:

* in-process (``bench.run``): ``pause`` is called every ``block`` iterations after ``warmup``;
  the bench runs the reference (a plain PyTorch loop, or BasicSR in another process) there, so
  sr-cli and the reference alternate in blocks, A, B, A, B, ... The paused time is not counted.
* from the command line, added to any run (``+callbacks.bench_clock._target_=bench.clock.StepClock
  +callbacks.bench_clock.path=clock.json``): writes the per-iteration record on rank 0 and stops
  the run after ``stop_after`` iterations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch


def _sync(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class StepClock(pl.Callback):
    """Times every training iteration of a real :class:`pytorch_lightning.Trainer`.

    ``waits[i] - transfers[i]`` is the time iteration ``i`` spent waiting for the dataloader.

    Args:
        warmup: iterations not counted in the blocks (start-up, allocator, caches).
        block: iterations per timed block.
        rounds: blocks to time; the run is stopped after the last one (0: never stop).
        pause: called between blocks as ``pause(block)``; its time is not counted.
        path: JSON file written at the end of the run (rank 0).
        stop_after: stop the run after this many iterations (0: never).
    """

    def __init__(
        self,
        warmup: int = 2,
        block: int = 5,
        rounds: int = 0,
        pause: Callable[[int], None] | None = None,
        path: str | None = None,
        stop_after: int = 0,
    ) -> None:
        self.warmup, self.block, self.rounds = int(warmup), int(block), int(rounds)
        self.pause = pause
        self.path = Path(path) if path else None
        self.stop_after = int(stop_after)
        self.startup: float | None = None
        self.iterations: list[float] = []  # seconds per iteration, every iteration
        self.waits: list[float] = []  # seconds before training_step, every iteration
        self.transfers: list[float] = []  # of which in on_after_batch_transfer (on-device LQ)
        self.blocks: list[float] = []  # seconds per iteration, averaged over each block
        self._t_fit = self._t_end = self._t_block = 0.0
        self._count = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Time the module's on-device batch preparation (degradation, augmentation): it runs
        # between fetching the batch and ``on_train_batch_start``, but is compute, not waiting.
        inner = pl_module.on_after_batch_transfer
        if getattr(inner, "_bench_clock", None) is self:
            return

        def timed(batch, dataloader_idx):
            t0 = time.perf_counter()
            out = inner(batch, dataloader_idx)
            if pl_module.trainer.training:
                _sync(pl_module)
                self.transfers.append(time.perf_counter() - t0)
            return out

        timed._bench_clock = self
        pl_module.on_after_batch_transfer = timed

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self._t_fit:  # the caller may have started the clock before ``fit``
            self._t_fit = time.perf_counter()

    def start(self) -> None:
        """Count start-up from now (call just before ``trainer.fit``)."""
        self._t_fit = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.startup is None:
            self.startup = now - self._t_fit
            self._t_end = now
        self.waits.append(now - self._t_end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(pl_module)
        now = time.perf_counter()
        self.iterations.append(now - self._t_end)
        self._count += 1
        done = self._count - self.warmup
        if done == 0:
            self._t_block = now
        elif done > 0 and done % self.block == 0 and self.rounds:
            self.blocks.append((now - self._t_block) / self.block)
            if self.pause is not None:
                self.pause(self.block)
            if len(self.blocks) >= self.rounds:
                trainer.should_stop = True
            now = time.perf_counter()
            self._t_block = now
        if self.stop_after and self._count >= self.stop_after:
            trainer.should_stop = True
        self._t_end = time.perf_counter() if self.pause is not None else now

    def record(self) -> dict:
        return {
            "startup_s": self.startup,
            "iteration_s": self.iterations,
            "wait_s": self.waits,
            "transfer_s": self.transfers,
            "block_s": self.blocks,
            "warmup": self.warmup,
        }

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.path is not None and trainer.is_global_zero:
            rec = self.record()
            rec["world_size"] = trainer.world_size
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(rec))
