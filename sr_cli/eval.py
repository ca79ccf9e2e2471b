"""``sr-eval``: evaluate checkpoints on benchmark sets, exactly and on any number of devices.

``evaluate(cfg)`` loads every checkpoint (its generator is rebuilt from the model config stored
inside), makes or reads the LQ of every evaluation image and computes, per image:

* ``psnr_y``, ``ssim_y`` under the paper (or MATLAB) protocol of :mod:`sr_cli.metrics.protocol`,
  and ``psnr_rgb``;
* ``lpips`` and ``dists`` through piq, when their weights are already in the torch hub cache
  (nothing is downloaded: otherwise they are listed as unavailable, with the reason);
* ``lr_consistency_psnr``: PSNR between ``D(SR)`` and the LQ, with ``D`` the deterministic part
  of the checkpoint's own degradation (skipped when it has none);
* optionally the piq metrics ``vif``, ``fsim``, ``gmsd``, ``ms_ssim`` and ``brisque``.

All full-reference metrics compare the 8-bit-rounded SR with GT, border cropped by the scale.
A bicubic baseline row (MATLAB ``imresize`` of the LQ) is always included.

Evaluation runs in a small LightningModule through ``trainer.test``: each device takes an
unpadded shard of the images (:class:`~sr_cli.data.datasets.ShardSampler`), fills its rows of a
per-image table, and the tables are summed across processes, so the result equals the
single-device one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sr_cli.config import config_dir, register_resolvers
from sr_cli.degradations.base import seeded_generator
from sr_cli.errors import ConfigError, exit_on_user_error

log = logging.getLogger(__name__)

#: Metrics computed from the protocol module.
PROTOCOL_METRICS = ("psnr_y", "ssim_y", "psnr_rgb")
#: Perceptual metrics that need pretrained weights (piq class name).
PERCEPTUAL_METRICS = {"lpips": "LPIPS", "dists": "DISTS"}
#: Optional piq metrics: full reference, and no reference (``brisque``).
EXTRA_FR_METRICS = ("vif", "fsim", "gmsd", "ms_ssim")
EXTRA_NR_METRICS = ("brisque",)
METRICS = (*PROTOCOL_METRICS, *PERCEPTUAL_METRICS, "lr_consistency_psnr")
EXTRA_METRICS = (*EXTRA_FR_METRICS, *EXTRA_NR_METRICS)
#: Metrics where lower is better.
LOWER_IS_BETTER = {"lpips", "dists", "gmsd", "brisque"}
#: Display name and decimals of each metric.
DISPLAY = {
    "psnr_y": ("PSNR_Y", 2),
    "ssim_y": ("SSIM_Y", 4),
    "psnr_rgb": ("PSNR_RGB", 2),
    "lpips": ("LPIPS", 4),
    "dists": ("DISTS", 4),
    "lr_consistency_psnr": ("LR-cons. PSNR", 2),
    "vif": ("VIF", 4),
    "fsim": ("FSIM", 4),
    "gmsd": ("GMSD", 4),
    "ms_ssim": ("MS-SSIM", 4),
    "brisque": ("BRISQUE", 2),
}
BICUBIC = "bicubic"
UNAVAILABLE = "unavailable"


# ---------------------------------------------------------------------------- weights cache
def hub_checkpoint(filename: str) -> Path:
    """Where ``torch.hub`` caches a downloaded file: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def required_weight_files(metric: str) -> list[str]:
    """File names a piq metric loads through ``torch.hub`` (read from piq and torchvision)."""
    import piq

    if metric in PERCEPTUAL_METRICS:
        from torchvision.models import VGG16_Weights

        cls = getattr(piq, PERCEPTUAL_METRICS[metric])
        return [
            os.path.basename(VGG16_Weights.IMAGENET1K_V1.url),
            os.path.basename(cls._weights_url),
        ]
    if metric == "brisque":
        return ["brisque_svm_weights.pt"]  # piq.brisque._score_svr, v0.4.0 release asset
    return []


def weights_unavailable(metric: str) -> str | None:
    """Why a metric cannot run (its weights are not cached), or ``None`` when it can."""
    missing = [str(hub_checkpoint(f)) for f in required_weight_files(metric)]
    missing = [m for m in missing if not Path(m).is_file()]
    if not missing:
        return None
    return (
        f"weights not in the torch hub cache (missing {', '.join(missing)}); nothing is "
        "downloaded. Copy the files there, or set TORCH_HOME to a cache that has them."
    )


def build_perceptual(metric: str) -> nn.Module:
    """piq's LPIPS or DISTS with per-image output, from cached weights only."""
    import piq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation
        return getattr(piq, PERCEPTUAL_METRICS[metric])(reduction="none").eval()


# ---------------------------------------------------------------------------- inputs
def checkpoint_label(path: Path) -> str:
    """Short name of a checkpoint: ``<run dir>/<stem>`` for sr-train's layout, else the stem."""
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


# ---------------------------------------------------------------------------- the module
@dataclass
class EvalRow:
    """One row of the result table: the bicubic baseline or a checkpoint."""

    label: str
    generator: nn.Module | None = None
    consistency: nn.Module | None = None  # degradation whose replay() maps SR to LQ
    shares_lq_params: bool = False
    checkpoint: str = ""
    arch: str = ""
    iteration: int | None = None
    ema: bool = False


class EvalModule(pl.LightningModule):
    """Computes per-image metrics of every row on this process's shard; tables summed at the end.

    After ``trainer.test``, :attr:`values` maps each dataset name to ``(values, valid)``:
    float64 tensors ``(N_images, N_rows, N_metrics)`` holding every image's metrics (NaN where
    a metric could not be computed) and a 0/1 mask, identical on every process.
    """

    def __init__(
        self,
        rows: Sequence[EvalRow],
        datasets: Mapping[str, Dataset],
        lq_degradation: nn.Module,
        metrics: Sequence[str],
        perceptual: Mapping[str, nn.Module],
        scale: int,
        protocol: str = "paper",
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.rows = list(rows)
        self.generators = nn.ModuleList([r.generator or nn.Identity() for r in self.rows])
        self.consistency_ops = nn.ModuleList([r.consistency or nn.Identity() for r in self.rows])
        self.lq_degradation = lq_degradation
        self.perceptual = nn.ModuleDict(dict(perceptual))
        self.datasets = dict(datasets)
        self.metrics = list(metrics)
        self.scale = int(scale)
        self.protocol = protocol
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.notes: dict[str, str] = {}
        self._tables: dict[int, tuple[Tensor, Tensor]] = {}
        self.values: dict[str, tuple[Tensor, Tensor]] = {}
        self.image_names: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ data
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
        shape = (len(self.rows), len(self.metrics))
        self._tables = {
            i: (
                torch.zeros(len(ds), *shape, dtype=torch.float64, device=self.device),
                torch.zeros(len(ds), *shape, dtype=torch.float64, device=self.device),
            )
            for i, ds in enumerate(self.datasets.values())
        }
        self._names = {i: [""] * len(ds) for i, ds in enumerate(self.datasets.values())}

    # ------------------------------------------------------------------ metrics
    def _note(self, metric: str, message: str) -> None:
        self.notes.setdefault(metric, message)

    def row_metrics(
        self, row: int, sr: Tensor, gt: Tensor, lq: Tensor, params: dict, index: int, ds: int
    ) -> dict[str, Tensor]:
        """Every requested metric of one row for one image, as float64 ``(B,)`` tensors."""
        from sr_cli.degradations.base import DegradationNotInvertible
        from sr_cli.metrics.protocol import crop_border, protocol_metrics, psnr, to_uint8_range

        out: dict[str, Tensor] = {}
        if any(m in PROTOCOL_METRICS for m in self.metrics):
            out.update(protocol_metrics(sr, gt, self.scale, self.protocol))
        sr8 = to_uint8_range(sr.float()) / 255.0
        gt_c, sr_c = crop_border(gt.float(), self.scale), crop_border(sr8, self.scale)
        nan = torch.full((gt.shape[0],), float("nan"), dtype=torch.float64, device=gt.device)
        for name in self.metrics:
            if name in out:
                continue
            try:
                if name == "lr_consistency_psnr":
                    op = self.consistency_ops[row]
                    if self.rows[row].consistency is None:
                        raise DegradationNotInvertible(
                            "the checkpoint stores no degradation config"
                        )
                    if not self.rows[row].shares_lq_params:
                        gen = seeded_generator(self.seed, ds, index, row)
                        params = op.sample(sr8, generator=gen)
                    value = psnr(op.replay(sr8, params), lq)
                elif name in self.perceptual:
                    value = self.perceptual[name](sr_c, gt_c)
                else:
                    value = self._piq_metric(name, sr_c, gt_c)
                out[name] = value.detach().double().reshape(-1)
            except DegradationNotInvertible as exc:
                self._note(name, f"skipped for {self.rows[row].label}: {exc}")
                out[name] = nan
            except (ValueError, AssertionError, RuntimeError) as exc:
                self._note(name, f"could not be computed: {str(exc).splitlines()[0]}")
                out[name] = nan
        return out

    @staticmethod
    def _piq_metric(name: str, x: Tensor, y: Tensor) -> Tensor:
        import piq

        x, y = x.clamp(0, 1), y.clamp(0, 1)
        if name == "vif":
            return piq.vif_p(x, y, data_range=1.0, reduction="none")
        if name == "fsim":
            return piq.fsim(x, y, data_range=1.0, reduction="none")
        if name == "gmsd":
            return piq.gmsd(x, y, data_range=1.0, reduction="none")
        if name == "ms_ssim":
            return piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none")
        if name == "brisque":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return piq.brisque(x, data_range=1.0, reduction="none")
        raise ValueError(f"unknown metric {name!r}")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        from sr_cli.degradations.resize import imresize
        from sr_cli.inference import super_resolve

        gt = batch["gt"]
        index = int(batch["index"][0])
        if "lq" in batch:
            lq, params = batch["lq"], {}
        else:
            gen = seeded_generator(self.seed, dataloader_idx, index)
            params = self.lq_degradation.sample(gt, generator=gen)
            lq = self.lq_degradation(gt, params)
        values, valid = self._tables[dataloader_idx]
        for r, row in enumerate(self.rows):
            if row.generator is None:
                sr = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
            else:
                sr = super_resolve(self.generators[r], lq).float()
            if sr.shape != gt.shape:
                raise ConfigError(
                    f"{row.label} turned a {tuple(lq.shape[-2:])} LQ into {tuple(sr.shape[-2:])}, "
                    f"but GT {batch['name'][0]!r} is {tuple(gt.shape[-2:])}: check the scale."
                )
            metrics = self.row_metrics(r, sr, gt, lq, params, index, dataloader_idx)
            for m, name in enumerate(self.metrics):
                v = metrics[name][0]
                ok = not bool(torch.isnan(v))
                values[index, r, m] = v if ok else 0.0
                valid[index, r, m] = 1.0 if ok else 0.0
        self._names[dataloader_idx][index] = batch["name"][0]

    def on_test_epoch_end(self) -> None:
        strategy = self.trainer.strategy
        for i, name in enumerate(self.datasets):
            values, valid = self._tables[i]
            # Every image was evaluated on exactly one process: summing gives the full table.
            values = strategy.reduce(values, reduce_op="sum")
            valid = strategy.reduce(valid, reduce_op="sum")
            values = torch.where(valid > 0, values, torch.full_like(values, float("nan")))
            self.values[name] = (values.cpu(), valid.cpu())
            ds = self.datasets[name]
            files = getattr(ds, "files", None)
            self.image_names[name] = (
                [Path(f).stem for f in files]
                if files is not None and len(files) == len(ds)
                else list(self._names[i])
            )


# ---------------------------------------------------------------------------- results
@dataclass
class EvalResults:
    """What ``sr-eval`` computed. ``rows`` hold the per-dataset means (``None``: not available)."""

    protocol: str
    scale: int
    metrics: list[str]
    rows: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    output_dir: Path | None = None

    def row(self, dataset: str, model: str) -> dict[str, Any]:
        for r in self.rows:
            if r["dataset"] == dataset and r["model"] == model:
                return r
        raise KeyError(f"no row for dataset {dataset!r} and model {model!r}")

    @property
    def caption(self) -> str:
        from sr_cli.metrics.protocol import PROTOCOL_DESCRIPTIONS

        return (
            f"protocol={self.protocol}: {PROTOCOL_DESCRIPTIONS[self.protocol]}. Other "
            f"full-reference metrics compare the 8-bit SR with GT, border cropped by {self.scale}."
        )

    def cell(self, row: dict[str, Any], metric: str) -> str:
        if metric in self.unavailable:
            return UNAVAILABLE
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.{DISPLAY.get(metric, (metric, 4))[1]}f}"


def header(metric: str) -> str:
    name = DISPLAY.get(metric, (metric, 4))[0]
    return f"{name} {'↓' if metric in LOWER_IS_BETTER else '↑'}"


def write_csv(results: EvalResults, path: Path) -> None:
    cols = ["dataset", "model", "arch", "checkpoint", "iteration", "ema", "images"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*cols, *results.metrics])
        for row in results.rows:
            cells = []
            for m in results.metrics:
                v = row.get(m)
                cells.append(
                    UNAVAILABLE if m in results.unavailable else ("" if v is None else f"{v:.6f}")
                )
            writer.writerow([row.get(c, "") for c in cols] + cells)


def write_per_image_csv(results: EvalResults, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "image", "model", *results.metrics])
        for row in results.per_image:
            writer.writerow(
                [row["dataset"], row["image"], row["model"]]
                + ["" if row.get(m) is None else f"{row[m]:.6f}" for m in results.metrics]
            )


def markdown(results: EvalResults) -> str:
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
            "| Model | " + " | ".join(header(m) for m in results.metrics) + " |",
            "|---|" + "---:|" * len(results.metrics),
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | "
                + " | ".join(results.cell(r, m) for m in results.metrics)
                + " |"
            )
        lines.append("")
    if results.unavailable or results.notes:
        lines += ["## Notes", ""]
        for m, why in results.unavailable.items():
            lines.append(f"- **{header(m)}** {UNAVAILABLE}: {why}")
        for m, why in results.notes.items():
            lines.append(f"- **{header(m)}** {why}")
        lines.append("")
    return "\n".join(lines)


def rich_table(results: EvalResults):
    from rich.table import Table

    table = Table(
        title=f"sr-eval x{results.scale} (protocol: {results.protocol})",
        caption=results.caption,
        caption_justify="left",
    )
    table.add_column("Dataset")
    table.add_column("Model")
    for m in results.metrics:
        table.add_column(header(m), justify="right")
    for r in results.rows:
        table.add_row(r["dataset"], r["model"], *(results.cell(r, m) for m in results.metrics))
    return table


def print_results(results: EvalResults, file=None) -> None:
    from rich.console import Console

    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=max(console.width, 60 + 14 * len(results.metrics)))
    console.print(rich_table(results))
    for m, why in results.unavailable.items():
        console.print(f"[yellow]{header(m)} {UNAVAILABLE}[/]: {why}", highlight=False)
    for m, why in results.notes.items():
        console.print(f"[yellow]{header(m)}[/] {why}", highlight=False)


def log_to_wandb(results: EvalResults, cfg: DictConfig, output_dir: Path) -> None:
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
def _check_metrics(cfg: DictConfig) -> list[str]:
    metrics = list(cfg.get("metrics") or [])
    extra = list(cfg.get("extra_metrics") or [])
    for name in metrics:
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r} in metrics; choose from {list(METRICS)}")
    for name in extra:
        if name not in EXTRA_METRICS and name not in METRICS:
            raise ConfigError(
                f"unknown metric {name!r} in extra_metrics; choose from {list(EXTRA_METRICS)}"
            )
    out = list(dict.fromkeys([*metrics, *extra]))
    if not out:
        raise ConfigError("no metric selected: set e.g. metrics=[psnr_y,ssim_y]")
    return out


def _degradation_for(cfg_node: Any, what: str) -> nn.Module:
    from hydra.utils import instantiate

    try:
        return instantiate(cfg_node, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"cannot build the {what} degradation from {cfg_node}: {exc}") from exc


def evaluate(cfg: DictConfig) -> tuple[EvalResults, dict[str, Any]]:
    """Evaluate ``cfg.checkpoints`` on ``cfg.datasets``. Returns ``(results, objects)``.

    Only the global-zero process writes files, prints and logs; every process returns the
    same results.
    """
    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.inference import load_generator, resolve_checkpoint
    from sr_cli.metrics.protocol import PROTOCOLS
    from sr_cli.train import setup_environment

    setup_environment()
    protocol = str(cfg.get("protocol", "paper"))
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is unknown; choose one of {list(PROTOCOLS)}")
    metrics = _check_metrics(cfg)
    ckpts = cfg.get("checkpoints") or []
    if isinstance(ckpts, str):
        ckpts = [ckpts]
    if not ckpts:
        raise ConfigError(
            "no checkpoint to evaluate: pass checkpoints=[path/to/best.ckpt] (a .ckpt or an "
            "sr-train run directory)"
        )
    paths = [resolve_checkpoint(p) for p in ckpts]
    loaded = [load_generator(p, prefer_ema=bool(cfg.get("prefer_ema", True))) for p in paths]
    scale = int(cfg.scale) if cfg.get("scale") else loaded[0].scale
    for lg in loaded:
        if lg.scale != scale:
            raise ConfigError(
                f"checkpoint {str(lg.source)!r} is x{lg.scale} but the evaluation is x{scale}; "
                "evaluate checkpoints of one scale at a time (or set scale= to match)."
            )

    # LQ degradation for HR-only folders.
    if cfg.get("degradation"):
        lq_cfg = OmegaConf.to_container(cfg.degradation, resolve=True)
    else:
        lq_cfg = loaded[0].degradation_config or {
            "_target_": "sr_cli.degradations.pipeline.ResizeDownsample",
            "scale": scale,
            "mode": "bicubic",
            "quantize": True,
        }
        others = {str(lg.source) for lg in loaded[1:] if lg.degradation_config != lq_cfg}
        if others:
            log.warning(
                "checkpoints were trained with different degradations; LQ is made with that of "
                "%s for all of them (set degradation=... to choose)",
                paths[0],
            )
    lq_degradation = _degradation_for(lq_cfg, "LQ")
    if int(getattr(lq_degradation, "scale", scale)) != scale:
        raise ConfigError(
            f"the LQ degradation is x{lq_degradation.scale} but the evaluation is x{scale}"
        )

    unavailable: dict[str, str] = {}
    perceptual: dict[str, nn.Module] = {}
    for m in metrics:
        if m in PERCEPTUAL_METRICS or m == "brisque":
            why = weights_unavailable(m)
            if why:
                unavailable[m] = why
            elif m in PERCEPTUAL_METRICS:
                perceptual[m] = build_perceptual(m)
    active = [m for m in metrics if m not in unavailable]

    labels = unique_labels([checkpoint_label(p) for p in paths])
    rows = [
        EvalRow(
            BICUBIC,
            consistency=lq_degradation,
            shares_lq_params=True,
            arch="MATLAB bicubic",
        )
    ]
    for label, lg in zip(labels, loaded):
        cons = None
        if lg.degradation_config:
            cons = (
                lq_degradation
                if lg.degradation_config == lq_cfg
                else _degradation_for(lg.degradation_config, "checkpoint")
            )
        rows.append(
            EvalRow(
                label,
                generator=lg.generator,
                consistency=cons,
                shares_lq_params=lg.degradation_config == lq_cfg,
                checkpoint=str(lg.source),
                arch=str(lg.model_config.get("name", type(lg.generator).__name__)),
                iteration=lg.iteration,
                ema=lg.used_ema,
            )
        )
    from sr_cli.data import sample_dir

    dataset_dirs = as_dataset_dict(cfg.get("datasets"))
    if cfg.get("datasets") is None:
        dataset_dirs = {"samples": sample_dir("val")}
    if not dataset_dirs:
        raise ConfigError("no dataset to evaluate on: pass e.g. 'datasets={set5:/data/Set5}'")
    datasets = {
        name: open_eval_dataset(path, scale, cache_images=cfg.get("cache_images", "auto"))
        for name, path in dataset_dirs.items()
    }
    module = EvalModule(
        rows,
        datasets,
        lq_degradation,
        active,
        perceptual,
        scale,
        protocol,
        seed=int(cfg.get("seed", 0)),
        num_workers=int(cfg.get("num_workers", 0)),
    )
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    trainer_kwargs.pop("_target_", None)
    output_dir = Path(cfg.output_dir)
    trainer = pl.Trainer(
        **{
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "use_distributed_sampler": False,
            "default_root_dir": str(output_dir),
            **trainer_kwargs,
        }
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.test(module, verbose=False)

    results = collect(module, protocol, scale, metrics, unavailable)
    results.output_dir = output_dir
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_csv(results, output_dir / "results.csv")
        write_per_image_csv(results, output_dir / "results_per_image.csv")
        (output_dir / "results.md").write_text(markdown(results))
        print_results(results)
        if (cfg.get("logger") or {}).get("wandb"):
            log_to_wandb(results, cfg, output_dir)
    return results, {"trainer": trainer, "module": module, "output_dir": output_dir}


def collect(
    module: EvalModule,
    protocol: str,
    scale: int,
    metrics: list[str],
    unavailable: dict[str, str],
) -> EvalResults:
    """Per-dataset means and per-image values from the module's reduced tables."""
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    for dataset, (values, valid) in module.values.items():
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
                if m in unavailable:
                    entry[m] = None
                    continue
                k = module.metrics.index(m)
                ok = valid[:, r, k] > 0
                # Mean of per-image values, in image order: the same on any number of devices.
                entry[m] = float(values[ok, r, k].sum() / ok.sum()) if bool(ok.any()) else None
            rows.append(entry)
            for i, name in enumerate(names):
                item = {"dataset": dataset, "image": name, "model": row.label}
                for m in metrics:
                    v = None
                    if m not in unavailable:
                        k = module.metrics.index(m)
                        v = float(values[i, r, k]) if valid[i, r, k] > 0 else None
                    item[m] = v
                per_image.append(item)
    return EvalResults(
        protocol=protocol,
        scale=scale,
        metrics=metrics,
        rows=rows,
        per_image=per_image,
        unavailable=unavailable,
        notes=dict(module.notes),
    )


# ---------------------------------------------------------------------------- CLI
def _run(cfg: DictConfig) -> None:
    with exit_on_user_error("sr-eval"):
        evaluate(cfg)


def main() -> None:
    """``sr-eval [overrides...]``: evaluate checkpoints (see ``conf/eval.yaml``)."""
    import hydra

    register_resolvers()
    task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")(_run)
    task()


if __name__ == "__main__":  # python -m sr_cli.eval
    main()
