"""The GAN path of a training step (manual optimization).

When a loss term brings a discriminator, :class:`~sr_cli.train.lit.module.SRModule` switches to
manual optimization: a generator step (discriminators frozen), then ``optim.d_steps_per_g``
steps of every active discriminator on the same detached SR. Each adversarial term's
discriminator has its own optimizer (built from ``optim.discriminator``) and its own schedule,
so its gradients are clipped, checked and skipped apart from the others', and its schedule
starts with its own ``d_start_step``. Mixed precision runs through
Lightning's precision plugin here too: ``manual_backward`` scales the loss and the wrapped
``optimizer.step()`` unscales, calls ``on_before_optimizer_step`` (gradient check and clipping,
on unscaled gradients) and lets the GradScaler skip overflowing fp16 steps. With
``trainer.accumulate_grad_batches=N`` the gradients of N batches are summed before each update.

:class:`GANStep` is a base of :class:`~sr_cli.train.lit.module.SRModule`; the objective and the
NaN guard it calls are :class:`~sr_cli.train.lit.generator_step.GeneratorStep`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from sr_cli.losses.base import AdversarialTerm


class GANStep:
    """Generator and discriminator updates of one iteration, for adversarial mixes."""

    def _gan_step(self, batch: dict) -> None:
        opt_g, *opt_ds = self.optimizers()
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

        # Every adversarial term's discriminator has its own optimizer and schedule: it is
        # stepped, clipped, checked and skipped on its own, from its own d_start_step.
        d_opts = dict(zip(self.adversarial, opt_ds))
        d_terms = {n: t for n, t in self.adversarial.items() if t.discriminator_active(step)}
        if d_terms:
            d_inputs = inputs.detached()
            d_values: dict[str, Tensor] = {}
            for _ in range(self.d_steps_per_g):  # K updates on this iteration's detached SR
                for name, term in d_terms.items():
                    d_values[name] = self._discriminator_update(name, term, d_opts[name], d_inputs)
            for n, v in d_values.items():
                logs[f"train/loss_{n}_d"] = v.detach()
        self._log_train(logs, inputs.gt.shape[0])

    def _discriminator_update(self, name: str, term: AdversarialTerm, opt_d, d_inputs) -> Tensor:
        """One update of one term's discriminator with its own optimizer; returns its loss."""
        self.toggle_optimizer(opt_d)
        value = term.discriminator_loss(d_inputs)
        bad = self._nonfinite({name: value})
        if not self._all_ranks_finite(not bad):
            self._skipped = True
            self.nonfinite("value", bad or ["(another process)"], "discriminator")
        else:
            self._guarded_step(
                opt_d,
                value.float(),
                lambda: self._d_terms_with_bad_gradients({name: term}, d_inputs),
                "discriminator",
            )
        d_sched = self._scheduler(self.discriminator_role(name))
        if d_sched is not None and self._window_ends():  # from its first step on
            d_sched.step()
        self.untoggle_optimizer(opt_d)
        return value

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
