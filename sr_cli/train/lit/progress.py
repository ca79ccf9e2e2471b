"""What ``sr-train`` prints: one progress bar over the whole run, a line per validation, and
where everything went at the end.

Replaces Lightning's per-epoch bar (``Epoch 2/-2``): the bar counts generator iterations up to
``trainer.max_steps`` with an ETA and the losses under their full names; after each validation
one line gives the monitored metric, its best value so far and the bicubic reference when the
module logs one (``val/bicubic_psnr_y``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.4f}"


class RunProgress(ProgressBar):
    """A rich progress bar over ``max_iterations`` generator iterations.

    Args:
        max_iterations: the run's length (``None``: unknown, the bar only counts).
        run_name: shown in the bar's description.
        refresh_every: update the bar every N iterations.
        losses_every_s: re-read the losses shown at most this often (seconds). Reading them
            converts device tensors to Python floats, a host sync per loss on a GPU; the bar
            redraws at 10 Hz anyway, so reading them every iteration bought nothing.
    """

    def __init__(
        self,
        max_iterations: int | None,
        run_name: str = "",
        refresh_every: int = 1,
        losses_every_s: float = 0.5,
    ):
        super().__init__()
        self.max_iterations = max_iterations
        self.run_name = run_name
        self.refresh_every = max(1, int(refresh_every))
        self.losses_every_s = float(losses_every_s)
        self._losses_at = float("-inf")
        self._enabled = True
        self._progress: Progress | None = None
        self._task = None
        self.console = Console(file=sys.stderr, highlight=False)

    # Lightning's ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero or not self._enabled:
            return
        g = sum(p.numel() for p in pl_module.generator.parameters())
        parts = [f"generator {type(pl_module.generator).__name__} ({g / 1e6:.2f}M parameters)"]
        for name, d in getattr(pl_module, "discriminators", {}).items():
            n = sum(p.numel() for p in d.parameters())
            parts.append(f"{name} discriminator {type(d).__name__} ({n / 1e6:.2f}M)")
        losses = " + ".join(f"{t.weight:g}*{n}" for n, t in pl_module.losses.items())
        self.console.print(escape(f"{self.run_name}: " + ", ".join(parts)))
        self.console.print(escape(f"objective: {losses}"))
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self.max_iterations, completed=pl_module.iteration, losses=""
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._progress is None:
            return
        done = pl_module.iteration + 1  # the module counts the iteration after the callbacks
        if done % self.refresh_every and done != self.max_iterations:
            return
        now = time.monotonic()
        if now - self._losses_at < self.losses_every_s and done != self.max_iterations:
            self._progress.update(self._task, completed=done)
            return
        self._losses_at = now
        metrics = trainer.callback_metrics
        shown = [
            f"{k[len('train/') :]} {_fmt(float(v))}"
            for k, v in sorted(metrics.items())
            if k.startswith("train/loss_") and not k.endswith("_unweighted") and v.numel() == 1
        ]
        self._progress.update(self._task, completed=done, losses=escape("  ".join(shown)))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or not self._enabled:
            return
        from sr_cli.train.lit.callbacks import run_checkpoints

        metrics = trainer.callback_metrics
        ckpts = run_checkpoints(trainer)
        monitor = ckpts.monitor if ckpts is not None and ckpts.monitor else "val/psnr_y"
        if monitor not in metrics:
            return
        value = float(metrics[monitor])
        text = f"iter {pl_module.iteration}: {monitor.replace('/', ' ')} {value:.4f}"
        if pl_module.iteration == 0:
            text += " (start: the pretrained weights)"
        else:
            # Lightning runs checkpoint callbacks last: the best so far may not include this
            # value yet.
            best, at = (
                (ckpts.best_score, ckpts.best_iteration) if ckpts is not None else (None, None)
            )
            higher = ckpts is None or ckpts.mode == "max"
            if best is None or (value > best if higher else value < best):
                best, at = value, pl_module.iteration
            text += f" (best {best:.4f} @ {at})"
        prefix, metric = monitor.rsplit("/", 1)
        bicubic = metrics.get(f"{prefix}/bicubic_{metric}")
        if bicubic is not None:
            text += f", bicubic {float(bicubic):.4f}"
        extra = metrics.get(f"{prefix}/lr_consistency_psnr")
        if extra is not None:
            text += f"; LR consistency {float(extra):.2f} dB"
        self.console.print(escape(text))

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def teardown(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_run_end(summary: dict, console: Console | None = None) -> None:
    """The run folder, the checkpoints and the commands to evaluate or report on the run."""
    console = console or Console(file=sys.stderr, highlight=False)
    out = summary.get("output_dir")
    lines = [f"run folder: {out}"]
    if summary.get("best_checkpoint"):
        best = summary.get("best") or {}
        what = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "iteration")
        lines.append(
            f"best checkpoint: {summary['best_checkpoint']}"
            + (f" ({what} @ iteration {best.get('iteration')})" if what else "")
        )
    if summary.get("last_checkpoint"):
        lines.append(
            f"last checkpoint: {summary['last_checkpoint']} (iteration {summary.get('iteration')})"
        )
    lines.append(f"evaluate: sr-eval checkpoints=[{out}]")
    lines.append(f"report:   sr-report {out} -o {out}/report")
    for line in lines:
        console.print(escape(line))
