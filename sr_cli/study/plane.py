"""A study's perception-distortion plane: one point per arm and seed, each arm's mean with its
95% interval (:func:`sr_cli.report.plane.draw_plane`), bicubic as the reference point.

Every study computes the plane's two measures on its evaluation images beside the metrics its
file asks for: NIQE (perception, no reference, lower is better) and RMSE_Y (distortion, 8-bit
levels, border cropped), as PIRM 2018 draws it. The points go to ``plane.csv`` beside
``plane.png`` in the study's folder; ``results.md`` links both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The plane's axes: perception (x) and distortion (y).
PLANE_METRICS = ("niqe", "rmse_y")


def with_plane_metrics(metrics: Sequence[str]) -> list[str]:
    """The study's metrics plus the plane's, each once."""
    return list(metrics) + [m for m in PLANE_METRICS if m not in metrics]


def _mean(images: Mapping[str, Mapping[str, Any]], metric: str) -> float | None:
    vals = [float(ms[metric]) for ms in images.values() if ms.get(metric) is not None]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def draw_study_plane(
    values: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]],
    arms: Sequence[str],
    root: Path,
    title: str,
    say: Callable[[str], None] = print,
) -> dict[str, str] | None:
    """Draw ``root/plane.png`` and write ``root/plane.csv`` from the evaluation's
    ``values[arm][seed][image][metric]`` (bicubic under seed -1). Returns the two file names, or
    ``None`` (said in one line) when no run has both measures."""
    from sr_cli.report.plane import PlanePoint, draw_plane

    points = []
    for arm in arms:
        for seed, images in sorted((values.get(arm) or {}).items()):
            niqe, rmse = _mean(images, "niqe"), _mean(images, "rmse_y")
            if niqe is None or rmse is None:
                continue
            label = arm if seed < 0 else f"{arm}/seed_{seed}"
            group, run_seed = (None, None) if seed < 0 else (arm, seed)  # bicubic: one point
            points.append(PlanePoint(label, niqe, rmse, group=group, seed=run_seed))
    if not points:
        say("no perception-distortion plane: no run has both NIQE and RMSE_Y on these images")
        return None
    draw_plane(
        points,
        root / "plane.png",
        root / "plane.csv",
        title=title,
        note="one point per arm and seed; diamonds: each arm's mean with its 95% t-interval",
    )
    return {"png": "plane.png", "csv": "plane.csv"}
