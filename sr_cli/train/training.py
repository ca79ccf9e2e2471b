"""``train(cfg)``: check the config, settle the run folder, build everything from the config
(:mod:`sr_cli.train.build`) and fit. Thin on purpose.

Returns ``(metrics, objects)``: the final logged metrics as floats and the built objects
(trainer, module, datamodule), so tests and the multi-stage driver can inspect them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sr_cli.environment import setup_environment
from sr_cli.errors import ConfigError, OutOfMemory, is_out_of_memory, out_of_memory_summary
from sr_cli.train.build import build_datamodule, build_module, build_trainer

log = logging.getLogger(__name__)


#: ``trainer.precision`` values that use fp16 autocast with a GradScaler.
FP16_MIXED = ("16-mixed", "16", 16)


def check_precision(cfg: DictConfig) -> None:
    """fp16 mixed precision needs CUDA: Lightning would silently switch a CPU run to bf16."""
    import torch

    precision = OmegaConf.select(cfg, "trainer.precision")
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in FP16_MIXED and on_cpu:
        raise ConfigError(
            f"trainer.precision={precision} (fp16 autocast with a GradScaler) needs a CUDA GPU and "
            "this run is on the CPU; use trainer.precision=bf16-mixed on the CPU (or "
            "trainer.accelerator=gpu on a GPU machine)."
        )


def check_options(cfg: DictConfig) -> None:
    """One-line errors for values that cannot work, before anything is built or written."""
    from sr_cli.errors import ConfigError

    def positive_int(key: str, hint: str) -> None:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}. {hint}")

    positive_int("scale", "Set e.g. `scale=4`.")
    check_precision(cfg)
    if OmegaConf.select(cfg, "optim.d_steps_per_g") is not None:
        positive_int("optim.d_steps_per_g", "Discriminator steps per generator step, e.g. 1.")
    presets = OmegaConf.select(cfg, "model.presets")
    preset = OmegaConf.select(cfg, "model.preset")
    if presets is not None and preset not in presets:
        raise ConfigError(
            f"model={OmegaConf.select(cfg, 'model.name')} has no preset {preset!r}; valid presets: "
            f"{', '.join(map(str, presets))} (model.preset=...)."
        )
    positive_int("data.batch_size", "Set e.g. `data.batch_size=16`.")
    positive_int(
        "data.iters_per_epoch",
        "It is the number of iterations between validations, e.g. `data.iters_per_epoch=1000`.",
    )
    positive_int("data.patch_size", "Set e.g. `data.patch_size=128`.")
    if OmegaConf.select(cfg, "trainer.accumulate_grad_batches") is not None:
        positive_int("trainer.accumulate_grad_batches", "Batches per optimizer update, e.g. 1.")
        accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches")
        if cfg.data.iters_per_epoch % accumulate:
            raise ConfigError(
                f"data.iters_per_epoch={cfg.data.iters_per_epoch} must be a multiple of "
                f"trainer.accumulate_grad_batches={accumulate}, so that validation and checkpoints "
                "fall between optimizer updates (exact resume)."
            )
    steps = OmegaConf.select(cfg, "trainer.max_steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(
            f"trainer.max_steps must be a positive number of iterations, got {steps!r} (-1 would "
            "train forever). Set e.g. `trainer.max_steps=400000`."
        )
    workers = OmegaConf.select(cfg, "data.num_workers")
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
    ):
        raise ConfigError(
            f"data.num_workers must be an integer >= 0, got {workers!r}. Set e.g. "
            "`data.num_workers=4` (0: load in the main process)."
        )
    check_loss_weights(cfg)
    for role in ("generator", "discriminator"):
        node = OmegaConf.select(cfg, f"optim.{role}")
        if not node:
            continue
        for key in ("lr", "weight_decay", "eps"):
            value = node.get(key)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(
                    f"optim.{role}.{key} must be a number >= 0, got {value!r}. Set e.g. "
                    f"`optim.{role}.{key}={'2e-4' if key == 'lr' else '0'}`."
                )
    clip = OmegaConf.select(cfg, "optim.gradient_clip_val")
    if clip is not None and (not isinstance(clip, (int, float)) or clip <= 0):
        raise ConfigError(f"optim.gradient_clip_val must be > 0 or null (off), got {clip!r}")
    for name, node in (cfg.get("loss") or {}).items():
        if not node:
            continue
        for key in ("start_step", "d_start_step"):
            start = node.get(key)
            if isinstance(start, int) and start >= steps:
                log.warning(
                    "loss.%s.%s=%d is not below trainer.max_steps=%d: %s will never run. Lower "
                    "loss.%s.%s or raise trainer.max_steps.",
                    name,
                    key,
                    start,
                    steps,
                    f"the {name} term" if key == "start_step" else f"the {name} discriminator",
                    name,
                    key,
                )


def out_of_memory_error(exc: BaseException, cfg: DictConfig, trainer, module) -> OutOfMemory:
    """One line: where memory ran out, what to lower, and what became of the state."""
    from sr_cli.train.lit.callbacks import run_checkpoints

    validating = bool(trainer.validating or trainer.sanity_checking)
    where = "validating" if validating else "training"
    fixes = []
    if validating:
        fixes.append("validate on smaller images (data.val_dir)")
    batch, patch = (
        OmegaConf.select(cfg, "data.batch_size"),
        OmegaConf.select(cfg, "data.patch_size"),
    )
    fixes.append(f"lower data.batch_size (now {batch}) or data.patch_size (now {patch})")
    precision = str(OmegaConf.select(cfg, "trainer.precision"))
    if "16" not in precision:
        fixes.append(f"use trainer.precision=bf16-mixed (now {precision})")
    ckpts = run_checkpoints(trainer)
    outcome = ckpts.oom_outcome if ckpts is not None and ckpts.oom_outcome else "nothing saved"
    last = ckpts.last_path if ckpts is not None and ckpts.last_path.is_file() else None
    then = f"continue with resume={last} and the new values" if last else "start again"
    return OutOfMemory(
        f"{out_of_memory_summary(exc)} while {where} at iteration {module.iteration}; "
        f"{', or '.join(fixes)}; {outcome}; {then}."
    )


def check_loss_weights(cfg: DictConfig) -> None:
    """A negative ``loss.<term>.weight`` turns the term into gradient ascent: refused unless the
    run opts in with ``allow_negative_loss_weights=true`` (on the command line)."""
    allowed = OmegaConf.select(cfg, "allow_negative_loss_weights", default=False)
    if not isinstance(allowed, bool):
        raise ConfigError(f"allow_negative_loss_weights must be true or false, got {allowed!r}")
    for name, node in (cfg.get("loss") or {}).items():
        if not node or "weight" not in node:
            continue
        weight = node.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != weight:
            raise ConfigError(f"loss.{name}.weight must be a number, got {weight!r}")
        if weight < 0 and not allowed:
            raise ConfigError(
                f"loss.{name}.weight={weight} is negative: the {name} term would be maximised "
                f"(gradient ascent). Use a weight >= 0 (0 switches the term off), or pass "
                "allow_negative_loss_weights=true if you mean it."
            )


def write_provenance(output_dir: Path, seed: int) -> dict:
    """``provenance.json`` next to ``config_resolved.yaml`` (rank 0): git commit, package
    versions, command line, seed, host (:mod:`sr_cli.provenance`). A resumed run keeps the
    earlier starts' records under ``earlier_starts``."""
    from sr_cli import provenance as prov
    from sr_cli.serialization import atomic_write
    from sr_cli.train import rundir

    record = prov.collect(seed=int(seed))
    if rundir._rank() != 0:
        return record
    path = output_dir / "provenance.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            record["earlier_starts"] = [*old.pop("earlier_starts", []), old]
    text = json.dumps(record, indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))
    return record


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train one run as the config says. Returns ``(metrics, objects)``.

    Raises :class:`~sr_cli.train.lit.callbacks.TrainingInterrupted` after a stop signal, once the
    resumable checkpoint is written.
    """
    from sr_cli.train import rundir

    setup_environment()
    output_dir = Path(cfg.paths.output_dir)
    fresh = rundir.is_unused(output_dir)
    try:
        check_options(cfg)
        if cfg.get("init_from"):
            from sr_cli.train.fork import plan_fork

            plan = plan_fork(cfg.init_from, output_dir, cfg.get("resume"))
        else:
            plan = rundir.plan_resume(cfg.get("resume"), output_dir)
        if plan.output_dir != output_dir:
            with open_dict(cfg):
                cfg.paths.output_dir = str(plan.output_dir)
            rundir.remove_if_unused(output_dir)
            output_dir, fresh = plan.output_dir, False
        rundir.check_writable(output_dir)
        with rundir.RunLock(output_dir):
            return _train_in(cfg, output_dir, plan)
    except Exception:
        # A run that stopped before training (a user error) leaves no orphan folder behind.
        if fresh and not rundir.training_started(output_dir):
            rundir.remove_if_unused(output_dir)
        raise


def _train_in(cfg: DictConfig, output_dir: Path, plan) -> tuple[dict[str, float], dict[str, Any]]:
    import pytorch_lightning as pl

    from sr_cli.train import rundir
    from sr_cli.train.fork import check_fork_compatible, is_fork
    from sr_cli.train.lit.callbacks import GracefulStop, TrainingInterrupted, run_checkpoints

    forked = is_fork(plan)
    if plan.checkpoint and not forked:
        rundir.check_resume_compatible(plan, cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # bad folders and images fail here, before any model is built
    module = build_module(cfg, datamodule.val_names, output_dir)
    if forked:
        check_fork_compatible(plan, module, cfg)
    kept = (
        rundir.trim_metrics(output_dir, plan.iteration) if plan.checkpoint and not forked else None
    )
    trainer = build_trainer(cfg, module, output_dir, kept)
    rundir.write_config_record(
        output_dir, resolved, resumed=plan.checkpoint is not None and not forked
    )
    provenance = write_provenance(output_dir, cfg.seed)
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "provenance": provenance})
    rundir.define_wandb_summaries(trainer, cfg)
    if plan.checkpoint:
        what = "continuing the state of" if forked else "resuming from"
        log.info("%s %s (iteration %d)", what, plan.checkpoint, plan.iteration)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.checkpoint)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory_error(exc, cfg, trainer, module) from exc
        raise
    finally:
        rundir.finish_loggers(trainer)

    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if getattr(v, "numel", lambda: 1)() == 1
    }
    stop = next(c for c in trainer.callbacks if isinstance(c, GracefulStop))
    ckpts = run_checkpoints(trainer)
    from sr_cli.train.pruning import pruned_status

    pruned = pruned_status(trainer)
    if trainer.is_global_zero:
        summary = {
            "name": cfg.get("run_name"),
            "status": "interrupted" if stop.received else "pruned" if pruned else "finished",
            "metrics": metrics,
            "iteration": module.iteration,
            "world_size": trainer.world_size,
            "iterations_per_rank": module.rank_iterations,
            "skipped_steps": module.skipped_steps,
            "scaler_skipped_steps": module.scaler_skipped_steps,
            "output_dir": str(output_dir),
            "best_checkpoint": ckpts.best_model_path or None if ckpts else None,
            "last_checkpoint": str(ckpts.last_path)
            if ckpts and ckpts.last_path.is_file()
            else None,
        }
        if ckpts is not None and ckpts.best_iteration is not None:
            summary["best"] = {ckpts.monitor: ckpts.best_score, "iteration": ckpts.best_iteration}
        if pruned:
            summary["pruned"] = pruned
        summary["bicubic"] = module.bicubic_reference  # what the run has to beat, same LQ
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if stop.received:
        raise TrainingInterrupted(stop.received, ckpts.last_path if ckpts else None)
    return metrics, {
        "trainer": trainer,
        "module": module,
        "datamodule": datamodule,
        "output_dir": output_dir,
    }
