"""The SR LightningModule: one generator, any mix of loss terms, with or without a GAN.

:class:`SRModule` is built from four parts, one concern per file:

* here: construction, LQ made on the device, the optimizers, iteration counting, the EMA
  generator and what a checkpoint stores (:mod:`sr_cli.train.lit.checkpoint`);
* :mod:`~sr_cli.train.lit.generator_step`: the weighted objective of the active terms, the plain
  (non-GAN) step and the NaN guard;
* :mod:`~sr_cli.train.lit.gan_step`: the generator and discriminator updates of adversarial mixes
  (manual optimization);
* :mod:`~sr_cli.train.lit.validation`: validation metrics, the bicubic reference and images.

LQ is made here, on the training device, right after the batch transfer
(:meth:`SRModule.on_after_batch_transfer`), by the same degradation object the
downsample-consistency loss uses. Its random parameters come from a generator seeded by
``(seed, iteration, rank)``, so a resumed run draws exactly what the uninterrupted one would.
Terms live in an ``nn.ModuleDict`` keyed by their config name. Mixed precision
(``trainer.precision=bf16-mixed|16-mixed``) runs through Lightning's precision plugin on both
paths (autocast around the step, GradScaler for ``16-mixed``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sr_cli.degradations.base import Degradation
from sr_cli.degradations.context import degrade_with_context
from sr_cli.errors import ConfigError
from sr_cli.losses.base import AdversarialTerm, LossInputs, LossTerm
from sr_cli.metrics.aggregate import PerImageTable
from sr_cli.models.common import as_levels, final_output
from sr_cli.streams import stream_generator
from sr_cli.train.lit.checkpoint import STORED_CONFIG, optimizer_changes
from sr_cli.train.lit.gan_step import GANStep
from sr_cli.train.lit.generator_step import GeneratorStep
from sr_cli.train.lit.validation import VAL_METRICS, Validation, has_consistency

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], object]

NAN_POLICIES = ("stop", "skip")


def source_bits(batch: dict) -> int | Tensor:
    """The bit depth to round the batch's LQ to: ``batch["bits"]`` (8 or 16 per image), as one
    int when the batch shares it (8 without the key)."""
    bits = batch.get("bits")
    if bits is None:
        return 8
    bits = torch.as_tensor(bits)
    if bits.numel() == 0 or bool((bits == bits.flatten()[0]).all()):
        return int(bits.flatten()[0]) if bits.numel() else 8
    return bits


class SRModule(GeneratorStep, GANStep, Validation, pl.LightningModule):
    """Trains a super-resolution generator with a composable objective.

    Args:
        generator: network ``lq -> sr`` (or a list of pyramid levels, last = SR) with a
            ``scale`` attribute.
        losses: ``{name: LossTerm}``; names become the ``train/loss_<name>`` log keys.
        degradation: HR -> LQ operator, applied on the device after the batch transfer.
        generator_optimizer: ``params -> Optimizer`` (e.g. a ``functools.partial`` of Adam).
        discriminator_optimizer: idem for the discriminator; used only when a term needs one.
        scheduler: ``optimizer -> LR scheduler`` of the generator, stepped once per iteration,
            or ``None``.
        discriminator_scheduler: idem for the discriminator, stepped after every discriminator
            step (``d_steps_per_g`` per iteration once the discriminator is active), or ``None``.
        d_steps_per_g: discriminator updates per generator update (on the same batch).
        channels_last: keep the networks and batches in ``torch.channels_last`` memory format.
        compile_generator: ``torch.compile`` options for the generator (compiled in place, so
            the state-dict keys stay those of the plain network), or ``None``.
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
        config: the resolved run config (plain dict). Its ``name``, ``model``, ``degradation``,
            ``loss`` and ``optim`` entries are stored in every checkpoint, so ``sr-eval``/
            ``sr-upscale`` can rebuild the generator from the checkpoint alone and a resume can
            tell what changed.
        nan_policy: ``stop`` or ``skip`` (see :mod:`~sr_cli.train.lit.generator_step`).
        max_consecutive_skips: with ``skip``, give up after this many skipped steps in a row.
        validate_first: validate once before the first step (iteration 0) of a fresh run, so
            the console and ``metrics.csv`` show where a fine-tune starts (``model.pretrained``);
            not on resume.
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
        nan_policy: str = "stop",
        max_consecutive_skips: int = 10,
        discriminator_scheduler: SchedulerFactory | None = None,
        d_steps_per_g: int = 1,
        channels_last: bool = False,
        compile_generator: Mapping | None = None,
        accumulate_grad_batches: int = 1,
        extra_val_metrics: Sequence[str] = (),
        metric_modules: Mapping[str, nn.Module] | None = None,
        validate_first: bool = False,
    ) -> None:
        super().__init__()
        if not losses:
            raise ValueError("at least one loss term is needed, e.g. loss=l1")
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(
                f"nan_guard.policy must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}"
            )
        if int(max_consecutive_skips) < 1:
            raise ConfigError(
                f"nan_guard.max_consecutive_skips must be >= 1, got {max_consecutive_skips}"
            )
        if isinstance(d_steps_per_g, bool) or int(d_steps_per_g) < 1:
            raise ConfigError(f"optim.d_steps_per_g must be an integer >= 1, got {d_steps_per_g!r}")
        self.generator = generator
        self.losses = nn.ModuleDict(dict(losses))
        self.degradation = degradation
        self.augment = augment
        self.scale = int(getattr(generator, "scale", degradation.scale))
        self.generator_ema = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False).eval()
        self.ema_decay = ema_decay
        #: Set when the generator's optimizer steps with finite gradients: the EMA is updated
        #: once per optimizer step actually taken (not per batch of an accumulation window, nor
        #: for a step the NaN guard or the GradScaler skipped).
        self._generator_stepped = False
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.scheduler_factory = scheduler
        self.discriminator_scheduler_factory = discriminator_scheduler
        self.d_steps_per_g = int(d_steps_per_g)
        #: Manual (GAN) path: gradients of this many consecutive batches are summed (each loss
        #: divided by it) before one generator and one discriminator update. The plain path
        #: leaves this to Lightning's ``accumulate_grad_batches``.
        self.accumulate = int(accumulate_grad_batches)
        if self.accumulate < 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches!r}"
            )
        if self.accumulate > 1 and self.d_steps_per_g > 1:
            raise ConfigError(
                "optim.d_steps_per_g > 1 cannot be combined with trainer.accumulate_grad_batches "
                "> 1; pick one (e.g. optim.d_steps_per_g=1)."
            )
        self.channels_last = bool(channels_last)
        self._scheduler_roles: list[str] = []
        self._pending_check = None
        self.scaler_skipped_steps = 0
        if compile_generator is not None:
            # In place (nn.Module.compile): parameters and state-dict keys are the plain network's.
            self.generator.compile(**dict(compile_generator))
        self.gradient_clip_val = gradient_clip_val
        self.max_iterations = max_iterations
        self.val_names = list(val_names)
        self.val_protocol = val_protocol
        # val.extra_metrics after the registry's validation ones; their networks (LPIPS) are kept
        # out of the state dict (not in checkpoints) and follow the module's device.
        self.val_metrics = tuple(dict.fromkeys([*VAL_METRICS, *extra_val_metrics]))
        self.metric_modules = dict(metric_modules or {})
        self.save_images = int(save_images)
        self.image_dir = Path(image_dir) if image_dir else None
        self.seed = int(seed)
        self.config = dict(config or {})
        self.validate_first = bool(validate_first)
        self.iteration = 0
        #: An optimizer step of this iteration has begun and its iteration is not counted yet
        #: (weights, optimizer state, EMA may be half updated): see :meth:`state_intact`.
        self._updating = False
        self.rank_iterations: list[int] = []
        self.adversarial = {n: t for n, t in self.losses.items() if isinstance(t, AdversarialTerm)}
        self.automatic_optimization = not self.adversarial
        self.nan_policy = nan_policy
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.skipped_in_a_row = 0
        self.skipped_steps = 0
        self.resume_changes: dict[str, tuple] = {}
        self._val_sums: dict[int, PerImageTable] = {}
        self._bicubic_sums: dict[int, PerImageTable] = {}
        #: ``{"val": {"psnr_y": ...}}``: bicubic upscaling of the very validation LQ, measured once
        #: like SR (what the run has to beat), logged as ``<set>/bicubic_<metric>``.
        self.bicubic_reference: dict[str, dict[str, float]] = {}
        self._consistency_ok = has_consistency(degradation)
        #: LR pixels of context that replaying the degradation on SR would need.
        self.replay_margin = degradation.context_margin(replayed=True)

    # ------------------------------------------------------------------ helpers
    @property
    def discriminators(self) -> dict[str, nn.Module]:
        """Every adversarial term's discriminator, by term name."""
        return {n: t.discriminator for n, t in self.adversarial.items()}

    @property
    def discriminator(self) -> nn.Module | None:
        """The first adversarial term's discriminator (``None`` without one)."""
        return next(iter(self.discriminators.values()), None)

    def eval_generator(self) -> nn.Module:
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, lq: Tensor) -> Tensor:
        """SR image from LQ with the evaluation generator (EMA when enabled)."""
        return final_output(self.eval_generator()(lq))

    def _rank(self) -> int:
        return self.trainer.global_rank if self._trainer is not None else 0

    def _rng(self, stream: str, *parts: int) -> torch.Generator:
        return stream_generator(self.seed, stream, *parts)

    # ------------------------------------------------------------------ data
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Make LQ from GT on the device, batched, recording the degradation's parameters.

        The on-device augmentation of training batches is applied to GT *before* the
        degradation when LQ is made here (so ``LQ = D(GT)`` stays exact for any kernel);
        patches degraded with their HR context (``data.lr_context``) are flipped/rotated with
        their context before the degradation (so an anisotropic kernel's replay still makes the
        LQ) and mixed up after it, as pairs (``LQ = D(GT)`` up to the rounding); CutBlur, which
        needs the LQ, and batches whose LQ came from disk are augmented as pairs.

        A batch with ``gt_context`` (patches cut with HR context around them) gets the LQ those
        patches have inside their images (:func:`~sr_cli.degradations.context.degrade_with_context`),
        and ``lq_border``: the LR pixels along each edge whose replay on SR alone lacks that
        context (the downsample-consistency loss compares inside them). The LQ is rounded to
        the source's bit depth (``batch["bits"]``: 8, or 16 for 16-bit images).
        """
        training = self._trainer is not None and self.trainer.training
        augment = self.augment if training else None
        aug_params = None  # drawn here when part of the augmentation precedes the degradation
        if "lq" not in batch:
            gt = batch["gt"]
            if training:
                rng = self._rng("train_degradation", self.iteration, self._rank())
            else:  # the same LQ as sr-eval's for this image
                rng = self._rng("val_degradation", int(batch["index"][0]))
            bits = source_bits(batch)
            context = batch.get("gt_context")
            with torch.no_grad():
                if (
                    context is None
                    and augment is not None
                    and not getattr(augment, "cutblur_prob", 0.0)
                ):
                    _, gt = augment(gt, gt, self._rng("augmentation", self.iteration, self._rank()))
                    batch["gt"], augment = gt, None
                elif augment is not None and not getattr(augment, "cutblur_prob", 0.0):
                    rng_aug = self._rng("augmentation", self.iteration, self._rank())
                    aug_params = augment.sample(gt.shape[0], gt.device, rng_aug)
                    context, batch["context_box"] = augment.dihedral_regions(
                        context, batch["context_box"], aug_params
                    )
                    gt = batch["gt"] = augment.dihedral(gt, aug_params)
                    aug_params = augment.without_dihedral(aug_params)  # mixup: after degrading
                params = self.degradation.sample(gt, generator=rng)
                if context is None:
                    batch["lq"] = self.degradation(gt, params, bits=bits).detach()
                else:  # the LQ of the patch inside its image (data.lr_context)
                    batch["lq"] = degrade_with_context(
                        self.degradation, context, batch["context_box"], gt.shape[-1], params, bits
                    ).detach()
                    margin = (context.shape[-1] - gt.shape[-1]) // (2 * self.scale)
                    batch["lq_border"] = min(margin, self.replay_margin)
            batch["degradation_params"] = params
        if augment is not None:
            with torch.no_grad():
                rng = self._rng("augmentation", self.iteration, self._rank())
                batch["lq"], batch["gt"] = augment(batch["lq"], batch["gt"], rng, aug_params)
        if self.channels_last:
            for key in ("lq", "gt"):
                if batch[key].dim() == 4:
                    batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        return batch

    def setup(self, stage: str) -> None:
        if self.channels_last:  # in place: the parameters (and any optimizer's refs) stay the same
            self.to(memory_format=torch.channels_last)

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
            discriminators=self.discriminators,
            ema_generator=self.generator_ema,
            lq_border=int(batch.get("lq_border", 0)),
        )

    # ------------------------------------------------------------------ optimization
    def _schedulers(self) -> list:
        sch = self.lr_schedulers()
        if sch is None:
            return []
        return list(sch) if isinstance(sch, (list, tuple)) else [sch]

    def _scheduler(self, role: str):
        """The LR scheduler of ``generator`` or ``discriminator`` (``None`` without one)."""
        if role not in self._scheduler_roles:
            return None
        return self._schedulers()[self._scheduler_roles.index(role)]

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> int | None:
        """A run resumed at (or beyond) its last iteration trains no further step."""
        if self.max_iterations is not None and self.iteration >= self.max_iterations:
            self.trainer.should_stop = True
            return -1  # Lightning: skip the rest of this epoch
        return None

    def state_intact(self) -> bool:
        """Whether the state is exactly that after :attr:`iteration` iterations: no update of the
        current iteration has begun and no accumulation window is half done. Only such a state
        may be saved after an error (a resume from it is then exact)."""
        return not self._updating and self.iteration % self.accumulate == 0

    def on_before_optimizer_step(self, optimizer) -> None:
        self._updating = True  # from here until on_train_batch_end has counted the iteration
        super().on_before_optimizer_step(optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        params = list(self.generator.parameters())
        params += [p for d in self.discriminators.values() for p in d.parameters()]
        if not self._weights_finite(params):
            self.nonfinite("weights", [], "after the optimizer step")
        if not getattr(self, "_skipped", False):
            self.skipped_in_a_row = 0
        self.iteration += 1
        if self.generator_ema is not None and self._generator_stepped:
            self._update_ema()
        self._generator_stepped = False
        self._updating = False
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
        self._scheduler_roles = ["generator"] if self.scheduler_factory is not None else []
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
        # One optimizer (and one schedule) per adversarial term: each discriminator is clipped,
        # checked, scheduled and skipped on its own, from its own d_start_step.
        d_opts = []
        for name in self.adversarial:
            params = [
                p for p in self.adversarial[name].discriminator.parameters() if p.requires_grad
            ]
            d_opts.append(self.discriminator_optimizer(params))
        schedulers = [self.scheduler_factory(opt_g)] if self.scheduler_factory is not None else []
        if self.discriminator_scheduler_factory is not None:
            for name, opt_d in zip(self.adversarial, d_opts):
                schedulers.append(self.discriminator_scheduler_factory(opt_d))
                self._scheduler_roles.append(self.discriminator_role(name))
        if not schedulers:
            return [opt_g, *d_opts]
        return [opt_g, *d_opts], schedulers

    def discriminator_role(self, term: str) -> str:
        """The name of a term's discriminator optimizer in logs and schedules: ``discriminator``
        for the first adversarial term (as with one), ``discriminator_<term>`` for the others."""
        return "discriminator" if term == next(iter(self.adversarial)) else f"discriminator_{term}"

    def optimizer_roles(self) -> list[str]:
        """``generator``, then one role per adversarial term, in the optimizers' order."""
        return ["generator", *(self.discriminator_role(n) for n in self.adversarial)]

    def on_fit_end(self) -> None:
        """Record how many iterations every process ran (all ranks must take part in DDP)."""
        counts = self.trainer.strategy.all_gather(
            torch.tensor([self.iteration], device=self.device)
        )
        self.rank_iterations = [int(c) for c in counts.flatten().tolist()]

    def _validate_start(self) -> None:
        """One validation pass before training, as Lightning runs one after an epoch (the fit
        loop's own validation loop: same metrics, loggers and callbacks, logged at step 0)."""
        trainer = self.trainer
        if not self.val_names or trainer.limit_val_batches == 0:
            return
        trainer.validating = True
        try:
            trainer.fit_loop.epoch_loop.val_loop.run()
        finally:
            trainer.training = True

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sr_cli"] = {
            "iteration": int(self.iteration),
            "scale": self.scale,
            "ema": self.generator_ema is not None,
            "adversarial_terms": list(self.adversarial),
            "skipped_steps": int(self.skipped_steps),
            "scaler_skipped_steps": int(self.scaler_skipped_steps),
            **{k: self.config[k] for k in STORED_CONFIG if k in self.config},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("sr_cli", {})
        self.iteration = int(meta.get("iteration", 0))
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self.scaler_skipped_steps = int(meta.get("scaler_skipped_steps", 0))
        self.resume_changes = optimizer_changes(meta.get("optim"), self.config.get("optim"))

    def on_train_start(self) -> None:
        """A fresh fine-tune validates its starting weights first (iteration 0); after a resume,
        apply optimizer settings the user changed (Lightning restored the checkpoint's),
        rescaling scheduled learning rates in proportion."""
        resumed = self.trainer.ckpt_path is not None
        if self.validate_first and not resumed and self.iteration == 0:
            self._validate_start()
        if not self.resume_changes:
            return
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
        for idx, role in enumerate(self.optimizer_roles()):
            kind = "generator" if idx == 0 else "discriminator"  # every term's: optim.discriminator
            changes = {
                k[len(kind) + 1 :]: v
                for k, v in self.resume_changes.items()
                if k.startswith(kind + ".")
            }
            if not changes or idx >= len(optimizers):
                continue
            opt = (
                optimizers[idx].optimizer
                if hasattr(optimizers[idx], "optimizer")
                else optimizers[idx]
            )
            sched = self._scheduler(role)
            for g, group in enumerate(opt.param_groups):
                for key, (_, new) in changes.items():
                    if key not in group:
                        continue
                    if key == "lr" and sched is not None and hasattr(sched, "base_lrs"):
                        ratio = group["lr"] / sched.base_lrs[g] if sched.base_lrs[g] else 1.0
                        sched.base_lrs[g] = float(new)
                        group["initial_lr"] = float(new)
                        group["lr"] = float(new) * ratio
                    else:
                        group[key] = tuple(new) if isinstance(new, list) else new
            log.warning(
                "resume: applying the new optimizer settings %s",
                ", ".join(f"optim.{kind}.{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items()),
            )
