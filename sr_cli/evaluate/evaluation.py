"""Evaluation for ``sr-eval`` (:mod:`sr_cli.commands.eval`): evaluate checkpoints on
benchmark sets, exactly and on any number of devices.

``evaluate(cfg)`` loads every checkpoint (its generator is rebuilt from the model config stored
inside), makes or reads the LQ of every evaluation image and computes, per image:

* ``psnr_y``, ``ssim_y`` under the paper (or MATLAB) protocol of :mod:`sr_cli.metrics.protocol`,
  and ``psnr_rgb``;
* ``lpips`` and ``dists`` through piq, when their weights are already in the torch hub cache
  (nothing is downloaded: otherwise they are listed as unavailable, with the reason);
* ``lr_consistency_psnr``: PSNR between ``D(SR)`` and the LQ, with ``D`` the deterministic part
  of the checkpoint's own degradation (skipped when it has none);
* optionally the piq metrics ``vif``, ``fsim``, ``gmsd``, ``ms_ssim`` and ``brisque``, or any
  metric added to the registry (:mod:`sr_cli.metrics.registry`).

All full-reference metrics compare the 8-bit-rounded SR with GT, border cropped by the scale.
A bicubic baseline row (MATLAB ``imresize`` of the LQ) is always included.

A run folder is scored through ``checkpoints/<checkpoint>.ckpt``: ``checkpoint=last`` (the final
state, the default) or ``checkpoint=best`` (the state chosen on the run's validation images).
Every table says which (``last @ <iteration>``), and when an evaluation set is the run's own
validation folder, a line says the figure is optimistic.

The comparison itself is :func:`sr_cli.evaluate.compare.compare` (shared with ``sr-report``): each
device takes an unpadded shard of the images, and the per-image tables are gathered across
processes, so the result equals the single-device one. The LQ of an HR-only image is drawn from
the ``val_degradation`` stream (:mod:`sr_cli.streams`), as validation during training does.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sr_cli.errors import ConfigError, OutOfMemory, is_out_of_memory, out_of_memory_summary
from sr_cli.evaluate.compare import (
    Comparison,
    checkpoint_rows,
    compare,
    default_lq_config,
    load_checkpoints,
)
from sr_cli.metrics.registry import (
    UNAVAILABLE,
    header,
    metric_names,
    required_weight_files,
    select_metrics,
    weights_unavailable,
)

log = logging.getLogger(__name__)

#: sr-eval's default metrics (``metrics=``) and the optional ones (``extra_metrics=``), from
#: the registry (:mod:`sr_cli.metrics.registry`).
METRICS = metric_names("default")
EXTRA_METRICS = metric_names("extra")
__all__ = [
    "EXTRA_METRICS",
    "METRICS",
    "evaluate",
    "required_weight_files",
    "weights_unavailable",
]


# ---------------------------------------------------------------------------- inputs
def as_dataset_dict(datasets: Any) -> dict[str, str]:
    """``{name: folder}`` from a mapping, a list of folders or one folder."""
    if datasets is None:
        return {}
    if isinstance(datasets, (str, Path)):
        datasets = [datasets]
    if isinstance(datasets, Mapping):
        return {str(k): str(v) for k, v in datasets.items() if v is not None}
    out: dict[str, str] = {}
    for d in datasets:
        out[Path(str(d)).name or str(d)] = str(d)
    return out


# ---------------------------------------------------------------------------- outputs
#: The files sr-eval writes into its output folder.
RESULT_FILES = ("results.csv", "results_per_image.csv", "results.md")


def _write_rows(path: Path, fill) -> None:
    """A CSV written atomically (never into a FIFO or over a device: see serialization)."""
    from sr_cli.serialization import atomic_write_text

    buf = io.StringIO(newline="")
    fill(csv.writer(buf))
    atomic_write_text(path, buf.getvalue())


def write_csv(results: Comparison, path: Path) -> None:
    cols = [
        "dataset",
        "model",
        "arch",
        "checkpoint",
        "scored",
        "iteration",
        "ema",
        "validation_images",
        "images",
    ]

    def fill(writer) -> None:
        writer.writerow([*cols, *results.metrics])
        for row in results.rows:
            cells = []
            for m in results.metrics:
                v = row.get(m)
                cells.append(
                    UNAVAILABLE if m in results.unavailable else ("" if v is None else f"{v:.6f}")
                )
            writer.writerow([_csv_value(row.get(c, "")) for c in cols] + cells)

    _write_rows(path, fill)


def _csv_value(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


def scored_cell(row: Mapping[str, Any]) -> str:
    """``last @ 300``: which checkpoint of the run was scored, and its iteration."""
    if not row.get("scored"):
        return "-"
    at = row.get("iteration")
    return f"{row['scored']} @ {at}" if at not in (None, "") else str(row["scored"])


def write_per_image_csv(results: Comparison, path: Path) -> None:
    def fill(writer) -> None:
        writer.writerow(["dataset", "image", "model", *results.metrics])
        for row in results.per_image:
            writer.writerow(
                [row["dataset"], row["image"], row["model"]]
                + ["" if row.get(m) is None else f"{row[m]:.6f}" for m in results.metrics]
            )

    _write_rows(path, fill)


def markdown(results: Comparison) -> str:
    lines = [
        f"# sr-eval results (x{results.scale}, protocol `{results.protocol}`)",
        "",
        results.caption,
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in results.rows):
        rows = [r for r in results.rows if r["dataset"] == dataset]
        lines += [
            f"## {dataset} ({rows[0]['images']} images)",
            "",
            "| Model | Checkpoint | " + " | ".join(header(m) for m in results.metrics) + " |",
            "|---|---|" + "---:|" * len(results.metrics),
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | {scored_cell(r)} | "
                + " | ".join(results.cell(r, m) for m in results.metrics)
                + " |"
            )
        lines.append("")
    if results.unavailable or results.notes or results.caveats:
        lines += ["## Notes", ""]
        lines += [f"- **{line}**" for line in results.caveats]
        for m, why in results.unavailable.items():
            lines.append(f"- **{header(m)}** {UNAVAILABLE}: {why}")
        for m, why in results.notes.items():
            lines.append(f"- **{header(m)}** {why}")
        lines.append("")
    return "\n".join(lines)


def rich_table(results: Comparison):
    from rich.table import Table

    table = Table(
        title=f"sr-eval x{results.scale} (protocol: {results.protocol})",
        caption=results.caption,
        caption_justify="left",
    )
    table.add_column("Dataset")
    table.add_column("Model")
    table.add_column("Checkpoint")
    for m in results.metrics:
        table.add_column(header(m), justify="right")
    for r in results.rows:
        table.add_row(
            r["dataset"],
            r["model"],
            scored_cell(r),
            *(results.cell(r, m) for m in results.metrics),
        )
    return table


def print_results(results: Comparison, file=None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=max(console.width, 60 + 14 * len(results.metrics)))
    console.print(rich_table(results))
    for line in results.caveats:
        console.print(f"[bold yellow]{escape(line)}[/]", highlight=False)
    for m, why in results.unavailable.items():
        console.print(f"[yellow]{header(m)} {UNAVAILABLE}[/]: {why}", highlight=False)
    for m, why in results.notes.items():
        console.print(f"[yellow]{header(m)}[/] {why}", highlight=False)


def log_to_wandb(results: Comparison, cfg: DictConfig, output_dir: Path) -> None:
    """The result table as a wandb Table (offline unless WANDB_MODE says otherwise)."""
    try:
        import wandb

        wcfg = (cfg.get("logger") or {}).get("wandb") or {}
        run = wandb.init(
            project=wcfg.get("project", "sr-cli"),
            name=wcfg.get("name"),
            group=wcfg.get("group"),
            job_type="eval",
            dir=str(output_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        columns = ["dataset", "model", *results.metrics]
        data = [
            [r["dataset"], r["model"]]
            + [None if m in results.unavailable else r.get(m) for m in results.metrics]
            for r in results.rows
        ]
        run.log({"eval/results": wandb.Table(columns=columns, data=data)})
        for r in results.rows:
            for m in results.metrics:
                if r.get(m) is not None and m not in results.unavailable:
                    run.summary[f"{r['dataset']}/{r['model']}/{m}"] = r[m]
        run.finish()
    except Exception as exc:  # logging must never cost the user the evaluation
        log.warning("could not log the results to wandb: %s", exc)


# ---------------------------------------------------------------------------- evaluate
def _degradation_for(cfg_node: Any, what: str, source: Path | None = None) -> nn.Module:
    """Build a degradation: the user's own ``degradation=`` config with Hydra, one read back from
    checkpoint ``source`` only through the allow-list of :mod:`sr_cli.rebuild`."""
    from hydra.utils import instantiate

    from sr_cli.rebuild import check_stored_config, rebuild

    if source is not None:
        check_stored_config(cfg_node, source, "degradation")
    try:
        if source is not None:
            return rebuild(cfg_node, source, "degradation")
        return instantiate(cfg_node, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"cannot build the {what} degradation from {cfg_node}: {exc}") from exc


def lq_degradation_for(cfg: DictConfig, loaded: list, scale: int) -> tuple[nn.Module, Any]:
    """The degradation that makes the LQ of HR images: ``degradation=`` when set, else the first
    checkpoint's (a warning when the checkpoints disagree), else MATLAB bicubic. Returns
    ``(degradation, its config)``."""
    lq_source = None  # the checkpoint the LQ degradation config was read from, if any
    if cfg.get("degradation"):
        lq_cfg = OmegaConf.to_container(cfg.degradation, resolve=True)
    else:
        lq_source = loaded[0].source if loaded[0].degradation_config else None
        lq_cfg = loaded[0].degradation_config or default_lq_config(scale)
        others = {str(lg.source) for lg in loaded[1:] if lg.degradation_config != lq_cfg}
        if others:
            log.warning(
                "checkpoints were trained with different degradations; LQ is made with that of "
                "%s for all of them (set degradation=... to choose)",
                loaded[0].source,
            )
    lq_degradation = _degradation_for(lq_cfg, "LQ", lq_source)
    if int(getattr(lq_degradation, "scale", scale)) != scale:
        raise ConfigError(
            f"the LQ degradation is x{lq_degradation.scale} but the evaluation is x{scale}"
        )
    return lq_degradation, lq_cfg


#: The metrics the perception-distortion plane needs (``pi`` only where it is registered).
PLANE_METRICS = ("niqe", "rmse_y", "pi")


def plane_files(output_dir: str | Path, dataset: str, stem: str = "plane") -> tuple[Path, Path]:
    """``(<stem>_<dataset>.png, .csv)`` in ``output_dir``; the dataset's name reduced to letters,
    digits, ``.``, ``_`` and ``-`` (a name never leads out of the folder or into markup)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(dataset)).strip("._") or "set"
    base = Path(output_dir) / f"{stem}_{safe}"
    return base.parent / f"{base.name}.png", base.parent / f"{base.name}.csv"


def plane_wanted(cfg: DictConfig, n_checkpoints: int) -> bool:
    """``plane=auto`` (two or more checkpoints), ``true`` or ``false``."""
    value = cfg.get("plane", "auto")
    if value in (True, False):
        return bool(value)
    if str(value) == "auto":
        return n_checkpoints >= 2
    raise ConfigError(f"plane={value!r} is not one of auto, true, false")


def _tiling(cfg: DictConfig) -> tuple[int, int]:
    """``tile`` / ``tile_overlap`` of the eval config, checked (one line naming the option)."""
    tile, overlap = cfg.get("tile") or 0, cfg.get("tile_overlap", 16)
    for key, value in (("tile", tile), ("tile_overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key}={value!r} must be a whole number of LQ pixels >= 0")
    if tile and overlap >= tile:
        raise ConfigError(
            f"tile_overlap={overlap} must be smaller than tile={tile}; e.g. tile=256 "
            "tile_overlap=16"
        )
    return tile, overlap


def evaluate(cfg: DictConfig) -> tuple[Comparison, dict[str, Any]]:
    """Evaluate ``cfg.checkpoints`` on ``cfg.datasets``. Returns ``(results, objects)``.

    Only the global-zero process writes files, prints and logs; every process returns the
    same results.
    """
    from sr_cli.data import sample_dir
    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.environment import setup_environment
    from sr_cli.evaluate.inference import check_checkpoint_choice, resolve_checkpoint
    from sr_cli.metrics.protocol import PROTOCOLS
    from sr_cli.serialization import atomic_write_text, check_output_dir, check_output_file

    setup_environment()
    protocol = str(cfg.get("protocol", "paper"))
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is unknown; choose one of {list(PROTOCOLS)}")
    ckpts = cfg.get("checkpoints") or []
    if isinstance(ckpts, str):
        ckpts = [ckpts]
    extra = list(cfg.get("extra_metrics") or [])
    plane = plane_wanted(cfg, len(ckpts))
    if plane:
        extra += [m for m in PLANE_METRICS if m in metric_names() and m not in extra]
    selection = select_metrics(list(cfg.get("metrics") or []), extra)
    if not ckpts:
        raise ConfigError(
            "no checkpoint to evaluate: pass checkpoints=[path/to/best.ckpt] (a .ckpt or an "
            "sr-train run directory)"
        )
    which = check_checkpoint_choice(str(cfg.get("checkpoint", "last")))
    paths = [resolve_checkpoint(p, which) for p in ckpts]
    loaded, scale = load_checkpoints(
        paths, prefer_ema=bool(cfg.get("prefer_ema", True)), scale=cfg.get("scale")
    )

    lq_degradation, lq_cfg = lq_degradation_for(cfg, loaded, scale)
    rows = checkpoint_rows(
        loaded,
        lq_degradation,
        lq_cfg,
        build_degradation=lambda c, source: _degradation_for(c, "checkpoint", source),
    )

    dataset_dirs = as_dataset_dict(cfg.get("datasets"))
    if cfg.get("datasets") is None:
        dataset_dirs = {"samples": sample_dir("val")}
    if not dataset_dirs:
        raise ConfigError("no dataset to evaluate on: pass e.g. 'datasets={set5:/data/Set5}'")
    datasets = {
        name: open_eval_dataset(
            path,
            scale,
            cache_images=cfg.get("cache_images", "auto"),
            max_pixels=cfg.get("max_pixels"),
        )
        for name, path in dataset_dirs.items()
    }
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    trainer_kwargs.pop("_target_", None)
    output_dir = Path(cfg.output_dir)
    tile, overlap = _tiling(cfg)
    check_output_dir(output_dir, "output_dir")  # before anything is computed
    for name in RESULT_FILES:
        check_output_file(output_dir / name, "output_dir", folder=False)
    for name in datasets if plane else ():
        for path in plane_files(output_dir, name):
            check_output_file(path, "output_dir", folder=False)
    try:
        results, trainer, module = compare(
            rows,
            datasets,
            lq_degradation,
            selection.metrics,
            scale,
            protocol=protocol,
            unavailable=selection.unavailable,
            seed=int(cfg.get("seed", 0)),
            num_workers=int(cfg.get("num_workers", 0)),
            tile=tile,
            tile_overlap=overlap,
            dataset_dirs=dataset_dirs,
            trainer_kwargs={"default_root_dir": str(output_dir), **trainer_kwargs},
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        half = max(1, tile // 2)
        if not tile:
            hint = "super-resolve on tiles with tile=256 (tile_overlap=16)"
        elif half > overlap:
            hint = f"lower tile (now {tile}), e.g. tile={half}"
        else:
            hint = f"lower tile and tile_overlap (now {tile}, {overlap}), e.g. tile={half} " + (
                f"tile_overlap={half // 4}"
            )
        raise OutOfMemory(
            f"{out_of_memory_summary(exc)} while evaluating; {hint}, or evaluate fewer "
            f"checkpoints at once (now {len(paths)}); nothing was written."
        ) from exc
    results.output_dir = output_dir
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_csv(results, output_dir / "results.csv")
        write_per_image_csv(results, output_dir / "results_per_image.csv")
        atomic_write_text(output_dir / "results.md", markdown(results))
        print_results(results)
        if (cfg.get("logger") or {}).get("wandb"):
            log_to_wandb(results, cfg, output_dir)
    return results, {
        "trainer": trainer,
        "module": module,
        "output_dir": output_dir,
        "plane": plane,
        "is_global_zero": trainer.is_global_zero,
    }
