"""``sr-eval task=<name> data=<folder>``: score HR, bicubic and every checkpoint's SR of the same
LQ with a downstream network (:mod:`sr_cli.evaluate.tasks`), and write the table.

Outputs in ``output_dir``: ``task_<name>.csv`` (one row per version and measure: mean, 95%
interval, drop against HR and its interval), ``task_<name>_per_image.csv`` and
``task_<name>.md``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sr_cli.errors import ConfigError
from sr_cli.evaluate.tasks import BICUBIC, HR, TaskResult, get_task, summarise


def task_options(cfg: DictConfig) -> dict[str, Any]:
    node = cfg.get("task_options") or {}
    return (
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    )


def run_task(cfg: DictConfig) -> TaskResult:
    """Run ``cfg.task`` on ``cfg.task_data`` (``data=`` on the command line) for ``cfg.checkpoints``; writes and prints the table."""
    from sr_cli.data.arrays import to_tensor
    from sr_cli.data.images import read_image
    from sr_cli.environment import setup_environment
    from sr_cli.evaluate.compare import (
        checkpoint_label,
        load_checkpoints,
        make_lq,
        unique_labels,
    )
    from sr_cli.evaluate.evaluation import lq_degradation_for
    from sr_cli.evaluate.inference import resolve_checkpoint, super_resolve
    from sr_cli.metrics.reference import bicubic_upscale
    from sr_cli.serialization import check_output_dir, check_output_file

    setup_environment()
    task = get_task(str(cfg.task))
    if not cfg.get("task_data"):
        raise ConfigError(
            f"task={task.name} needs a labelled image folder: data=<folder> (one subfolder per "
            "class, as torchvision's ImageFolder)"
        )
    ckpts = cfg.get("checkpoints") or []
    ckpts = [ckpts] if isinstance(ckpts, str) else list(ckpts)
    if not ckpts:
        raise ConfigError(
            f"task={task.name}: pass checkpoints=[path/to/best.ckpt] (a .ckpt or an sr-train run "
            "directory); HR and bicubic are always scored too"
        )
    options = task_options(cfg)
    out = Path(cfg.output_dir)
    check_output_dir(out, "output_dir")  # before anything is computed
    for path in task_files(out, task.name):
        check_output_file(path, "output_dir", folder=False)
    items = task.list_items(str(cfg.task_data), options)
    scorer = task.build(options)  # before any SR: a missing network fails first
    loaded, scale = load_checkpoints(
        [resolve_checkpoint(p) for p in ckpts],
        prefer_ema=bool(cfg.get("prefer_ema", True)),
        scale=cfg.get("scale"),
    )
    degradation, _ = lq_degradation_for(cfg, loaded, scale)
    labels = unique_labels([checkpoint_label(lg.source, lg.name) for lg in loaded])
    versions = [HR, BICUBIC, *labels]
    seed = int(cfg.get("seed", 0))
    per_image: dict[str, dict[str, list[torch.Tensor]]] = {
        v: {m: [] for m in task.measures} for v in versions
    }
    names = []
    for index, item in enumerate(items):
        rgb = read_image(item.path, max_pixels=cfg.get("max_pixels"))
        h, w = rgb.shape[0] - rgb.shape[0] % scale, rgb.shape[1] - rgb.shape[1] % scale
        gt = to_tensor(rgb[:h, :w]).unsqueeze(0).float()
        with torch.no_grad():
            lq, _ = make_lq(degradation, gt, seed, index)
            images = {HR: gt, BICUBIC: bicubic_upscale(lq, (h, w))}
            for label, lg in zip(labels, loaded):
                images[label] = super_resolve(lg.generator, lq).float()
            for version, img in images.items():
                scores = task.score(scorer, img, [item.label])
                for m in task.measures:
                    per_image[version][m].append(scores[m].double().reshape(-1))
        names.append(item.name)
    result = TaskResult(
        task.name,
        task.describe(options),
        versions,
        task.measures,
        names,
        {v: {m: torch.cat(per_image[v][m]) for m in task.measures} for v in versions},
    )
    summarise(result, int(options.get("bootstrap", 1000)), seed)
    out.mkdir(parents=True, exist_ok=True)
    write_task_outputs(result, out)
    print_task(result)
    return result


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def task_files(out: Path, task: str) -> tuple[Path, Path, Path]:
    """The table (CSV), the per-image CSV and the Markdown table of ``task`` in ``out``."""
    return out / f"task_{task}.csv", out / f"task_{task}_per_image.csv", out / f"task_{task}.md"


def write_task_outputs(result: TaskResult, out: Path) -> None:
    """The task's files, each written atomically (never into a FIFO or over a device)."""
    from sr_cli.serialization import atomic_write_text

    table_csv, per_image_csv, table_md = task_files(out, result.task)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(
        [
            "version",
            "measure",
            "mean",
            "ci_low",
            "ci_high",
            "drop",
            "drop_ci_low",
            "drop_ci_high",
        ]
    )
    for s in result.scores:
        writer.writerow(
            [s.version, s.measure]
            + [f"{v:.6f}" for v in (s.mean, *s.interval, s.drop, *s.drop_interval)]
        )
    atomic_write_text(table_csv, buf.getvalue())
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    cols = [(v, m) for v in result.versions for m in result.measures]
    writer.writerow(["image", *(f"{v}/{m}" for v, m in cols)])
    for i, name in enumerate(result.images):
        writer.writerow([name, *(f"{float(result.per_image[v][m][i]):.6f}" for v, m in cols)])
    atomic_write_text(per_image_csv, buf.getvalue())
    atomic_write_text(table_md, task_markdown(result))


def task_markdown(result: TaskResult) -> str:
    head = " | ".join(f"{m} % (95% CI) | drop vs HR (95% CI)" for m in result.measures)
    lines = [
        f"# sr-eval task={result.task}: {len(result.images)} images",
        "",
        result.caption,
        "",
        f"| version | {head} |",
        "|---|" + "---:|---:|" * len(result.measures),
    ]
    for v in result.versions:
        cells = []
        for m in result.measures:
            s = result.score(v, m)
            cells.append(f"{_pct(s.mean)} ({_pct(s.interval[0])}-{_pct(s.interval[1])})")
            cells.append(
                f"{_pct(s.drop)} ({_pct(s.drop_interval[0])} to {_pct(s.drop_interval[1])})"
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Intervals: percentile bootstrap over images ({result.bootstrap} rounds, paired across "
        "versions). Drop = HR's score minus the version's, in points.",
        "",
    ]
    return "\n".join(lines)


def print_task(result: TaskResult, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sr-eval task={result.task} ({len(result.images)} images)")
    table.add_column("Version")
    for m in result.measures:
        table.add_column(f"{m} %", justify="right")
        table.add_column(f"{m} drop", justify="right")
    for v in result.versions:
        cells = []
        for m in result.measures:
            s = result.score(v, m)
            cells += [
                f"{_pct(s.mean)} [{_pct(s.interval[0])}, {_pct(s.interval[1])}]",
                f"{_pct(s.drop)} [{_pct(s.drop_interval[0])}, {_pct(s.drop_interval[1])}]",
            ]
        table.add_row(v, *cells)
    console = Console(file=file, width=160)
    console.print(table)
    if result.caption:
        console.print(result.caption, highlight=False)
