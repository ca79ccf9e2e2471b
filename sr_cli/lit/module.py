"""The SR LightningModule: one generator, any mix of loss terms, with or without a GAN.

* LQ is made here, on the training device, right after the batch transfer
  (:meth:`SRModule.on_after_batch_transfer`), by the same degradation object the
  downsample-consistency loss uses. Its random parameters come from a generator seeded by
  ``(seed, iteration, rank)``, so a resumed run draws exactly what the uninterrupted one would.
* Terms live in an ``nn.ModuleDict`` keyed by their config name. The generator objective is
  ``sum(weight * term)`` over the active terms; each is logged as ``train/loss_<name>``
  (weighted) and ``train/loss_<name>_unweighted``.
* Without a discriminator the module uses automatic optimization. When a term brings a
  discriminator it switches to manual optimization: a generator step (discriminator frozen),
  then a discriminator step on detached SR, each with explicit clipping and scheduler steps.
* A non-finite term stops training: the last good state is saved first and the error names
  the term and the iteration.
* Validation follows the paper protocol (Y channel, border crop, 8-bit rounding), reduced as
  per-image sums across processes, so the figure is exact under DDP.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sr_cli.data.datasets import to_uint8
from sr_cli.data.images import save_image
from sr_cli.degradations.base import Degradation, DegradationNotInvertible, seeded_generator
from sr_cli.degradations.resize import imresize
from sr_cli.errors import ConfigError, NonFiniteLossError
from sr_cli.losses.base import LossInputs, LossTerm
from sr_cli.metrics.protocol import protocol_metrics, psnr, to_uint8_range
from sr_cli.models.common import as_levels, final_output

log = logging.getLogger(__name__)

#: Metrics logged per validation set, as ``<set>/<metric>``.
VAL_METRICS = ("psnr_y", "ssim_y", "psnr_rgb")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], object]


def _has_consistency(degradation: Degradation) -> bool:
    """Whether the degradation can replay its deterministic part (probed once, on a tiny batch,
    so every DDP rank agrees on the validation metrics it reduces)."""
    s = degradation.scale
    probe = torch.zeros(1, 3, 8 * s, 8 * s)
    try:
        degradation.replay(probe, degradation.sample(probe, torch.Generator().manual_seed(0)))
    except DegradationNotInvertible:
        return False
    return True


class SRModule(pl.LightningModule):
    """Trains a super-resolution generator with a composable objective.

    Args:
        generator: network ``lq -> sr`` (or a list of pyramid levels, last = SR) with a
            ``scale`` attribute.
        losses: ``{name: LossTerm}``; names become the ``train/loss_<name>`` log keys.
        degradation: HR -> LQ operator, applied on the device after the batch transfer.
        generator_optimizer: ``params -> Optimizer`` (e.g. a ``functools.partial`` of Adam).
        discriminator_optimizer: idem for the discriminator; used only when a term needs one.
        scheduler: ``optimizer -> LR scheduler`` stepped once per iteration, or ``None``.
        gradient_clip_val: max gradient norm per optimizer step, or ``None``.
        ema_decay: keep an exponential moving average of the generator (validated and saved),
            or ``None``.
        max_iterations: stop after this many generator iterations (``None``: the trainer decides).
        val_names: log prefix of each validation dataloader (``val``, ``val/set5``, ...).
        val_protocol: ``paper`` or ``matlab`` (see :mod:`sr_cli.metrics.protocol`).
        save_images: number of side-by-side validation PNGs per set (LQ bicubic | SR | GT).
        image_dir: where those PNGs go (``None``: not written).
        seed: seeds the on-device degradation.
        augment: on-device ``(lq, gt) -> (lq, gt)`` augmentation for training batches
            (:class:`~sr_cli.data.augment.PairedAugment`), or ``None``.
        config: the resolved run config (plain dict). Its ``model``, ``degradation`` and ``scale``
            entries are stored in every checkpoint, so ``sr-eval``/``sr-upscale`` can rebuild
            the generator from the checkpoint alone.
    """

    def __init__(
        self,
        generator: nn.Module,
        losses: Mapping[str, LossTerm],
        degradation: Degradation,
        generator_optimizer: OptimizerFactory,
        discriminator_optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        gradient_clip_val: float | None = None,
        ema_decay: float | None = None,
        max_iterations: int | None = None,
        val_names: Sequence[str] = ("val",),
        val_protocol: str = "paper",
        save_images: int = 3,
        image_dir: str | Path | None = None,
        seed: int = 0,
        config: Mapping | None = None,
        augment: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not losses:
            raise ValueError("at least one loss term is needed, e.g. loss=l1")
        self.generator = generator
        self.losses = nn.ModuleDict(dict(losses))
        self.degradation = degradation
        self.augment = augment
        self.scale = int(getattr(generator, "scale", degradation.scale))
        self.generator_ema = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False).eval()
        self.ema_decay = ema_decay
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.scheduler_factory = scheduler
        self.gradient_clip_val = gradient_clip_val
        self.max_iterations = max_iterations
        self.val_names = list(val_names)
        self.val_protocol = val_protocol
        self.save_images = int(save_images)
        self.image_dir = Path(image_dir) if image_dir else None
        self.seed = int(seed)
        self.config = dict(config or {})
        self.iteration = 0
        self.rank_iterations: list[int] = []
        self.adversarial = {n: t for n, t in self.losses.items() if t.needs_discriminator}
        self.automatic_optimization = not self.adversarial
        self._val_sums: dict[int, dict[str, Tensor | float]] = {}
        self._consistency_ok = _has_consistency(degradation)

    # ------------------------------------------------------------------ helpers
    @property
    def discriminator(self) -> nn.Module | None:
        """The discriminator of the (first) adversarial term, shared with feature-based terms."""
        for term in self.adversarial.values():
            return term.discriminator
        return None

    def eval_generator(self) -> nn.Module:
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, lq: Tensor) -> Tensor:
        """SR image from LQ with the evaluation generator (EMA when enabled)."""
        return final_output(self.eval_generator()(lq))

    def _rank(self) -> int:
        return self.trainer.global_rank if self._trainer is not None else 0

    def _rng(self, *parts: int) -> torch.Generator:
        return seeded_generator(self.seed, *parts)

    # ------------------------------------------------------------------ data
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Make LQ from GT on the device, batched, recording the degradation's parameters.

        The on-device augmentation of training batches is applied to GT *before* the
        degradation when LQ is made here (so ``LQ = D(GT)`` stays exact for any kernel); CutBlur,
        which needs the LQ, and batches whose LQ came from disk are augmented as pairs.
        """
        training = self._trainer is not None and self.trainer.training
        augment = self.augment if training else None
        if "lq" not in batch:
            gt = batch["gt"]
            if training:
                rng = self._rng(1, self.iteration, self._rank())
            else:
                rng = self._rng(2, dataloader_idx, int(batch["index"][0]))
            with torch.no_grad():
                if augment is not None and not getattr(augment, "cutblur_prob", 0.0):
                    _, gt = augment(gt, gt, self._rng(3, self.iteration, self._rank()))
                    batch["gt"], augment = gt, None
                params = self.degradation.sample(gt, generator=rng)
                batch["lq"] = self.degradation(gt, params).detach()
            batch["degradation_params"] = params
        if augment is not None:
            with torch.no_grad():
                rng = self._rng(3, self.iteration, self._rank())
                batch["lq"], batch["gt"] = augment(batch["lq"], batch["gt"], rng)
        return batch

    def loss_inputs(self, batch: dict) -> LossInputs:
        levels = as_levels(self.generator(batch["lq"]))
        return LossInputs(
            sr=levels[-1],
            gt=batch["gt"],
            lq=batch["lq"],
            sr_levels=levels,
            step=self.iteration,
            scale=self.scale,
            degradation=self.degradation,
            degradation_params=batch.get("degradation_params"),
            generator=self.generator,
            discriminator=self.discriminator,
        )

    # ------------------------------------------------------------------ objective
    def generator_objective(self, inputs: LossInputs) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Weighted sum of the active terms and the values to log. Inactive terms are not computed."""
        values: dict[str, Tensor] = {}
        logs: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, term in self.losses.items():
            if not term.is_active(inputs.step):
                continue
            out = term(inputs)
            values[name] = out.loss
            weighted = term.weight * out.loss
            total = weighted if total is None else total + weighted
            logs[f"train/loss_{name}"] = weighted.detach()
            logs[f"train/loss_{name}_unweighted"] = out.loss.detach()
            for key, val in out.metrics.items():
                logs[f"train/{key}"] = val.detach()
        # Extra generator passes published by a term (e.g. the translational second crop) are
        # scored by the terms it names, with their own weights.
        for aux_inputs, names in inputs.extra.pop("aux_passes", []):
            for name in names:
                if name not in self.losses:
                    raise ConfigError(
                        f"a term asked for loss {name!r} on its extra pass, but it is not selected; "
                        f"selected terms: {', '.join(self.losses)}"
                    )
                term = self.losses[name]
                if not term.is_active(inputs.step):
                    continue
                value = term(aux_inputs).loss
                values[f"{name}_aux"] = value
                total = total + term.weight * value
                logs[f"train/loss_{name}_aux"] = (term.weight * value).detach()
        self.check_finite(values, "generator")
        if total is not None:
            logs["train/loss_total"] = total.detach()
        return total, logs

    def check_finite(self, values: Mapping[str, Tensor], phase: str) -> None:
        """Stop with a clear error (after saving the last good state) if any term is NaN/Inf."""
        if not values:
            return
        finite = bool(
            torch.isfinite(
                torch.stack([v.detach().float().reshape(()) for v in values.values()])
            ).all()
        )
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        bad = [n for n, v in values.items() if not bool(torch.isfinite(v.detach()).all())] or [
            "(another rank)"
        ]
        saved = self._save_last_good()
        where = f" The last good state was saved to {saved}." if saved else ""
        raise NonFiniteLossError(
            f"loss term {', '.join(repr(b) for b in bad)} ({phase}) is not finite at iteration "
            f"{self.iteration}.{where} Lower the learning rate or the term's weight, enable "
            "optim.gradient_clip_val, or check the inputs; resume with resume=<that checkpoint>."
        )

    def _save_last_good(self) -> str | None:
        if self._trainer is None or self.trainer.sanity_checking:
            return None
        ckpt_dir = Path(self.trainer.default_root_dir) / "checkpoints"
        for cb in self.trainer.checkpoint_callbacks:
            if getattr(cb, "dirpath", None):
                ckpt_dir = Path(cb.dirpath)
                break
        path = ckpt_dir / f"last_good_iter{self.iteration:07d}.ckpt"
        self.trainer.save_checkpoint(path)
        return str(path)

    def _log_train(self, logs: Mapping[str, Tensor], batch_size: int) -> None:
        for key, value in logs.items():
            show = key == "train/loss_total" or (
                key.startswith("train/loss_") and not key.endswith("_unweighted")
            )
            self.log(key, value, prog_bar=show, on_step=True, on_epoch=False, batch_size=batch_size)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int):
        if not self.automatic_optimization:
            return self._gan_step(batch)
        inputs = self.loss_inputs(batch)
        total, logs = self.generator_objective(inputs)
        self._log_train(logs, inputs.gt.shape[0])
        return total  # None skips the step (no active term yet)

    def _clip(self, optimizer) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm"
            )

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Automatic optimization: ``optim.gradient_clip_val`` (or the trainer's own setting)."""
        value = self.gradient_clip_val or gradient_clip_val
        if value:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=value,
                gradient_clip_algorithm=gradient_clip_algorithm or "norm",
            )

    def _gan_step(self, batch: dict) -> None:
        opt_g, opt_d = self.optimizers()
        step = self.iteration
        self.toggle_optimizer(opt_g)
        inputs = self.loss_inputs(batch)
        total, logs = self.generator_objective(inputs)
        if total is not None:
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(total)
            self._clip(opt_g)
            opt_g.step()
        self.untoggle_optimizer(opt_g)

        d_terms = {n: t for n, t in self.adversarial.items() if t.discriminator_active(step)}
        if d_terms:
            self.toggle_optimizer(opt_d)
            d_inputs = inputs.detached()
            d_values = {n: t.discriminator_loss(d_inputs) for n, t in d_terms.items()}
            self.check_finite(d_values, "discriminator")
            d_total = torch.stack(list(d_values.values())).sum()
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_total)
            self._clip(opt_d)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            for n, v in d_values.items():
                logs[f"train/loss_{n}_d"] = v.detach()
        schedulers = self._schedulers()
        if schedulers:
            schedulers[0].step()
            if d_terms and len(schedulers) > 1:
                schedulers[1].step()  # the discriminator's schedule starts with its first step
        self._log_train(logs, inputs.gt.shape[0])

    def _schedulers(self) -> list:
        sch = self.lr_schedulers()
        if sch is None:
            return []
        return list(sch) if isinstance(sch, (list, tuple)) else [sch]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.iteration += 1
        if self.generator_ema is not None:
            self._update_ema()
        if self.max_iterations is not None and self.iteration >= self.max_iterations:
            self.trainer.should_stop = True

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_params = list(self.generator_ema.parameters())
        params = [p.detach() for p in self.generator.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.ema_decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    def configure_optimizers(self):
        disc_params = {
            id(p) for t in self.adversarial.values() for p in t.discriminator.parameters()
        }
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        g_params += [
            p for p in self.losses.parameters() if p.requires_grad and id(p) not in disc_params
        ]
        opt_g = self.generator_optimizer(g_params)
        if self.automatic_optimization:
            if self.scheduler_factory is None:
                return opt_g
            return {
                "optimizer": opt_g,
                "lr_scheduler": {"scheduler": self.scheduler_factory(opt_g), "interval": "step"},
            }
        if self.discriminator_optimizer is None:
            raise ValueError(
                "a loss term needs a discriminator but no discriminator optimizer was given"
            )
        d_params = [
            p
            for t in self.adversarial.values()
            for p in t.discriminator.parameters()
            if p.requires_grad
        ]
        opt_d = self.discriminator_optimizer(d_params)
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.scheduler_factory(opt_g), self.scheduler_factory(opt_d)]

    def on_fit_end(self) -> None:
        """Record how many iterations every process ran (all ranks must take part in DDP)."""
        counts = self.trainer.strategy.all_gather(
            torch.tensor([self.iteration], device=self.device)
        )
        self.rank_iterations = [int(c) for c in counts.flatten().tolist()]

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sr_cli"] = {
            "iteration": int(self.iteration),
            "scale": self.scale,
            "ema": self.generator_ema is not None,
            **{k: self.config[k] for k in ("model", "degradation", "loss") if k in self.config},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.iteration = int(checkpoint.get("sr_cli", {}).get("iteration", 0))

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lq, gt = batch["lq"], batch["gt"]
        sr = self(lq).clamp(0, 1)
        if sr.shape != gt.shape:
            raise RuntimeError(
                f"generator output {tuple(sr.shape)} does not match GT {tuple(gt.shape)}: "
                f"check that the model scale equals scale={self.scale}"
            )
        metrics = protocol_metrics(sr, gt, self.scale, self.val_protocol)
        params = batch.get("degradation_params")
        # D(SR) vs LQ needs D's own parameters for this image (or a deterministic D).
        if self._consistency_ok and (params is not None or not self.degradation.stochastic):
            d_sr = self.degradation.replay(to_uint8_range(sr) / 255.0, params)
            metrics["lr_consistency_psnr"] = psnr(d_sr.clamp(0, 1), lq)
        sums = self._val_sums.setdefault(dataloader_idx, {})
        for key, val in metrics.items():
            sums[key] = sums.get(key, 0.0) + val.detach().double().sum()
            sums[f"n_{key}"] = sums.get(f"n_{key}", 0.0) + float(val.numel())
        if self.image_dir is not None and int(batch["index"][0]) < self.save_images:
            self._save_triptych(lq[0], sr[0], gt[0], batch["name"][0], dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        keys = list(VAL_METRICS) + (["lr_consistency_psnr"] if self._consistency_ok else [])
        for idx, prefix in enumerate(self.val_names):
            sums = self._val_sums.get(idx, {})
            # Per-image sums and counts reduced over processes (every rank joins the same
            # reductions, even with an empty shard), so the mean is exact under DDP.
            totals = {
                k: float(
                    self.trainer.strategy.reduce(
                        torch.as_tensor(sums.get(k, 0.0), dtype=torch.float64, device=self.device),
                        reduce_op="sum",
                    )
                )
                for k in [*keys, *(f"n_{k}" for k in keys)]
            }
            for key in keys:
                count = totals[f"n_{key}"]
                if count == 0:
                    continue
                self.log(
                    f"{prefix}/{key}",
                    torch.tensor(totals[key] / count, dtype=torch.float32),
                    prog_bar=key == "psnr_y",
                    add_dataloader_idx=False,
                    sync_dist=False,
                )

    def _save_triptych(
        self, lq: Tensor, sr: Tensor, gt: Tensor, name: str, dataloader_idx: int
    ) -> None:
        up = imresize(lq.unsqueeze(0), size=tuple(gt.shape[-2:]))[0].clamp(0, 1)
        row = torch.cat([up, sr, gt], dim=-1)
        prefix = self.val_names[dataloader_idx].replace("/", "_")
        path = self.image_dir / prefix / f"{name}_iter{self.iteration:07d}.png"
        save_image(to_uint8(row), path)
        for logger in self.loggers:
            log_image = getattr(logger, "log_image", None)
            if callable(log_image):
                log_image(
                    key=f"{prefix}/{name}",
                    images=[str(path)],
                    caption=["LQ (bicubic) | SR | GT"],
                    step=self.iteration,
                )
