"""Composable degradation pipelines: stages that draw per-sample parameters, replayable.

A :class:`Stage` is one operator (blur, resize, noise, JPEG, quantization, ...). It may change
the resolution or not. It works like a :class:`~sr_cli.degradations.base.Degradation`, in two
steps:

* ``sample(n, device, generator)`` draws its random parameters for ``n`` images;
* ``forward(x, params, lq_size)`` applies it; ``replay(x, params, lq_size)`` applies only its
  deterministic, differentiable part (blur and resize replay exactly; noise, JPEG and
  quantization replay as the identity, since they are the random, non-invertible part).

``lq_size`` is the final LQ size ``(H / scale, W / scale)``; stages that resize relative to it
(e.g. Real-ESRGAN's second-order resize) read it, the others ignore it.

:class:`DegradationPipeline` chains stages. Stage ``i`` records its parameters under the prefix
``"{i}_{stage.name}."`` (e.g. ``"0_blur.kernel"``, ``"1_resize.factor"``), nested stages
(:class:`Sequence`, :class:`Shuffle`) add their own prefixes, so
:meth:`DegradationPipeline.consistency` replays the blur and resize steps in the same order with
the same parameters. A :class:`Shuffle` draws its order per batch and records it, so even a
BSRGAN-style random order replays exactly.

Parameters a whole batch must share (the resize factor, which sets the intermediate size; a
shuffle order) are still stored per sample. If a batch was assembled from images degraded one by
one (e.g. in dataloader workers) they differ across the batch, and the pipeline then replays
sample by sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.degradations.base import Degradation, Params
from sr_cli.degradations.functional import (
    check_mode,
    check_probs,
    check_range,
    choice,
    randperm,
    resize,
    resize_per_sample,
    uniform,
)
from sr_cli.degradations.resample import check_divisible
from sr_cli.degradations.resize import quantize as quantize_8bit
from sr_cli.errors import ConfigError

Size = tuple[int, int]


def sub_params(params: Mapping[str, Tensor], prefix: str) -> Params:
    """The entries of ``params`` under ``prefix``, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def slice_params(params: Mapping[str, Tensor], index: int) -> Params:
    """The parameters of sample ``index`` (batch dimension kept, of size one)."""
    return {k: v[index : index + 1] for k, v in params.items()}


def _need(params: Mapping[str, Tensor], key: str, stage: Stage) -> Tensor:
    try:
        return params[key]
    except KeyError:
        raise KeyError(
            f"{type(stage).__name__} needs parameter {key!r}; pass the dict returned by "
            f"sample() for this very batch (got keys {sorted(params)})"
        ) from None


class Stage(nn.Module):
    """One operator of a :class:`DegradationPipeline`."""

    #: Prefix of its parameters in the pipeline's dict.
    name: str = "stage"
    #: True when the stage draws random parameters.
    stochastic: bool = True

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        return {}

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def replay(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        """The deterministic part; the identity for purely random stages (noise, JPEG, ...)."""
        return x

    def batch_uniform(self, params: Params) -> bool:
        """Whether parameters that must be shared by the whole batch are equal across it."""
        return True


def _as_stage(obj: Any) -> Stage:
    if isinstance(obj, Stage):
        return obj
    if isinstance(obj, Iterable) and not isinstance(obj, (str, Mapping)):
        return Sequence(list(obj))
    raise ConfigError(
        f"a degradation pipeline stage must be a Stage (Blur, Resize, Noise, JPEG, Quantize, "
        f"Sequence, Shuffle) or a list of them, got {type(obj).__name__}: {obj!r}"
    )


class Sequence(Stage):
    """Stages applied one after the other (a nested list in a config becomes a Sequence)."""

    name = "seq"

    def __init__(self, stages: Iterable[Any]) -> None:
        super().__init__()
        self.stages = nn.ModuleList([_as_stage(s) for s in stages])
        self.stochastic = any(s.stochastic for s in self.stages)

    def _prefix(self, i: int) -> str:
        return f"{i}_{self.stages[i].name}."

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        out: Params = {}
        for i, stage in enumerate(self.stages):
            for k, v in stage.sample(n, device, generator).items():
                out[self._prefix(i) + k] = v
        return out

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i, stage in enumerate(self.stages):
            x = stage(x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def replay(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i, stage in enumerate(self.stages):
            x = stage.replay(x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def batch_uniform(self, params: Params) -> bool:
        return all(
            s.batch_uniform(sub_params(params, self._prefix(i))) for i, s in enumerate(self.stages)
        )


class Shuffle(Sequence):
    """Stages applied in a random order, drawn once per batch and recorded as ``order``.

    ``order`` is ``(B, n_stages)``: row ``b`` lists the stage indices in the order applied (all
    rows equal within a batch). Nested lists group stages that move together, e.g.
    ``[[resize, sinc], jpeg]`` for Real-ESRGAN's final step.
    """

    name = "shuffle"

    def __init__(self, stages: Iterable[Any]) -> None:
        super().__init__(stages)
        self.stochastic = True

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        out = super().sample(n, device, generator)
        order = randperm(len(self.stages), generator)
        out["order"] = order.to(device).unsqueeze(0).repeat(n, 1)
        return out

    def _order(self, params: Params) -> list[int]:
        return _need(params, "order", self)[0].tolist()

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i in self._order(params):
            x = self.stages[i](x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def replay(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i in self._order(params):
            x = self.stages[i].replay(x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def batch_uniform(self, params: Params) -> bool:
        order = _need(params, "order", self)
        return bool((order == order[:1]).all()) and super().batch_uniform(params)


class Resize(Stage):
    """Resize by a random factor, Real-ESRGAN style, with a random interpolation mode per sample.

    The output size is ``round(base * factor)`` where ``base`` is the input size
    (``target="input"``) or the final LQ size (``target="lq"``). The factor is drawn once per batch
    (every image of a batch must keep the same size): with probabilities
    ``factor_probs = [up, down, keep]`` it is uniform in ``[1, factor_range[1]]``, uniform in
    ``[factor_range[0], 1]``, or 1. The defaults give a plain resize to the LQ size.

    Args:
        target: ``"input"`` or ``"lq"``.
        factor_range: ``[min, max]`` factor.
        factor_probs: probabilities of ``[up, down, keep]``.
        modes: interpolation modes to choose from (see
            :func:`~sr_cli.degradations.functional.resize`).
        mode_probs: their probabilities (uniform when omitted).
        antialias: antialiased bicubic/bilinear downscaling (MATLAB-like). Real-ESRGAN used
            ``F.interpolate`` without antialiasing.

    Params: ``factor`` ``(B,)`` float, ``mode`` ``(B,)`` long (index into ``modes``).
    """

    name = "resize"

    def __init__(
        self,
        target: str = "lq",
        factor_range: Iterable[float] = (1.0, 1.0),
        factor_probs: Iterable[float] = (0.0, 0.0, 1.0),
        modes: Iterable[str] = ("bicubic",),
        mode_probs: Iterable[float] | None = None,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        if target not in ("input", "lq"):
            raise ConfigError(f"Resize.target must be 'input' or 'lq', got {target!r}")
        self.target = target
        self.factor_range = check_range("Resize.factor_range", factor_range, low=1e-3)
        self.factor_probs = check_probs("Resize.factor_probs", factor_probs, 3)
        self.modes = tuple(check_mode(m) for m in ([modes] if isinstance(modes, str) else modes))
        if not self.modes:
            raise ConfigError("Resize.modes must list at least one mode")
        n_modes = len(self.modes)
        self.mode_probs = (
            tuple([1.0 / n_modes] * n_modes)
            if mode_probs is None
            else check_probs("Resize.mode_probs", mode_probs, n_modes)
        )
        self.antialias = bool(antialias)
        lo, hi = self.factor_range
        up, down, keep = self.factor_probs
        fixed = keep == 1.0 or (up == 0 and lo == 1.0) or (down == 0 and hi == 1.0)
        self.stochastic = not fixed or n_modes > 1

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Params:
        lo, hi = self.factor_range
        kind = int(choice(self.factor_probs, 1, generator, "cpu"))
        u = float(uniform(0.0, 1.0, 1, generator, "cpu"))
        if kind == 0:
            factor = 1.0 + u * (max(hi, 1.0) - 1.0)
        elif kind == 1:
            factor = min(lo, 1.0) + u * (1.0 - min(lo, 1.0))
        else:
            factor = 1.0
        mode = choice(self.mode_probs, n, generator, device)
        return {"factor": torch.full((n,), factor, device=device), "mode": mode}

    def out_size(self, x: Tensor, params: Params, lq_size: Size) -> Size:
        factor = float(_need(params, "factor", self)[0])
        base = lq_size if self.target == "lq" else tuple(x.shape[-2:])
        return max(1, round(base[0] * factor)), max(1, round(base[1] * factor))

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        size = self.out_size(x, params, lq_size)
        return resize_per_sample(x, size, _need(params, "mode", self), self.modes, self.antialias)

    replay = forward

    def batch_uniform(self, params: Params) -> bool:
        factor = _need(params, "factor", self)
        return bool((factor == factor[:1]).all())

    def extra_repr(self) -> str:
        return (
            f"target={self.target!r}, factor_range={self.factor_range}, "
            f"factor_probs={self.factor_probs}, modes={self.modes}, antialias={self.antialias}"
        )


class DegradationPipeline(Degradation):
    """A :class:`~sr_cli.degradations.base.Degradation` made of stages applied in order.

    Args:
        scale: integer factor between HR and LQ.
        stages: :class:`Stage` objects (nested lists become :class:`Sequence`).
        final_resize: interpolation mode that brings the result to ``HR / scale`` when the
            stages end at another size; ``None`` makes a size mismatch an error.
        antialias: antialiasing of that final resize.
        quantize: round the LQ to 8 bits at the end (not in :meth:`consistency`).

    The output is clamped to ``[0, 1]`` (with a straight-through gradient, as for the rounding). :meth:`consistency` replays the deterministic stages
    (blur, resize) with the recorded parameters and skips the random ones (noise, JPEG,
    quantization), without clamping or rounding, so it stays differentiable. For pipelines
    with noise or JPEG, ``consistency(HR, params)`` is therefore the noise-free, uncompressed LQ,
    which the LQ matches only up to that noise and compression.

    Example:
        >>> from sr_cli.degradations.blur import Blur
        >>> d = DegradationPipeline(2, [Blur(kernel_list=["iso"]), Resize()])
        >>> g = torch.Generator().manual_seed(0)
        >>> hr = torch.rand(2, 3, 16, 16)
        >>> p = d.sample(hr, g)
        >>> d(hr, p).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        scale: int,
        stages: Iterable[Any],
        final_resize: str | None = "bicubic",
        antialias: bool = True,
        quantize: bool = True,
    ) -> None:
        super().__init__(scale)
        self.body = Sequence(list(stages))
        self.final_resize = None if final_resize is None else check_mode(final_resize)
        self.antialias = bool(antialias)
        self.quantize = bool(quantize)
        self.stochastic = self.body.stochastic

    def sample(self, hr: Tensor, generator: torch.Generator | None = None) -> Params:
        return self.body.sample(hr.shape[0], hr.device, generator)

    def _finish_size(self, x: Tensor, lq_size: Size) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(lq_size):
            return x
        if self.final_resize is None:
            raise ConfigError(
                f"the degradation stages end at {tuple(x.shape[-2:])}, not at the LQ size "
                f"{tuple(lq_size)} (HR / scale {self.scale}); end with a Resize stage "
                "(target: lq) or set final_resize"
            )
        return resize(x, lq_size, self.final_resize, self.antialias)

    def _run(self, x: Tensor, params: Params, replay: bool) -> Tensor:
        lq_size = check_divisible(x, self.scale)
        fn = self.body.replay if replay else self.body
        if x.shape[0] > 1 and not self.body.batch_uniform(params):
            outs = [fn(x[i : i + 1], slice_params(params, i), lq_size) for i in range(x.shape[0])]
            return torch.cat([self._finish_size(o, lq_size) for o in outs])
        return self._finish_size(fn(x, params, lq_size), lq_size)

    def forward(self, hr: Tensor, params: Params | None = None) -> Tensor:
        if params is None:
            params = self.sample(hr)
        lq = self._run(hr, params, replay=False)
        if self.quantize:
            return quantize_8bit(lq)
        return lq + (lq.clamp(0, 1) - lq).detach()  # straight-through, like the 8-bit rounding

    def consistency(self, sr: Tensor, params: Params | None = None) -> Tensor:
        if params is None:
            if self.stochastic:
                raise ValueError(
                    f"{type(self).__name__}.consistency needs the params that sample() drew "
                    "for this batch (the batch's `degradation_params`)"
                )
            params = self.sample(sr)
        return self._run(sr, params, replay=True)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, final_resize={self.final_resize!r}, "
            f"antialias={self.antialias}, quantize={self.quantize}"
        )
