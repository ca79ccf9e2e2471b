"""Task-based evaluation: does super-resolution help a downstream network?

``sr-eval task=<name> data=<folder> checkpoints=[...]`` makes the LQ of every image of a
labelled set, as ``sr-eval`` does (the checkpoints' degradation, the ``val_degradation`` random
stream), and gives the task the same image in several versions: ``HR`` (the original, mod-cropped
by the scale), ``bicubic`` (the LQ upscaled with MATLAB's bicubic) and the SR of every
checkpoint. The task scores every version of every image; the table gives each version's mean,
its drop against HR, and percentile-bootstrap 95% intervals over images (paired: the same images
are resampled for every version).

A task is one file, ``sr_cli/evaluate/tasks/<name>.py``, defining ``TASK``: a :class:`Task`
(what it reads from the folder, how it scores a batch of images). The registry lists the modules
of this folder; a name outside it is refused with the list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sr_cli.errors import ConfigError

#: The versions every image comes in, before the checkpoints' SR.
HR, BICUBIC = "HR", "bicubic"


@dataclass
class LabelledImage:
    """One image of a task's set: its file, its label (what the task scores against)."""

    path: Any
    label: Any
    name: str = ""


@dataclass
class Task:
    """A downstream task.

    Attributes:
        name: the ``task=`` value.
        measures: the names of what :attr:`score` returns per image (e.g. ``top1``, ``top5``),
            higher is better.
        list_items: ``(folder, options) -> [LabelledImage]``: the labelled set (errors name the
            folder and the fix).
        build: ``options -> scorer``: loads the task's network (from the torch hub cache,
            never downloaded; a missing file is one line naming it and where to put it).
        score: ``(scorer, images (B, 3, H, W) in [0, 1], labels) -> {measure: (B,) float}``.
        describe: one line for the table's caption (the network, its weights).
    """

    name: str
    measures: tuple[str, ...]
    list_items: Callable[[str, dict], list[LabelledImage]]
    build: Callable[[dict], Any]
    score: Callable[[Any, Tensor, Sequence[Any]], dict[str, Tensor]]
    describe: Callable[[dict], str] = lambda options: ""


def task_names() -> list[str]:
    """The tasks this folder holds (one module each)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_task(name: str) -> Task:
    """The ``TASK`` of ``sr_cli/evaluate/tasks/<name>.py``; an unknown name lists the tasks."""
    names = task_names()
    if name not in names:
        raise ConfigError(f"task={name!r} is unknown; choose one of {', '.join(names)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.TASK


# ---------------------------------------------------------------------------- statistics
@dataclass
class VersionScore:
    """A version's mean of one measure, its drop against HR and their 95% intervals."""

    version: str
    measure: str
    mean: float
    interval: tuple[float, float]
    drop: float
    drop_interval: tuple[float, float]


@dataclass
class TaskResult:
    """Per-image scores ``{version: {measure: (N,) float64}}`` and their summary."""

    task: str
    caption: str
    versions: list[str]
    measures: tuple[str, ...]
    images: list[str]
    per_image: dict[str, dict[str, Tensor]]
    scores: list[VersionScore] = field(default_factory=list)
    bootstrap: int = 1000

    def score(self, version: str, measure: str) -> VersionScore:
        for s in self.scores:
            if (s.version, s.measure) == (version, measure):
                return s
        raise KeyError(f"no score for {version!r} / {measure!r}")


def bootstrap_indices(n: int, rounds: int, seed: int) -> Tensor:
    """``(rounds, n)`` image indices drawn with replacement (seeded)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n, (rounds, n), generator=g)


def percentile_interval(samples: Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap samples."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(samples.double(), q)
    return float(lo), float(hi)


def summarise(result: TaskResult, rounds: int, seed: int) -> TaskResult:
    """Fill ``result.scores``: mean, drop against HR, paired percentile-bootstrap intervals."""
    n = len(result.images)
    idx = bootstrap_indices(n, rounds, seed)
    scores = []
    for version in result.versions:
        for measure in result.measures:
            values = result.per_image[version][measure].double()
            hr = result.per_image[HR][measure].double()
            boot = values[idx].mean(1)
            boot_drop = (hr[idx] - values[idx]).mean(1)
            scores.append(
                VersionScore(
                    version,
                    measure,
                    float(values.mean()),
                    percentile_interval(boot),
                    float((hr - values).mean()),
                    percentile_interval(boot_drop),
                )
            )
    result.scores = scores
    result.bootstrap = rounds
    return result
