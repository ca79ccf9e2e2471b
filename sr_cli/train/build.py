"""How ``train(cfg)`` builds its objects from the config: the loss terms, the datamodule, the
:class:`~sr_cli.train.lit.module.SRModule` and the Lightning ``Trainer`` with sr-cli's callbacks,
loggers and plugins. Each builder reads the config and returns the object; nothing is fitted here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_cli.config import register_resolvers
from sr_cli.errors import ConfigError

register_resolvers()


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


def build_datamodule(cfg: DictConfig, **overrides: Any):
    """The :class:`SRDataModule` of ``cfg.data``.

    ``data.root`` only feeds the configs' path interpolations (``${.root}/DIV2K/...``), so the
    paths are resolved first and ``root`` is not passed on.
    """
    from hydra.utils import instantiate

    node = OmegaConf.to_container(cfg.data, resolve=True)
    node.pop("root", None)
    from sr_cli.train.lit.datamodule import check_lr_context, resolve_lr_context

    context = node.get("lr_context", 0)
    check_lr_context(context)
    if context == "auto":
        degradation = instantiate(cfg.degradation, _convert_="all")
        node["lr_context"] = resolve_lr_context(
            "auto", degradation, int(node.get("patch_size", 0)), int(cfg.scale)
        )
    return instantiate(node, _convert_="all", **overrides)


def build_module(cfg: DictConfig, val_names: list[str], output_dir: Path):
    """The generator, its loss terms and degradation, wrapped in an :class:`SRModule`."""
    from hydra.utils import instantiate

    from sr_cli.train.lit.module import SRModule

    generator = instantiate(cfg.model.generator, _convert_="all")
    if cfg.model.get("pretrained"):
        from sr_cli.models.detect import load_into

        load_into(generator, cfg.model.pretrained, strict=cfg.model.get("strict_load", True))
    degradation = instantiate(cfg.degradation, _convert_="all")
    losses = build_losses(cfg.loss)
    check_scales(cfg.scale, generator, degradation, cfg.data.scale)
    optim = cfg.optim
    scheduler = instantiate(optim.scheduler, _convert_="all") if optim.get("scheduler") else None
    # The discriminator's own schedule (optim.discriminator_scheduler; absent: the generator's).
    d_sched_cfg = (
        optim.get("discriminator_scheduler")
        if "discriminator_scheduler" in optim
        else optim.get("scheduler")
    )
    d_scheduler = instantiate(d_sched_cfg, _convert_="all") if d_sched_cfg else None
    speed = cfg.get("speed") or {}
    compile_opts = None
    if speed.get("compile"):
        compile_opts = {"mode": speed.get("compile_mode") or "default"}
    ema = cfg.get("ema") or {}
    # max_steps counts optimizer updates (generator iterations); with gradient accumulation an
    # update takes `accumulate` batches, and the module counts batches.
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    max_steps = int(cfg.trainer.get("max_steps", -1))
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
        max_iterations=max_steps * accumulate if max_steps > 0 else None,
        val_names=val_names,
        val_protocol=cfg.val.protocol,
        save_images=cfg.val.save_images,
        image_dir=output_dir / "images",
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
        augment=instantiate(cfg.augment, _convert_="all") if cfg.get("augment") else None,
        nan_policy=str(OmegaConf.select(cfg, "nan_guard.policy", default="stop")),
        max_consecutive_skips=int(
            OmegaConf.select(cfg, "nan_guard.max_consecutive_skips", default=10)
        ),
        discriminator_scheduler=d_scheduler,
        d_steps_per_g=optim.get("d_steps_per_g", 1),
        channels_last=bool(speed.get("channels_last", False)),
        compile_generator=compile_opts,
        accumulate_grad_batches=accumulate,
        validate_first=bool(cfg.model.get("pretrained")),
        **_extra_val_metrics(cfg),
    )


def _extra_val_metrics(cfg: DictConfig) -> dict[str, Any]:
    """``val.extra_metrics``: registry metrics also logged during validation; one whose weights
    are not cached stops the run here (a sweep on it would optimise nothing)."""
    from sr_cli.errors import ConfigError
    from sr_cli.metrics.registry import get_metric, metric_names

    names = list(OmegaConf.select(cfg, "val.extra_metrics", default=None) or [])
    modules = {}
    for name in names:
        if name not in metric_names():
            raise ConfigError(
                f"unknown metric {name!r} in val.extra_metrics; choose from {list(metric_names())}"
            )
        spec = get_metric(name)
        if why := spec.unavailable():
            raise ConfigError(f"val.extra_metrics: {name} {why}")
        if spec.build is not None:
            modules[name] = spec.build().requires_grad_(False)
    return {"extra_val_metrics": names, "metric_modules": modules}


def build_trainer(
    cfg: DictConfig, module: Any, output_dir: Path, kept_metrics=None, plugins: tuple = ()
):
    """Trainer with the configured callbacks and loggers, plus the always-on CSV logger, the
    signal handler and the last-good (NaN) checkpoint. ``plugins`` are added to Lightning's
    (e.g. a precision plugin with its own GradScaler, with ``trainer.precision=null``)."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import CSVLogger

    from sr_cli.train import rundir
    from sr_cli.train.lit.callbacks import GracefulStop, LastGoodCheckpoint, RunCheckpoints
    from sr_cli.train.lit.checkpoint import AtomicCheckpointIO
    from sr_cli.train.lit.progress import RunProgress
    from sr_cli.train.pruning import pruning_callback
    from sr_cli.train.slurm import cluster_plugins

    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    ckpt_dir = output_dir / "checkpoints"
    if not any(isinstance(c, RunCheckpoints) for c in callbacks):
        callbacks.append(RunCheckpoints(ckpt_dir, monitor=None))
    callbacks += [LastGoodCheckpoint(ckpt_dir), GracefulStop()]
    if (pruning := pruning_callback(cfg, output_dir)) is not None:
        callbacks.append(pruning)  # after the checkpoints: last.ckpt is written when it stops
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(RunProgress(module.max_iterations, cfg.get("run_name") or ""))
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
    csv_logger = CSVLogger(save_dir=str(output_dir), name="", version="")
    rundir.restore_metrics(csv_logger, kept_metrics)
    loggers = [csv_logger]
    loggers += [
        instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg and "_target_" in lg
    ]
    # max_steps counts generator iterations and the module stops itself when it gets there
    # (with a GAN, Lightning's global_step counts both optimizers' steps, and a resumed partial
    # epoch would end Lightning's epoch count early). Epochs are data.iters_per_epoch iterations.
    iterations = int(trainer_cfg.pop("max_steps", -1))
    if iterations > 0:
        trainer_cfg["max_steps"] = -1
        trainer_cfg["max_epochs"] = -1
    if not module.automatic_optimization:
        # The manual (GAN) path accumulates itself (SRModule.accumulate); Lightning refuses to.
        trainer_cfg.pop("accumulate_grad_batches", None)
    if module.adversarial and trainer_cfg.get("strategy") == "ddp":
        # A GAN step leaves the frozen network without gradients: DDP must expect unused params.
        trainer_cfg["strategy"] = "ddp_find_unused_parameters_true"
    return instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO(), *plugins, *cluster_plugins()],
    )
