"""Degradation pipelines: stages applied in order, each drawing per-sample parameters, replayable.

Every degradation of the catalogue is a :class:`DegradationPipeline` of
:class:`~sr_cli.degradations.base.Stage` objects (the contract is in
:mod:`sr_cli.degradations.base`): :class:`ResizeDownsample` (``bicubic``, ``bilinear``, ...) is
the one-stage pipeline ``[Resize]``, ``blur`` is ``[Blur, Resize]``, Real-ESRGAN is a
second-order pipeline ending in a :class:`Shuffle`.

Stage ``i`` records its parameters under the prefix ``"{i}_{stage.name}."`` (e.g.
``"0_blur.kernel"``, ``"1_resize.factor"``), nested stages (:class:`Sequence`,
:class:`Shuffle`) add their own prefixes, so :meth:`DegradationPipeline.replay` reapplies the
replayable stages (blur, resize) in the same order with the same parameters, and
:meth:`DegradationPipeline.not_replayed` names the others (noise, JPEG, quantization) by the
same prefixes. A :class:`Shuffle` draws its order per batch and records it, so even a
BSRGAN-style random order replays exactly.

Parameters a whole batch must share (the resize factor, which sets the intermediate size; a
shuffle order) are still stored per sample. If a batch was assembled from images degraded one by
one (e.g. in dataloader workers) they differ across the batch, and the pipeline then replays
sample by sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.degradations.base import Degradation, Params, Stage
from sr_cli.degradations.functional import quantize as quantize_bits
from sr_cli.degradations.functional import randperm
from sr_cli.degradations.resize import Resize, check_mode, resize
from sr_cli.errors import ConfigError

Size = tuple[int, int]


def sub_params(params: Mapping[str, Tensor], prefix: str) -> Params:
    """The entries of ``params`` under ``prefix``, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def slice_params(params: Mapping[str, Tensor], index: int) -> Params:
    """The parameters of sample ``index`` (batch dimension kept, of size one)."""
    return {k: v[index : index + 1] for k, v in params.items()}


def check_divisible(hr: Tensor, scale: int) -> Size:
    """The LQ size ``(H / scale, W / scale)``; raises when HR is not a multiple of the scale."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(
            f"HR size {h}x{w} is not divisible by degradation scale {scale}; "
            "crop HR images to a multiple of the scale (the datasets do this for you)."
        )
    return h // scale, w // scale


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

    def not_replayed(self) -> list[str]:
        return [
            self._prefix(i) + path if path else self._prefix(i)[:-1]
            for i, stage in enumerate(self.stages)
            for path in stage.not_replayed()
        ]

    def batch_uniform(self, params: Params) -> bool:
        return all(
            s.batch_uniform(sub_params(params, self._prefix(i))) for i, s in enumerate(self.stages)
        )

    def reach(self, rate: float, scale: int, replayed: bool = False) -> tuple[float, float]:
        """The stages' reaches added up, each at the rate the stages before it leave (the same
        bound for a :class:`Shuffle`, whose order is drawn: the sum covers every order)."""
        total = 0.0
        for stage in self.stages:
            r, out = stage.reach(rate, scale, replayed)
            if replayed and not stage.replayable:
                r, out = 0.0, rate
            total, rate = total + r, min(rate, out)
        return total, rate


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
        return self.param(params, "order")[0].tolist()

    def forward(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i in self._order(params):
            x = self.stages[i](x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def replay(self, x: Tensor, params: Params, lq_size: Size) -> Tensor:
        for i in self._order(params):
            x = self.stages[i].replay(x, sub_params(params, self._prefix(i)), lq_size)
        return x

    def batch_uniform(self, params: Params) -> bool:
        order = self.param(params, "order")
        return bool((order == order[:1]).all()) and super().batch_uniform(params)


class DegradationPipeline(Degradation):
    """A :class:`~sr_cli.degradations.base.Degradation` made of stages applied in order.

    Args:
        scale: integer factor between HR and LQ.
        stages: :class:`~sr_cli.degradations.base.Stage` objects (nested lists become
            :class:`Sequence`).
        final_resize: interpolation mode that brings the result to ``HR / scale`` when the
            stages end at another size; ``None`` makes a size mismatch an error.
        antialias: antialiasing of that final resize.
        quantize: round the LQ to the source's bit depth at the end (8 bits unless ``forward``
            is told otherwise; not in :meth:`replay`).

    The output is clamped to ``[0, 1]`` (with a straight-through gradient, as for the rounding).
    :meth:`replay` reapplies the replayable stages (blur, resize) with the recorded parameters
    and skips the others (noise, JPEG, quantization; :meth:`not_replayed` names them), without
    clamping or rounding, so it stays differentiable. For pipelines with noise or JPEG,
    ``replay(HR, params)`` is therefore the noise-free, uncompressed LQ, which the LQ matches
    only up to that noise and compression.

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

    def forward(self, hr: Tensor, params: Params | None = None, bits: int | Tensor = 8) -> Tensor:
        """The LQ of ``hr``; with ``quantize``, rounded to ``bits`` (the source's bit depth: 8,
        or 16 for 16-bit images; a ``(B,)`` tensor gives each image its own)."""
        if params is None:
            params = self.sample(hr)
        lq = self._run(hr, params, replay=False)
        if self.quantize:
            return quantize_bits(lq, bits)
        return lq + (lq.clamp(0, 1) - lq).detach()  # straight-through, like the 8-bit rounding

    def replay(self, sr: Tensor, params: Params | None = None) -> Tensor:
        if params is None:
            if self.stochastic:
                raise ValueError(
                    f"{type(self).__name__}.replay needs the params that sample() drew "
                    "for this batch (the batch's `degradation_params`)"
                )
            params = self.sample(sr)
        return self._run(sr, params, replay=True)

    def not_replayed(self) -> list[str]:
        return self.body.not_replayed()

    def context_margin(self, replayed: bool = False) -> int:
        """LR pixels of context a patch needs (see
        :meth:`~sr_cli.degradations.base.Degradation.context_margin`): the stages' reach in HR
        pixels, plus the final resize's, over ``scale``, rounded up. MATLAB bicubic: 2 at any
        scale (a x4 LR pixel reads 16 HR pixels centred on its 4)."""
        reach, rate = self.body.reach(1.0, self.scale, replayed)
        if self.final_resize is not None and rate != 1.0 / self.scale:
            end = Resize(modes=[self.final_resize], antialias=self.antialias)
            reach += end.reach(rate, self.scale)[0]
        return math.ceil(reach / self.scale - 1e-9)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, final_resize={self.final_resize!r}, "
            f"antialias={self.antialias}, quantize={self.quantize}"
        )


class ResizeDownsample(DegradationPipeline):
    """Downsample by an integer ``scale`` with one interpolation mode: the pipeline ``[Resize]``.

    ``ResizeDownsample(scale)`` is MATLAB's antialiased bicubic ``imresize`` (the benchmark
    protocol, ``degradation=bicubic``). It is deterministic, so :meth:`replay` is the very same
    resize (without the 8-bit rounding and the clamp, to stay differentiable).

    Subclasses add one stage around the resize by overriding :meth:`stages` (``blur`` puts a
    :class:`~sr_cli.degradations.blur.Blur` before it, ``noise``/``jpeg``/``quantization`` a
    stage after it); the options that are not the resize's go to :meth:`stages`.

    Args:
        scale: integer downscaling factor.
        mode: ``bicubic`` (MATLAB ``imresize``), ``bilinear``, ``area`` or ``nearest``.
        antialias: widen the bicubic/bilinear kernel when downscaling (MATLAB's default).
        quantize: round the LQ to 8 bits, as LR images saved to PNG are.

    Example:
        >>> d = ResizeDownsample(4)
        >>> d(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        scale: int,
        mode: str = "bicubic",
        antialias: bool = True,
        quantize: bool = True,
        **options: Any,
    ) -> None:
        stages = self.stages(Resize(modes=[mode], antialias=antialias), **options)
        super().__init__(scale, stages, final_resize=None, quantize=quantize)

    def stages(self, resize: Resize, **options: Any) -> list[Stage]:
        """The stages around ``resize`` (here: the resize alone)."""
        if options:
            raise ConfigError(
                f"{type(self).__name__} got unknown option(s) {sorted(options)}; it takes "
                "scale, mode, antialias and quantize"
            )
        return [resize]
