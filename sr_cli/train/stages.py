"""Iterative learned-perceptual training: ``sr-train stages=N``.

Stage 1 trains with the selected mix (e.g. GAN + VGG perceptual). Every later stage retrains
the generator *from scratch* with the same mix, except that the terms named in
``stage_replace`` (default: ``perceptual``) are replaced by ``disc_perceptual`` built on the
previous stage's trained discriminator.

Layout of the run directory::

    <run>/stage_1/  ... a complete sr-train run directory (checkpoints, metrics.csv, images)
    <run>/stage_2/
    <run>/stages.json  stages.md   # summary: losses, directory and validation metrics per stage
    <run>/plane.png    plane.csv   # the stages as a path through the perception-distortion plane

Every stage also validates ``niqe`` and ``rmse_y`` (added to ``val.extra_metrics``): the final
values place each stage on the perception-distortion plane (Blau and Michaeli, CVPR 2018), and
``stages.md`` lists that path; ``sr-train`` draws it (:mod:`sr_cli.report.plane`).

Re-running the same command on the same run directory (``hydra.run.dir=<run>``) skips the
finished stages and resumes the unfinished one from its ``last.ckpt``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sr_cli.config import config_dir
from sr_cli.errors import ConfigError
from sr_cli.train.build import build_losses
from sr_cli.train.training import train

log = logging.getLogger(__name__)

SUMMARY_JSON = "stages.json"
#: Validation metrics every stage logs for the perception-distortion plane.
PLANE_METRICS = ("niqe", "rmse_y")


def stage_config(cfg: DictConfig, stage: int, root: Path, previous: Path | None) -> DictConfig:
    """The config of one stage: its own directory, and disc_perceptual from stage 2 on."""
    scfg = cfg.copy()
    with open_dict(scfg):
        scfg.stages = 1
        scfg.paths.output_dir = str(root / f"stage_{stage}")
        last = root / f"stage_{stage}" / "checkpoints" / "last.ckpt"
        scfg.resume = str(last) if last.is_file() else None
        extra = list(OmegaConf.select(scfg, "val.extra_metrics", default=None) or [])
        scfg.val.extra_metrics = [*extra, *(m for m in PLANE_METRICS if m not in extra)]
        if stage > 1:
            if previous is None:
                raise ConfigError(f"stage {stage} needs the checkpoint of stage {stage - 1}")
            replace = set(cfg.get("stage_replace") or [])
            losses = {
                k: v for k, v in cfg.loss.items() if k not in replace and k != "disc_perceptual"
            }
            node = OmegaConf.load(config_dir() / "loss" / "disc_perceptual.yaml").disc_perceptual
            node = OmegaConf.merge(node, cfg.get("stage_disc_perceptual") or {})
            node.checkpoint = str(previous)
            losses["disc_perceptual"] = node
            scfg.loss = OmegaConf.create(losses)
    return scfg


def _adversarial_term(cfg: DictConfig) -> str:
    """The first selected term that trains a discriminator (asked of the built terms)."""
    from sr_cli.losses.base import AdversarialTerm

    for name, term in build_losses(cfg.loss).items():
        if isinstance(term, AdversarialTerm):
            return name
    raise ConfigError(
        "stages=N needs an adversarial term whose discriminator becomes the next stage's perceptual "
        "network, e.g. loss=gan+perceptual (or experiment=iterative_perceptual)."
    )


def write_summary(root: Path, records: list[dict[str, Any]], total: int) -> None:
    (root / SUMMARY_JSON).write_text(json.dumps({"stages": total, "completed": records}, indent=2))
    keys = sorted({k for r in records for k in r["metrics"] if k.startswith("val/")})
    lines = [
        f"# Iterative perceptual training: {len(records)}/{total} stages",
        "",
        "| stage | losses | run | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for r in records:
        vals = " | ".join(f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "" for k in keys)
        lines.append(
            f"| {r['stage']} | {' + '.join(r['losses'])} | [{r['dir']}]({r['dir']}/) | {vals} |"
        )
    lines += ["", *plane_path_lines(records)]
    (root / "stages.md").write_text("\n".join(lines) + "\n")


def plane_points(records: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """``(stage label, NIQE, RMSE_Y)`` of every completed stage (NaN where not validated)."""
    nan = float("nan")
    return [
        (
            f"stage {r['stage']}",
            float(r["metrics"].get("val/niqe", nan)),
            float(r["metrics"].get("val/rmse_y", nan)),
        )
        for r in records
    ]


def plane_path_lines(records: list[dict[str, Any]]) -> list[str]:
    """The stages' path through the perception-distortion plane, as markdown."""
    lines = [
        "## Path through the perception-distortion plane",
        "",
        "Final validation NIQE (lower = more natural) and RMSE of Y in 8-bit levels (lower = less "
        "distortion) of each stage; picture: [plane.png](plane.png), points: "
        "[plane.csv](plane.csv).",
        "",
        "| stage | NIQE | RMSE_Y |",
        "|---|---:|---:|",
    ]
    for label, niqe, rmse in plane_points(records):
        lines.append(f"| {label} | {niqe:.4f} | {rmse:.3f} |")
    return lines


def train_stages(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run ``cfg.stages`` stages; returns the last stage's metrics and a summary."""
    total = int(cfg.stages)
    term = _adversarial_term(cfg)
    root = Path(cfg.paths.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    summary_path = root / SUMMARY_JSON
    records: list[dict[str, Any]] = []
    if summary_path.is_file():
        records = json.loads(summary_path.read_text())["completed"]
        if records:
            log.info("resuming iterative training after stage %d", records[-1]["stage"])
    metrics: dict[str, float] = records[-1]["metrics"] if records else {}
    objects: dict[str, Any] = {}
    for stage in range(len(records) + 1, total + 1):
        previous = Path(records[-1]["last_checkpoint"]) if records else None
        scfg = stage_config(cfg, stage, root, previous)
        if stage > 1:
            with open_dict(scfg):
                scfg.loss.disc_perceptual.term = term
        log.info("stage %d/%d: losses %s", stage, total, "+".join(scfg.loss))
        metrics, objects = train(scfg)
        stage_dir = Path(scfg.paths.output_dir)
        records.append(
            {
                "stage": stage,
                "dir": stage_dir.name,
                "losses": list(scfg.loss),
                "metrics": metrics,
                "last_checkpoint": str(stage_dir / "checkpoints" / "last.ckpt"),
                "discriminator_from": str(previous) if previous else None,
            }
        )
        write_summary(root, records, total)
    return metrics, {**objects, "stages": records, "output_dir": root}
