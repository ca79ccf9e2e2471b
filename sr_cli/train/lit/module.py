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
  then ``optim.d_steps_per_g`` discriminator steps on the same detached SR, each with explicit
  clipping; the generator's and the discriminator's schedulers step with their own optimizer.
* Mixed precision (``trainer.precision=bf16-mixed|16-mixed``) runs through Lightning's precision
  plugin on both paths: autocast around the step, ``manual_backward`` scales the loss and the
  wrapped ``optimizer.step()`` unscales, calls :meth:`on_before_optimizer_step` (gradient check and
  clipping, on unscaled gradients) and lets the GradScaler skip overflowing fp16 steps.
* The NaN guard checks every weighted term, the total, the gradients before each optimizer step
  and the weights after it. Policy ``stop`` (default) saves the last state it verified finite
  and stops with an error that names the term that first went non-finite; ``skip`` drops the
  step and gives up after ``max_consecutive_skips`` in a row. With a GradScaler (``16-mixed``),
  non-finite gradients are the scaler's business: it skips the step and lowers the scale, which
  is normal fp16 behaviour, so they are counted in ``scaler_skipped_steps`` instead of being
  reported (non-finite loss values and weights are still caught).
* Validation logs the registry's validation metrics (paper protocol: Y channel, border crop,
  8-bit rounding), gathered per image across processes, so the figure is exact under DDP. Its
  LQ comes from the ``val_degradation`` stream, as ``sr-eval``'s does.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sr_cli.data.images import save_image
from sr_cli.degradations.base import Degradation, DegradationNotInvertible
from sr_cli.degradations.resize import imresize
from sr_cli.errors import CheckpointError, ConfigError, NonFiniteLossError
from sr_cli.losses.base import AdversarialTerm, LossInputs, LossTerm
from sr_cli.metrics.aggregate import PerImageTable, image_mean
from sr_cli.metrics.registry import MetricInputs, compute_metrics, metric_names
from sr_cli.models.common import as_levels, final_output
from sr_cli.pixels import to_uint8
from sr_cli.streams import stream_generator

log = logging.getLogger(__name__)

#: Metrics logged per validation set, as ``<set>/<metric>``: the registry's validation entries
#: (:mod:`sr_cli.metrics.registry`); ``lr_consistency_psnr`` only when the degradation replays.
VAL_METRICS = metric_names(validation=True)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], object]


#: Config entries stored in every checkpoint (``checkpoint["sr_cli"]``).
STORED_CONFIG = ("name", "model", "degradation", "loss", "optim", "scale")
NAN_POLICIES = ("stop", "skip")


def _optimizer_params(optimizer) -> list[Tensor]:
    opt = getattr(optimizer, "optimizer", optimizer)
    return [p for group in opt.param_groups for p in group["params"]]


def _last_good_callback(module: pl.LightningModule):
    from sr_cli.train.lit.callbacks import last_good_callback

    return last_good_callback(module.trainer) if module._trainer is not None else None


def optimizer_changes(stored: Mapping | None, current: Mapping | None) -> dict[str, tuple]:
    """Hyperparameters (``generator.lr``, ``discriminator.betas`` ...) that differ between the
    optimizer config stored in a checkpoint and the current one: ``{key: (old, new)}``. A
    different optimizer class is refused: its saved state would not fit."""
    changes: dict[str, tuple] = {}
    for role in ("generator", "discriminator"):
        old = dict((stored or {}).get(role) or {})
        new = dict((current or {}).get(role) or {})
        if not old or not new:
            continue
        if old.get("_target_") != new.get("_target_"):
            raise CheckpointError(
                f"resume: optim.{role} changed from {old.get('_target_')} to {new.get('_target_')}; "
                "the checkpoint's optimizer state does not fit another optimizer. Start a new run "
                "with model.pretrained=<checkpoint> instead."
            )
        for key in sorted(set(old) | set(new)):
            if key.startswith("_"):
                continue
            if old.get(key) != new.get(key):
                changes[f"{role}.{key}"] = (old.get(key), new.get(key))
    return changes


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
        nan_policy: ``stop`` or ``skip`` (see the module docstring).
        max_consecutive_skips: with ``skip``, give up after this many skipped steps in a row.
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
        self.iteration = 0
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
        self._consistency_ok = _has_consistency(degradation)

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
        degradation when LQ is made here (so ``LQ = D(GT)`` stays exact for any kernel); CutBlur,
        which needs the LQ, and batches whose LQ came from disk are augmented as pairs.
        """
        training = self._trainer is not None and self.trainer.training
        augment = self.augment if training else None
        if "lq" not in batch:
            gt = batch["gt"]
            if training:
                rng = self._rng("train_degradation", self.iteration, self._rank())
            else:  # the same LQ as sr-eval's for this image
                rng = self._rng("val_degradation", int(batch["index"][0]))
            with torch.no_grad():
                if augment is not None and not getattr(augment, "cutblur_prob", 0.0):
                    _, gt = augment(gt, gt, self._rng("augmentation", self.iteration, self._rank()))
                    batch["gt"], augment = gt, None
                params = self.degradation.sample(gt, generator=rng)
                batch["lq"] = self.degradation(gt, params).detach()
            batch["degradation_params"] = params
        if augment is not None:
            with torch.no_grad():
                rng = self._rng("augmentation", self.iteration, self._rank())
                batch["lq"], batch["gt"] = augment(batch["lq"], batch["gt"], rng)
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
        )

    # ------------------------------------------------------------------ objective
    def generator_objective(self, inputs: LossInputs) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Weighted sum of the active terms and the values to log. Inactive terms are not computed.

        Extra generator passes a term asks for (:attr:`LossOutput.extra_passes`) are scored by
        the terms they name, with those terms' weights, logged as ``train/loss_<name>_aux``.
        """
        weighted: dict[str, Tensor] = {}
        logs: dict[str, Tensor] = {}
        passes = []
        for name, term in self.losses.items():
            if not term.is_active(inputs.step):
                continue
            out = term(inputs)
            weighted[name] = term.weight * out.loss
            logs[f"train/loss_{name}"] = weighted[name].detach()
            logs[f"train/loss_{name}_unweighted"] = out.loss.detach()
            for key, val in out.metrics.items():
                logs[f"train/{key}"] = val.detach()
            passes += out.extra_passes
        for extra in passes:
            for name in extra.terms:
                if name not in self.losses:
                    raise ConfigError(
                        f"a term asked for loss {name!r} on its extra pass, but it is not selected; "
                        f"selected terms: {', '.join(self.losses)}"
                    )
                term = self.losses[name]
                if term.is_active(inputs.step):
                    weighted[f"{name}_aux"] = term.weight * term(extra.inputs).loss
                    logs[f"train/loss_{name}_aux"] = weighted[f"{name}_aux"].detach()
        total = (
            torch.stack([v.reshape(()).float() for v in weighted.values()]).sum()
            if weighted
            else None
        )
        if total is not None:
            logs["train/loss_total"] = total.detach()
        self._bad_terms = self._nonfinite(weighted) if total is not None else []
        if total is not None and not self._bad_terms and not self._all_ranks_finite(total):
            self._bad_terms = ["(another process)"]
        return total, logs

    # ------------------------------------------------------------------ NaN guard
    @staticmethod
    def _nonfinite(values: Mapping[str, Tensor]) -> list[str]:
        finite = torch.isfinite(
            torch.stack([v.detach().float().reshape(()) for v in values.values()])
        )
        if bool(finite.all()):
            return []
        return [n for n, ok in zip(values, finite.tolist()) if not ok]

    def _all_ranks_finite(self, value: Tensor | bool) -> bool:
        ok = bool(torch.isfinite(value).all()) if isinstance(value, Tensor) else bool(value)
        if self._trainer is not None and self.trainer.world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        return ok

    def _grads_finite(self, params: Sequence[Tensor]) -> bool:
        grads = [p.grad for p in params if p.grad is not None]
        ok = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        return self._all_ranks_finite(ok)

    def _weights_finite(self, params: Sequence[Tensor]) -> bool:
        ok = bool(
            torch.isfinite(torch.stack(torch._foreach_norm([p.detach() for p in params]))).all()
        )
        return self._all_ranks_finite(ok)

    def _terms_with_bad_gradients(self, batch: dict) -> list[str]:
        """Which generator terms have a non-finite gradient (recomputed one by one, only after a
        failure, so the error names the culprit rather than every term)."""
        params = [p for p in self.generator.parameters() if p.requires_grad]
        bad = []
        for name, term in self.losses.items():
            if not term.is_active(self.iteration):
                continue
            value = term.weight * term(self.loss_inputs(batch)).loss
            grads = torch.autograd.grad(value, params, allow_unused=True)
            grads = [g for g in grads if g is not None]
            if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
                bad.append(name)
        return bad

    def nonfinite(self, what: str, terms: Sequence[str], phase: str, params=()) -> None:
        """A non-finite loss, gradient or weight: skip the step (policy ``skip``, returns) or
        stop with an error naming the terms; the state is saved first if it is still finite."""
        if self.nan_policy == "skip" and what != "weights":
            self.skipped_in_a_row += 1
            self.skipped_steps += 1
            for p in params:
                p.grad = None
            if self.skipped_in_a_row < self.max_consecutive_skips:
                log.warning(
                    "%s of %s (%s) not finite at iteration %d: step skipped (%d in a row)",
                    what,
                    ", ".join(repr(t) for t in terms) or "the objective",
                    phase,
                    self.iteration,
                    self.skipped_in_a_row,
                )
                return
        names = ", ".join(repr(t) for t in terms) or "(unknown term)"
        saved = None
        if what != "weights":
            cb = _last_good_callback(self)
            saved = cb.path_for(self.iteration) if cb is not None else None
        if saved is not None:
            where = f" The last good state (verified finite) is saved to {saved}."
        else:
            where = " The weights were not saved; resume from checkpoints/last.ckpt."
        gave_up = (
            f" after {self.skipped_in_a_row} skipped steps in a row (nan_guard.max_consecutive_skips)"
            if self.nan_policy == "skip" and what != "weights"
            else ""
        )
        raise NonFiniteLossError(
            f"{what} of loss term {names} ({phase}) not finite at iteration {self.iteration}"
            f"{gave_up}.{where} Lower the learning rate or the term's weight, enable "
            "optim.gradient_clip_val, or check the inputs; resume with resume=<that checkpoint>.",
            checkpoint=saved,
        )

    def check_finite(self, values: Mapping[str, Tensor], phase: str) -> None:
        """Stop (or skip) if any of ``values`` is NaN/Inf."""
        bad = self._nonfinite(values) if values else []
        if not self._all_ranks_finite(not bad):
            self.nonfinite("value", bad or ["(another process)"], phase)

    def _log_train(self, logs: Mapping[str, Tensor], batch_size: int) -> None:
        # Lightning writes on_step values only every trainer.log_every_n_steps (and when the run
        # stops); each self.log costs ~1-2 ms of Python, so the other iterations skip it.
        connector = getattr(self._trainer, "_logger_connector", None)
        last = self.max_iterations is not None and self.iteration + 1 >= self.max_iterations
        if connector is not None and not (connector.should_update_logs or last):
            return
        for key, value in logs.items():
            show = key == "train/loss_total" or (
                key.startswith("train/loss_") and not key.endswith("_unweighted")
            )
            self.log(key, value, prog_bar=show, on_step=True, on_epoch=False, batch_size=batch_size)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
        for role, opt in zip(("generator", "discriminator"), optimizers):
            lr = float(opt.param_groups[0]["lr"])
            self.log(f"lr/{role}", lr, on_step=True, on_epoch=False, batch_size=batch_size)

    def _logger_step(self) -> int:
        """The step Lightning gives this iteration's logged metrics (train and validation alike),
        so images land on the same step as the numbers."""
        loop = getattr(self.trainer.fit_loop, "epoch_loop", None)
        return int(getattr(loop, "_batches_that_stepped", max(self.iteration - 1, 0)))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int):
        self._batch = batch
        self._skipped = False
        if not self.automatic_optimization:
            return self._gan_step(batch)
        inputs = self.loss_inputs(batch)
        total, logs = self.generator_objective(inputs)
        self._log_train(logs, inputs.gt.shape[0])
        if total is not None and self._bad_terms:
            self.nonfinite("value", self._bad_terms, "generator")
            self._skipped = True
            return None  # policy skip: no backward, no step
        return total  # None skips the step (no active term yet)

    def _scaler(self):
        """The precision plugin's GradScaler (``16-mixed``), or ``None``."""
        if self._trainer is None:
            return None
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Every optimizer step, both paths: the gradients (unscaled by the precision plugin
        when a GradScaler is in use) are checked, then clipped on the manual path."""
        if self.automatic_optimization:
            phase = "generator"

            def bad_terms():
                return self._terms_with_bad_gradients(self._batch)

        else:
            phase, bad_terms = self._pending_check
        params = _optimizer_params(optimizer)
        if not self._grads_finite(params):
            if self._scaler() is not None:
                # fp16 overflow: the GradScaler skips this step and halves its scale.
                self.scaler_skipped_steps += 1
                log.info(
                    "16-mixed: non-finite %s gradients at iteration %d, the GradScaler skips the "
                    "step (scale %.3g)",
                    phase,
                    self.iteration,
                    float(self._scaler().get_scale()),
                )
                return
            self._skipped = True
            self.nonfinite("gradient", bad_terms(), phase, params)
            return
        if not self.automatic_optimization:
            self._clip(optimizer)

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

    def _guarded_step(self, optimizer, total: Tensor, bad_grads: Callable[[], list[str]], phase):
        """Backward and step of one network (manual optimization). The step goes through
        Lightning's wrapped optimizer, so the precision plugin scales/unscales (GradScaler) and
        :meth:`on_before_optimizer_step` checks and clips the unscaled gradients."""
        n = self.accumulate
        if self.iteration % n == 0:  # first batch of an accumulation window
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(total / n if n > 1 else total)
        if not self._window_ends():
            return
        self._pending_check = (phase, bad_grads)
        try:
            optimizer.step()  # with skip policy and bad gradients: grads cleared, no update
        finally:
            self._pending_check = None

    def _window_ends(self) -> bool:
        """Whether this batch completes an accumulation window (always, without accumulation)."""
        return (self.iteration + 1) % self.accumulate == 0

    def _gan_step(self, batch: dict) -> None:
        opt_g, opt_d = self.optimizers()
        step = self.iteration
        self.toggle_optimizer(opt_g)
        inputs = self.loss_inputs(batch)
        total, logs = self.generator_objective(inputs)
        if total is not None and self._bad_terms:
            self._skipped = True
            self.nonfinite("value", self._bad_terms, "generator")
        elif total is not None:
            self._guarded_step(
                opt_g, total, lambda: self._terms_with_bad_gradients(batch), "generator"
            )
        self.untoggle_optimizer(opt_g)

        g_sched = self._scheduler("generator")
        if g_sched is not None and self._window_ends():
            g_sched.step()

        d_terms = {n: t for n, t in self.adversarial.items() if t.discriminator_active(step)}
        if d_terms:
            self.toggle_optimizer(opt_d)
            d_inputs = inputs.detached()
            d_sched = self._scheduler("discriminator")
            for _ in range(self.d_steps_per_g):  # K updates on this iteration's detached SR
                d_values = {n: t.discriminator_loss(d_inputs) for n, t in d_terms.items()}
                bad = self._nonfinite(d_values)
                if not self._all_ranks_finite(not bad):
                    self._skipped = True
                    self.nonfinite("value", bad or ["(another process)"], "discriminator")
                else:
                    d_total = torch.stack([v.float() for v in d_values.values()]).sum()
                    self._guarded_step(
                        opt_d,
                        d_total,
                        lambda: self._d_terms_with_bad_gradients(d_terms, d_inputs),
                        "discriminator",
                    )
                if d_sched is not None and self._window_ends():  # from its first step on
                    d_sched.step()
            self.untoggle_optimizer(opt_d)
            for n, v in d_values.items():
                logs[f"train/loss_{n}_d"] = v.detach()
        self._log_train(logs, inputs.gt.shape[0])

    @staticmethod
    def _d_terms_with_bad_gradients(d_terms: Mapping[str, AdversarialTerm], inputs) -> list[str]:
        bad = []
        for name, term in d_terms.items():
            params = [p for p in term.discriminator.parameters() if p.requires_grad]
            grads = torch.autograd.grad(term.discriminator_loss(inputs), params, allow_unused=True)
            grads = [g for g in grads if g is not None]
            if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
                bad.append(name)
        return bad

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

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        params = list(self.generator.parameters())
        params += [p for d in self.discriminators.values() for p in d.parameters()]
        if not self._weights_finite(params):
            self.nonfinite("weights", [], "after the optimizer step")
        if not getattr(self, "_skipped", False):
            self.skipped_in_a_row = 0
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
        d_params = [
            p
            for t in self.adversarial.values()
            for p in t.discriminator.parameters()
            if p.requires_grad
        ]
        opt_d = self.discriminator_optimizer(d_params)
        schedulers = [self.scheduler_factory(opt_g)] if self.scheduler_factory is not None else []
        if self.discriminator_scheduler_factory is not None:
            schedulers.append(self.discriminator_scheduler_factory(opt_d))
            self._scheduler_roles.append("discriminator")
        if not schedulers:
            return [opt_g, opt_d]
        return [opt_g, opt_d], schedulers

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
        """After a resume, apply optimizer settings the user changed (Lightning restored the
        checkpoint's), rescaling scheduled learning rates in proportion."""
        if not self.resume_changes:
            return
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
        for idx, role in enumerate(("generator", "discriminator")):
            changes = {
                k[len(role) + 1 :]: v
                for k, v in self.resume_changes.items()
                if k.startswith(role + ".")
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
                ", ".join(f"optim.{role}.{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items()),
            )

    # ------------------------------------------------------------------ validation
    def _optimizer_mode(self, mode: str) -> None:
        """Schedule-free optimizers keep two weight sequences: validate with the averaged one
        (``optimizer.eval()``), train with the other (``optimizer.train()``)."""
        if self._trainer is None or not self.trainer.optimizers or self.trainer.state.fn != "fit":
            return
        for opt in self.trainer.optimizers:
            switch = getattr(opt, mode, None)
            if callable(switch) and "schedulefree" in type(opt).__module__.lower():
                switch()

    def on_validation_epoch_start(self) -> None:
        self._optimizer_mode("eval")
        self._val_sums = {
            i: PerImageTable(len(self.val_metrics), self.device) for i in range(len(self.val_names))
        }
        if not self.bicubic_reference:
            self._bicubic_sums = {
                i: PerImageTable(len(self.val_metrics), self.device)
                for i in range(len(self.val_names))
            }

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lq, gt = batch["lq"], batch["gt"]
        sr = self(lq).float().clamp(0, 1)  # float: autocast may give bf16/fp16
        if sr.shape != gt.shape:
            raise RuntimeError(
                f"generator output {tuple(sr.shape)} does not match GT {tuple(gt.shape)}: "
                f"check that the model scale equals scale={self.scale}"
            )
        params = batch.get("degradation_params")
        replay = None
        # D(SR) vs LQ needs D's own parameters for this image (or a deterministic D).
        if self._consistency_ok and (params is not None or not self.degradation.stochastic):

            def replay(s: Tensor) -> Tensor:
                return self.degradation.replay(s, params)

        inputs = MetricInputs(sr, gt, lq, self.scale, self.val_protocol, replay)
        self._val_sums[dataloader_idx].update(
            batch["index"], compute_metrics(self.val_metrics, inputs, self._metric_modules())
        )
        if not self.bicubic_reference:
            up = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
            ref = MetricInputs(up, gt, lq, self.scale, self.val_protocol, replay)
            self._bicubic_sums[dataloader_idx].update(
                batch["index"], compute_metrics(self.val_metrics, ref, self._metric_modules())
            )
        if self.image_dir is not None and int(batch["index"][0]) < self.save_images:
            self._save_triptych(lq[0], sr[0], gt[0], batch["name"][0], dataloader_idx)

    def _metric_modules(self) -> dict[str, nn.Module]:
        return {n: m.to(self.device) for n, m in self.metric_modules.items()}

    def on_validation_epoch_end(self) -> None:
        self._optimizer_mode("train")
        datasets = getattr(self.trainer, "val_dataloaders", None)
        datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        first = not self.bicubic_reference
        for idx, prefix in enumerate(self.val_names):
            # Per-image values gathered from every process (each rank joins, even with an
            # empty shard) and averaged in image order: the mean is exact under DDP.
            count = len(datasets[idx].dataset)
            table = self._val_sums[idx].compute(count)
            if first:
                ref = self._bicubic_sums[idx].compute(count)
                self.bicubic_reference[prefix] = {
                    key: mean
                    for k, key in enumerate(self.val_metrics)
                    if (mean := image_mean(ref[:, k])) is not None
                }
            for k, key in enumerate(self.val_metrics):
                mean = image_mean(table[:, k])
                if mean is None:
                    continue
                self.log(
                    f"{prefix}/{key}",
                    torch.tensor(mean, dtype=torch.float32),
                    prog_bar=key == "psnr_y",
                    add_dataloader_idx=False,
                    sync_dist=False,
                )
            for key, mean in self.bicubic_reference.get(prefix, {}).items():
                self.log(
                    f"{prefix}/bicubic_{key}",
                    torch.tensor(mean, dtype=torch.float32),
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
                    step=self._logger_step(),
                )
