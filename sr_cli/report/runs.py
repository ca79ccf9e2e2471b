"""The runs a report compares: each run folder's checkpoint, resolved config and metrics.csv."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sr_cli.metrics_csv import read_metrics_rows


@dataclass
class Run:
    """A training run: its label, checkpoint, resolved config and metrics.csv (if any)."""

    label: str
    path: Path
    checkpoint: Path
    config: dict = field(default_factory=dict)
    metrics_csv: Path | None = None


def load_run(path: str | Path, checkpoint: str = "last") -> Run:
    """Open a run directory (its ``checkpoints/<checkpoint>.ckpt``) or a bare ``.ckpt``."""
    from omegaconf import OmegaConf

    from sr_cli.evaluate.inference import resolve_checkpoint

    p = Path(path).expanduser()
    ckpt = resolve_checkpoint(p, checkpoint)
    run_dir = (
        p
        if p.is_dir()
        else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    )
    config: dict = {}
    cfg_file = run_dir / "config_resolved.yaml"
    if cfg_file.is_file():
        config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) or {}
    metrics = run_dir / "metrics.csv"
    return Run(
        label=run_dir.name if p.is_dir() else ckpt.stem,
        path=run_dir,
        checkpoint=ckpt,
        config=config,
        metrics_csv=metrics if metrics.is_file() else None,
    )


def read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(step, value), ...]}`` from a Lightning CSV log (empty cells skipped; a
    damaged row is left out with a warning naming it: :mod:`sr_cli.metrics_csv`)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in read_metrics_rows(path).rows:
        step = float(row.get("step") or "nan")
        for key, value in row.items():
            if key in ("step", "epoch") or not value:
                continue
            series.setdefault(key, []).append((step, float(value)))
    return series
