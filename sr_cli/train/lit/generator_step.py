"""The generator's side of a training step: the weighted objective, the step of the plain
(non-GAN) path, and the NaN guard that watches every loss, gradient and weight.

* The generator objective is ``sum(weight * term)`` over the active terms; each is logged as
  ``train/loss_<name>`` (weighted) and ``train/loss_<name>_unweighted``.
* Without a discriminator the module uses automatic optimization: :meth:`GeneratorStep.training_step`
  returns the objective and Lightning steps. :meth:`~GeneratorStep.on_before_optimizer_step` checks
  the gradients before every optimizer step of both paths (unscaled by the precision plugin when a
  GradScaler is in use) and clips them on the manual path.
* The NaN guard checks every weighted term, the total, the gradients before each optimizer step
  and the weights after it. Policy ``stop`` (default) saves the last state it verified finite
  and stops with an error that names the term that first went non-finite; ``skip`` drops the
  step and gives up after ``max_consecutive_skips`` in a row. With a GradScaler (``16-mixed``),
  non-finite gradients are the scaler's business: it skips the step and lowers the scale, which
  is normal fp16 behaviour, so they are counted in ``scaler_skipped_steps`` instead of being
  reported (non-finite loss values and weights are still caught).

:class:`GeneratorStep` is a base of :class:`~sr_cli.train.lit.module.SRModule` and works on the
state that its ``__init__`` sets (``losses``, ``generator``, ``iteration``, ``nan_policy``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from sr_cli.errors import ConfigError, NonFiniteLossError
from sr_cli.losses.base import LossInputs

log = logging.getLogger(__name__)


def _optimizer_params(optimizer) -> list[Tensor]:
    opt = getattr(optimizer, "optimizer", optimizer)
    return [p for group in opt.param_groups for p in group["params"]]


def _last_good_callback(module: pl.LightningModule):
    from sr_cli.train.lit.callbacks import last_good_callback

    return last_good_callback(module.trainer) if module._trainer is not None else None


class GeneratorStep:
    """The objective, the plain training step and the NaN guard of :class:`SRModule`."""

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
        for role, opt in zip(self.optimizer_roles(), optimizers):
            lr = float(opt.param_groups[0]["lr"])
            self.log(f"lr/{role}", lr, on_step=True, on_epoch=False, batch_size=batch_size)

    def _scaler(self):
        """The precision plugin's GradScaler (``16-mixed``), or ``None``."""
        if self._trainer is None:
            return None
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Every optimizer step, both paths: the gradients (unscaled by the precision plugin
        when a GradScaler is in use) are checked, then clipped on the manual path. A generator
        step that will change the weights (finite gradients, not skipped) is noted for the EMA."""
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
        if phase == "generator" and any(p.grad is not None for p in params):
            self._generator_stepped = True  # the EMA follows this step (SRModule)
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
