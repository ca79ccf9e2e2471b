"""How the bench measures: alternated repetitions (A, B, A, B, ...) summarised as median, min and
max, timers, result rows and the machine they ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
from collections.abc import Callable

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def stats(samples: list[float]) -> dict:
    """Median, min and max of a list of measurements (seconds or any unit)."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    """Call each measurement in turn, ``rounds`` times (A, B, A, B, ...); stats per name.

    Each function returns the figure it measured (e.g. seconds per call)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(float(fn()))
    return {k: stats(v) for k, v in samples.items()}


def bench_timer(fn: Callable[[], object], number: int = 1) -> Callable[[], float]:
    """A measurement (seconds per call, ``number`` calls) taken by ``torch.utils.benchmark``."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return lambda: timer.timeit(number).mean


def row(section: str, what: str, **kw) -> dict:
    r = {"section": section, "what": what}
    r.update(kw)
    return r


def ratio_row(
    section: str, what: str, a: dict, b: dict, a_label: str, b_label: str, target: float | None
) -> dict:
    ratio = a["median"] / b["median"]
    return row(
        section,
        what,
        a=a,
        b=b,
        a_label=a_label,
        b_label=b_label,
        unit="s",
        ratio=ratio,
        target=target,
        met=None if target is None else bool(ratio <= target),
    )


def environment(device: str) -> dict:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()} ({os.cpu_count()} CPUs)",
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
