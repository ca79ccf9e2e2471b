"""Compare generators on image sets: the per-image table that ``sr-eval`` writes and
``sr-report`` renders.

:func:`load_rows` opens checkpoints (the generator is rebuilt from the config stored inside),
checks they share one scale and labels them (the run name stored in the checkpoint, else the
run directory). :func:`compare` then runs :class:`CompareModule` through ``trainer.test``: each
device takes an unpadded shard of the images (:class:`~sr_cli.data.datasets.ShardSampler`),
makes the LQ of HR-only images with the ``val_degradation`` random stream (the same LQ as
validation during training, see :mod:`sr_cli.streams`), super-resolves it with every row (the
bicubic baseline first) and computes every selected metric of the registry
(:mod:`sr_cli.metrics.registry`). The per-image tables are gathered across processes with
torchmetrics (:class:`~sr_cli.metrics.aggregate.PerImageTable`), so the result equals the
single-device one exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sr_cli.degradations.base import DegradationNotInvertible
from sr_cli.errors import ConfigError, is_out_of_memory, one_line
from sr_cli.metrics.aggregate import PerImageTable, image_mean
from sr_cli.metrics.protocol import PROTOCOL_DESCRIPTIONS
from sr_cli.metrics.registry import (
    MetricInputs,
    MetricNotApplicable,
    compute_metrics,
    get_metric,
)
from sr_cli.streams import stream_generator

BICUBIC = "bicubic"

#: ``on_image(dataset, index, name, lq, gt, {row label: sr})``, called once per image.
ImageCallback = Callable[[str, int, str, Tensor, Tensor, dict[str, Tensor]], None]


# ---------------------------------------------------------------------------- rows
@dataclass
class GeneratorRow:
    """One row of the comparison: the bicubic baseline (no generator) or a checkpoint."""

    label: str
    generator: nn.Module | None = None
    replay: nn.Module | None = None  # degradation whose replay() maps SR to LQ
    shares_lq_params: bool = False
    checkpoint: str = ""
    arch: str = ""
    iteration: int | None = None
    ema: bool = False


def checkpoint_label(path: Path, name: str | None = None) -> str:
    """A checkpoint's label: the run name stored in it, else ``<run dir>/<stem>`` for sr-train's
    layout, else the file stem."""
    if name:
        return str(name)
    path = Path(path)
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Make labels unique by appending ``#2``, ``#3``... to repeats."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def load_checkpoints(paths: Sequence[Path], prefer_ema: bool = True, scale: int | None = None):
    """Load every checkpoint's generator and check they share one scale. Returns
    ``(loaded, scale)``; ``scale=None`` takes the first checkpoint's."""
    from sr_cli.evaluate.inference import load_generator

    loaded = [load_generator(p, prefer_ema=prefer_ema) for p in paths]
    scale = int(scale) if scale else loaded[0].scale
    for lg in loaded:
        if lg.scale != scale:
            raise ConfigError(
                f"checkpoint {str(lg.source)!r} is x{lg.scale} but {str(loaded[0].source)!r} "
                f"(or scale=) is x{scale}; compare checkpoints of one scale at a time."
            )
    return loaded, scale


def default_lq_config(scale: int) -> dict[str, Any]:
    """The LQ degradation when a checkpoint stores none: MATLAB bicubic, 8-bit quantized."""
    return {
        "_target_": "sr_cli.degradations.pipeline.ResizeDownsample",
        "scale": int(scale),
        "mode": "bicubic",
        "quantize": True,
    }


def checkpoint_rows(
    loaded: Sequence[Any],
    lq_degradation: nn.Module,
    lq_config: Mapping | None,
    labels: Sequence[str] | None = None,
    build_degradation: Callable[[Mapping, Path], nn.Module] | None = None,
) -> list[GeneratorRow]:
    """The bicubic row, then one row per loaded checkpoint (label: its stored run name, else
    its path). A checkpoint trained with another degradation replays its own for LR
    consistency when ``build_degradation`` is given."""
    labels = labels or unique_labels(
        [checkpoint_label(lg.source, getattr(lg, "name", None)) for lg in loaded]
    )
    rows = [
        GeneratorRow(BICUBIC, replay=lq_degradation, shares_lq_params=True, arch="MATLAB bicubic")
    ]
    for label, lg in zip(labels, loaded):
        same = lg.degradation_config == lq_config
        replay = None
        if lg.degradation_config:
            if same:
                replay = lq_degradation
            elif build_degradation is not None:
                replay = build_degradation(lg.degradation_config, lg.source)
        rows.append(
            GeneratorRow(
                label,
                generator=lg.generator,
                replay=replay,
                shares_lq_params=same,
                checkpoint=str(lg.source),
                arch=str(lg.model_config.get("name", type(lg.generator).__name__)),
                iteration=lg.iteration,
                ema=lg.used_ema,
            )
        )
    return rows


def make_lq(degradation: nn.Module, gt: Tensor, seed: int, index: int) -> tuple[Tensor, dict]:
    """LQ of evaluation image ``index`` and the degradation's parameters, drawn from the
    ``val_degradation`` stream (as validation during training does)."""
    params = degradation.sample(gt, generator=stream_generator(seed, "val_degradation", index))
    return degradation(gt, params), params


def generator_sr(generator: nn.Module, lq: Tensor, scale: int, tile: int = 0, overlap: int = 16):
    """SR of a generator, on overlapping tiles of ``tile`` LQ pixels when ``tile > 0`` (an image
    no larger than one tile is one pass, so ``tile`` changes nothing for it)."""
    from sr_cli.evaluate.inference import super_resolve
    from sr_cli.evaluate.tiling import tiled_forward

    if tile <= 0:
        return super_resolve(generator, lq).float()
    with torch.no_grad():
        return tiled_forward(lambda x: super_resolve(generator, x), lq, scale, tile, overlap)


def super_resolve_row(
    row: GeneratorRow,
    generator: nn.Module,
    lq: Tensor,
    gt: Tensor,
    scale: int = 1,
    tile: int = 0,
    overlap: int = 16,
) -> Tensor:
    """SR of one row (MATLAB bicubic for the baseline; ``tile > 0``: the generator on tiles of
    ``tile`` LQ pixels), checked against GT's size."""
    from sr_cli.degradations.resize import imresize

    if row.generator is None:
        sr = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
    else:
        sr = generator_sr(generator, lq, scale, tile, overlap).clamp(0, 1)
    if sr.shape != gt.shape:
        raise ConfigError(
            f"{row.label} turned a {tuple(lq.shape[-2:])} LQ into {tuple(sr.shape[-2:])}, "
            f"but GT is {tuple(gt.shape[-2:])}: check the scale."
        )
    return sr


# ---------------------------------------------------------------------------- the module
class CompareModule(pl.LightningModule):
    """Per-image metrics of every row on this process's shard, gathered at the end.

    After ``trainer.test``, :attr:`values` maps each dataset name to a float64 tensor
    ``(N_images, N_rows, N_metrics)`` (NaN where a metric could not be computed), identical on
    every process.
    """

    def __init__(
        self,
        rows: Sequence[GeneratorRow],
        datasets: Mapping[str, Dataset],
        lq_degradation: nn.Module,
        metrics: Sequence[str],
        scale: int,
        protocol: str = "paper",
        seed: int = 0,
        num_workers: int = 0,
        on_image: ImageCallback | None = None,
        tile: int = 0,
        tile_overlap: int = 16,
    ) -> None:
        super().__init__()
        from sr_cli.evaluate.tiling import check_tiling

        check_tiling(tile, tile_overlap)
        self.tile, self.tile_overlap = int(tile or 0), int(tile_overlap)
        self.rows = list(rows)
        self.generators = nn.ModuleList([r.generator or nn.Identity() for r in self.rows])
        self.replays = nn.ModuleList([r.replay or nn.Identity() for r in self.rows])
        self.lq_degradation = lq_degradation
        specs = [get_metric(m) for m in metrics]
        self.built = nn.ModuleDict({s.name: s.build() for s in specs if s.build is not None})
        self.datasets = dict(datasets)
        self.metrics = list(metrics)
        self.scale = int(scale)
        self.protocol = protocol
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.on_image = on_image
        self.notes: dict[str, str] = {}
        self.values: dict[str, Tensor] = {}
        self.image_names: dict[str, list[str]] = {}
        self._tables: list[PerImageTable] = []

    def test_dataloader(self) -> list[DataLoader]:
        from sr_cli.data.datasets import ShardSampler

        rank = self.trainer.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        return [
            DataLoader(
                ds,
                batch_size=1,
                sampler=ShardSampler(len(ds), rank, world),
                num_workers=self.num_workers,
            )
            for ds in self.datasets.values()
        ]

    def on_test_epoch_start(self) -> None:
        width = len(self.rows) * len(self.metrics)
        self._tables = [PerImageTable(width, self.device) for _ in self.datasets]
        self._names = {i: [""] * len(ds) for i, ds in enumerate(self.datasets.values())}

    def _inputs(
        self, r: int, sr: Tensor, gt: Tensor, lq: Tensor, params: dict, index: int, gt_cache=None
    ):
        row, replay = self.rows[r], None
        if row.replay is not None:
            op = self.replays[r]

            def replay(s: Tensor) -> Tensor:
                p = params
                if not row.shares_lq_params:  # its own degradation: draw its own parameters
                    p = op.sample(s, generator=stream_generator(self.seed, "eval_replay", index, r))
                return op.replay(s, p)

        missing = "the checkpoint stores no degradation config"
        inputs = MetricInputs(
            sr, gt, lq, self.scale, self.protocol, replay, missing, gt_cache=gt_cache
        )
        inputs.upscale = lambda x: self.upscale_row(r, x)
        return inputs

    def upscale_row(self, r: int, lq: Tensor) -> Tensor:
        """SR of any LQ by row ``r`` (MATLAB bicubic for the baseline), for metrics that
        super-resolve other inputs than the image's LQ."""
        from sr_cli.degradations.resize import imresize

        if self.rows[r].generator is None:
            return imresize(lq, scale=self.scale).clamp(0, 1)
        return generator_sr(self.generators[r], lq, self.scale, self.tile, self.tile_overlap)

    def row_metrics(self, r: int, inputs: MetricInputs) -> Tensor:
        """Every selected metric of one row for one image: ``(B, N_metrics)`` float64."""
        label = self.rows[r].label

        def on_skip(name: str, exc: Exception) -> None:
            if is_out_of_memory(exc):  # never a silently missing value: the run stops
                raise exc
            if isinstance(exc, (MetricNotApplicable, DegradationNotInvertible)):
                self.notes.setdefault(name, f"skipped for {label}: {exc}")
            else:
                self.notes.setdefault(name, f"could not be computed: {one_line(exc)}")

        skip = (DegradationNotInvertible, ValueError, AssertionError, RuntimeError)
        return compute_metrics(self.metrics, inputs, dict(self.built), on_skip, skip)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        gt = batch["gt"]
        index = int(batch["index"][0])
        if "lq" in batch:
            lq, params = batch["lq"], {}
        else:
            lq, params = make_lq(self.lq_degradation, gt, self.seed, index)
        values, srs, gt_cache = [], {}, {}  # GT's Y planes, computed once for all rows
        for r, row in enumerate(self.rows):
            sr = super_resolve_row(
                row, self.generators[r], lq, gt, self.scale, self.tile, self.tile_overlap
            )
            srs[row.label] = sr
            inputs = self._inputs(r, sr, gt, lq, params, index, gt_cache)
            values.append(self.row_metrics(r, inputs))
        self._tables[dataloader_idx].update(batch["index"], torch.cat(values, dim=1))
        name = batch["name"][0]
        self._names[dataloader_idx][index] = name
        if self.on_image is not None:
            self.on_image(list(self.datasets)[dataloader_idx], index, name, lq, gt, srs)

    def on_test_epoch_end(self) -> None:
        for i, (name, ds) in enumerate(self.datasets.items()):
            table = self._tables[i].compute(len(ds))
            self.values[name] = table.reshape(len(ds), len(self.rows), len(self.metrics))
            files = getattr(ds, "files", None)
            self.image_names[name] = (
                [Path(f).stem for f in files]
                if files is not None and len(files) == len(ds)
                else list(self._names[i])
            )


# ---------------------------------------------------------------------------- results
@dataclass
class Comparison:
    """What :func:`compare` computed. ``rows`` hold per-dataset means (``None``: not
    available), ``per_image`` every image's values; ``unavailable`` the metrics that could not
    run at all (with the reason), ``notes`` those skipped for some rows."""

    protocol: str
    scale: int
    metrics: list[str]
    rows: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    output_dir: Path | None = None
    #: LQ tile side of the generators' SR (0: whole images) and the tiles' overlap.
    tile: int = 0
    tile_overlap: int = 0

    def row(self, dataset: str, model: str) -> dict[str, Any]:
        for r in self.rows:
            if r["dataset"] == dataset and r["model"] == model:
                return r
        raise KeyError(f"no row for dataset {dataset!r} and model {model!r}")

    def image(self, dataset: str, image: str, model: str) -> dict[str, Any]:
        for r in self.per_image:
            if (r["dataset"], r["image"], r["model"]) == (dataset, image, model):
                return r
        raise KeyError(f"no value for {image!r} of {dataset!r} and model {model!r}")

    @property
    def caption(self) -> str:
        return (
            f"protocol={self.protocol}: {PROTOCOL_DESCRIPTIONS[self.protocol]}. Other "
            f"full-reference metrics compare the 8-bit SR with GT, border cropped by {self.scale}."
            + (
                f" Generators ran on {self.tile}-pixel LQ tiles overlapping by "
                f"{self.tile_overlap}, blended (tile={self.tile})."
                if self.tile
                else ""
            )
        )

    def cell(self, row: Mapping[str, Any], metric: str) -> str:
        """A table cell: the value with the metric's decimals, ``unavailable`` or ``n/a``."""
        if metric in self.unavailable:
            from sr_cli.metrics.registry import UNAVAILABLE

            return UNAVAILABLE
        return get_metric(metric).format(row.get(metric))


def collect(
    module: CompareModule, protocol: str, scale: int, metrics: list[str], unavailable: dict
) -> Comparison:
    """Per-dataset means (over valid images, in image order) and per-image values."""
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    for dataset, values in module.values.items():
        names = module.image_names[dataset]
        for r, row in enumerate(module.rows):
            entry: dict[str, Any] = {
                "dataset": dataset,
                "model": row.label,
                "arch": row.arch,
                "checkpoint": row.checkpoint,
                "iteration": row.iteration if row.iteration is not None else "",
                "ema": row.ema,
                "images": values.shape[0],
            }
            for m in metrics:
                entry[m] = (
                    None if m in unavailable else image_mean(values[:, r, module.metrics.index(m)])
                )
            rows.append(entry)
            for i, name in enumerate(names):
                item: dict[str, Any] = {"dataset": dataset, "image": name, "model": row.label}
                for m in metrics:
                    v = None if m in unavailable else float(values[i, r, module.metrics.index(m)])
                    item[m] = None if v is None or v != v else v
                per_image.append(item)
    return Comparison(
        protocol,
        scale,
        metrics,
        rows,
        per_image,
        unavailable,
        dict(module.notes),
        tile=module.tile,
        tile_overlap=module.tile_overlap if module.tile else 0,
    )


def compare(
    rows: Sequence[GeneratorRow],
    datasets: Mapping[str, Dataset],
    lq_degradation: nn.Module,
    metrics: Sequence[str],
    scale: int,
    *,
    unavailable: Mapping[str, str] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> tuple[Comparison, pl.Trainer, CompareModule]:
    """Compare ``rows`` on ``datasets``; every process returns the same :class:`Comparison`.

    ``metrics`` are registry names; those in ``unavailable`` are listed but not computed.
    ``options`` go to :class:`CompareModule` (``protocol``, ``seed``, ``num_workers``,
    ``on_image``); ``trainer_kwargs`` to the ``pytorch_lightning.Trainer`` (one CPU device
    unless they say otherwise).
    """
    unavailable = dict(unavailable or {})
    active = [m for m in metrics if m not in unavailable]
    module = CompareModule(rows, datasets, lq_degradation, active, scale, **options)
    trainer = pl.Trainer(
        **{
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            "use_distributed_sampler": False,
            "accelerator": "cpu",
            "devices": 1,
            **dict(trainer_kwargs or {}),
        }
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.test(module, verbose=False)
    results = collect(module, module.protocol, scale, list(metrics), unavailable)
    return results, trainer, module
