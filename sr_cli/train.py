"""``train(cfg)``: build everything from the config and fit. Thin on purpose.

Returns ``(metrics, objects)``: the final logged metrics as floats and the built objects
(trainer, module, datamodule), so tests and the multi-stage driver can inspect them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_cli.config import register_resolvers
from sr_cli.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
register_resolvers()


def setup_environment() -> None:
    """wandb offline unless the user configured it, and never an interactive login prompt."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if os.environ["WANDB_MODE"] not in ("offline", "disabled") and not os.environ.get(
        "WANDB_API_KEY"
    ):
        netrc = Path.home() / ".netrc"
        if not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            log.warning(
                "WANDB_MODE=%s but no wandb credentials found; logging offline",
                os.environ["WANDB_MODE"],
            )
            os.environ["WANDB_MODE"] = "offline"


def build_losses(loss_cfg: Mapping[str, Any]) -> dict:
    """Instantiate every selected term (one per ``conf/loss/<name>.yaml``) keyed by its name."""
    from hydra.utils import instantiate

    terms = {}
    for name, node in (loss_cfg or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ConfigError(
                f"loss.{name} has no _target_; every conf/loss/<name>.yaml nests one term under <name>:"
            )
        terms[name] = instantiate(node, _convert_="all")
    if not terms:
        raise ConfigError(
            "no loss selected: pick at least one, e.g. loss=l1 or loss=downsample+gan"
        )
    return terms


def check_scales(scale: int, generator: Any, degradation: Any, data_scale: int) -> None:
    """The model, the degradation and the data must agree on the scale."""
    values = {
        "model": int(getattr(generator, "scale", scale)),
        "degradation": int(degradation.scale),
        "data": int(data_scale),
    }
    if len(set(values.values())) > 1 or values["model"] != int(scale):
        raise ConfigError(
            "scale mismatch: "
            + ", ".join(f"{k} scale={v}" for k, v in values.items())
            + f" (top-level scale={scale}). Set only the top-level `scale=...`; the model, "
            "degradation and data read it."
        )


def resolve_resume(resume: str | None, output_dir: Path) -> str | None:
    """``None``, ``auto`` (this run dir's ``checkpoints/last.ckpt`` if any) or an explicit path."""
    if not resume:
        return None
    if resume == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"resume checkpoint {str(path)!r} does not exist. Pass the path of a .ckpt written by sr-train "
            "(e.g. outputs/<name>/<time>/checkpoints/last.ckpt) or resume=auto."
        )
    return str(path)


def build_module(cfg: DictConfig, val_names: list[str], output_dir: Path):
    """The generator, its loss terms and degradation, wrapped in an :class:`SRModule`."""
    from hydra.utils import instantiate

    from sr_cli.lit.module import SRModule

    generator = instantiate(cfg.model.generator, _convert_="all")
    if cfg.model.get("pretrained"):
        from sr_cli.models.pretrained import load_pretrained

        load_pretrained(generator, cfg.model.pretrained, strict=cfg.model.get("strict_load", True))
    degradation = instantiate(cfg.degradation, _convert_="all")
    losses = build_losses(cfg.loss)
    check_scales(cfg.scale, generator, degradation, cfg.data.scale)
    optim = cfg.optim
    scheduler = instantiate(optim.scheduler, _convert_="all") if optim.get("scheduler") else None
    ema = cfg.get("ema") or {}
    return SRModule(
        generator=generator,
        losses=losses,
        degradation=degradation,
        generator_optimizer=instantiate(optim.generator, _convert_="all"),
        discriminator_optimizer=instantiate(optim.discriminator, _convert_="all")
        if optim.get("discriminator")
        else None,
        scheduler=scheduler,
        gradient_clip_val=optim.get("gradient_clip_val"),
        ema_decay=float(ema.get("decay", 0.999)) if ema.get("enabled") else None,
        max_iterations=int(cfg.trainer.max_steps) if cfg.trainer.get("max_steps", -1) > 0 else None,
        val_names=val_names,
        val_protocol=cfg.val.protocol,
        save_images=cfg.val.save_images,
        image_dir=output_dir / "images",
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
        augment=instantiate(cfg.augment, _convert_="all") if cfg.get("augment") else None,
    )


def keep_previous_metrics(output_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing ``metrics.csv``; keep it when a run resumes in place."""
    metrics = output_dir / "metrics.csv"
    if metrics.is_file():
        k = 1
        while (output_dir / f"metrics.before-resume-{k}.csv").exists():
            k += 1
        metrics.rename(output_dir / f"metrics.before-resume-{k}.csv")


def build_trainer(cfg: DictConfig, module: Any, output_dir: Path):
    """Trainer with the configured callbacks and loggers, plus the always-on CSV logger."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import CSVLogger

    from sr_cli.lit.checkpoint import AtomicCheckpointIO

    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    keep_previous_metrics(output_dir)
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
    loggers = [CSVLogger(save_dir=str(output_dir), name="", version="")]
    loggers += [
        instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg and "_target_" in lg
    ]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    # max_steps counts generator iterations and the module stops itself when it gets there
    # (with a GAN, Lightning's global_step counts both optimizers' steps, and a resumed partial
    # epoch would end Lightning's epoch count early). Epochs are data.iters_per_epoch iterations.
    iterations = int(trainer_cfg.pop("max_steps", -1))
    if iterations > 0:
        trainer_cfg["max_steps"] = -1
        trainer_cfg["max_epochs"] = -1
    if module.adversarial and trainer_cfg.get("strategy") == "ddp":
        # A GAN step leaves the frozen network without gradients: DDP must expect unused params.
        trainer_cfg["strategy"] = "ddp_find_unused_parameters_true"
    return instantiate(
        trainer_cfg, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )


# --- bicubic reference (issue 9): what the run has to beat, on the same validation LQ -------
def bicubic_figures(cfg: DictConfig, datamodule: Any, module: Any) -> dict[str, dict[str, float]]:
    """Bicubic PSNR_Y/SSIM_Y/PSNR_RGB and LR-consistency PSNR of every validation set, keyed like
    the logged metrics (``val``, ``val/<name>``), computed by
    :func:`sr_cli.metrics.reference.bicubic_reference` with the run's degradation and seed."""
    from sr_cli.metrics.reference import bicubic_reference

    return {
        prefix: bicubic_reference(
            datamodule.val_sets[prefix],
            int(cfg.scale),
            copy.deepcopy(module.degradation).cpu(),
            seed=int(cfg.seed),
            set_index=idx,
            protocol=cfg.val.protocol,
        )
        for idx, prefix in enumerate(datamodule.val_names)
    }


# ------------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train one run as the config says. Returns ``(metrics, objects)``."""
    setup_environment()
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")  # bad folders and images fail here, before any model is built
    module = build_module(cfg, datamodule.val_names, output_dir)
    trainer = build_trainer(cfg, module, output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)
    ckpt_path = resolve_resume(cfg.get("resume"), output_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if getattr(v, "numel", lambda: 1)() == 1
    }
    if trainer.is_global_zero:
        summary = {
            "metrics": metrics,
            "iteration": module.iteration,
            "world_size": trainer.world_size,
            "iterations_per_rank": module.rank_iterations,
            "output_dir": str(output_dir),
        }
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None:
            summary["best_checkpoint"] = ckpt_cb.best_model_path or None
            summary["last_checkpoint"] = (
                str(Path(ckpt_cb.dirpath) / "last.ckpt") if ckpt_cb.dirpath else None
            )
        summary["bicubic"] = bicubic_figures(cfg, datamodule, module)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return metrics, {
        "trainer": trainer,
        "module": module,
        "datamodule": datamodule,
        "output_dir": output_dir,
    }


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The ``sr-train`` task: one run, or ``cfg.stages`` iterative learned-perceptual stages."""
    if int(cfg.get("stages", 1)) > 1:
        from sr_cli.stages import train_stages

        return train_stages(cfg)
    return train(cfg)
