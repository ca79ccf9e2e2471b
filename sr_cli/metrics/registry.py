"""The metric registry: one entry per metric, used by validation, ``sr-eval`` and ``sr-report``.

An entry (:class:`MetricSpec`) says everything the three need: the name (log key and CSV
column), the table label, the decimals shown, whether higher is better, the function giving
per-image values, the pretrained weight files it needs (looked up in the torch hub cache; nothing
is ever downloaded) and where it is used (``group``: ``default`` metrics of ``sr-eval`` or
``extra`` ones chosen with ``extra_metrics=``; ``validation``: logged during training).

Adding a metric is one entry::

    from sr_cli.metrics.registry import MetricSpec, register_metric

    register_metric(MetricSpec("mae_rgb", "MAE", 4, higher_is_better=False,
                               fn=lambda x: (x.sr8 - x.gt).abs().flatten(1).mean(1)))

after which ``sr-eval extra_metrics=[mae_rgb]`` computes, tabulates and writes it.

A metric function takes one :class:`MetricInputs` (the raw SR, its 8-bit-rounded copy, GT,
LQ, the scale and the protocol, and, for LR consistency, the replay of the degradation) and
returns a float64 ``(B,)`` tensor. It raises :class:`MetricNotApplicable` when it cannot apply
to this image (the cell becomes ``n/a`` and the reason goes to the notes).

This module is a leaf: it imports only the protocol module, torch, and (lazily) piq.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.metrics.protocol import (
    crop_border,
    prepare_y_one,
    psnr,
    psnr255,
    psnr_rgb,
    rgb_to_y,
    ssim,
    to_uint8_range,
)
from sr_cli.pixels import peak, to_levels

UNAVAILABLE = "unavailable"


class MetricNotApplicable(Exception):
    """This metric does not apply to this generator or image (the message says why)."""


@dataclass
class MetricInputs:
    """What a metric function may use, for a batch ``(B, 3, H, W)`` in ``[0, 1]``.

    Attributes:
        sr: the generator's output (clamped to ``[0, 1]``).
        gt: the ground truth.
        lq: the generator's input.
        scale: SR scale, also the border cropped by the protocol.
        protocol: ``paper`` or ``matlab``.
        replay: ``sr8 -> D(sr8)``, the deterministic part of the degradation with this
            image's parameters, or ``None`` with :attr:`replay_missing` saying why.
        module: what :attr:`MetricSpec.build` made (e.g. piq's LPIPS), else ``None``.
        gt_cache: a dict the caller may share between the inputs of several rows with the same
            GT (``sr-eval``'s model rows and bicubic row), so GT's Y is computed once per image.
        upscale: the row's ``LQ -> SR`` function (the generator, or bicubic for the baseline),
            for metrics that super-resolve other inputs (``translation_inconsistency``), or
            ``None`` when the caller has none.
        bits: the source's bit depth (8, or 16 for 16-bit images): SR is rounded to it.
    """

    sr: Tensor
    gt: Tensor
    lq: Tensor
    scale: int
    protocol: str = "paper"
    replay: Callable[[Tensor], Tensor] | None = None
    replay_missing: str = "the degradation cannot be replayed"
    module: nn.Module | None = None
    gt_cache: dict | None = None
    upscale: Callable[[Tensor], Tensor] | None = None
    bits: int = 8
    _y: dict = field(default_factory=dict, repr=False, compare=False)

    def y_pair(self) -> tuple[Tensor, Tensor]:
        """``(sr_y, gt_y)`` as the protocol prepares them (:func:`~sr_cli.metrics.protocol.prepare_y`),
        computed once and shared by every Y metric of these inputs (bit-identical values)."""
        if "sr" not in self._y:
            if self.sr.shape != self.gt.shape:
                raise ValueError(
                    f"SR {tuple(self.sr.shape)} and GT {tuple(self.gt.shape)} must have the same shape"
                )
            gts = self.gt_cache if self.gt_cache is not None else self._y
            key = ("gt_y", self.protocol, self.scale, self.bits)
            if key not in gts:
                gts[key] = prepare_y_one(self.gt, self.scale, self.protocol, self.bits)
            self._y["sr"] = prepare_y_one(self.sr, self.scale, self.protocol, self.bits)
            self._y["gt"] = gts[key]
        return self._y["sr"], self._y["gt"]

    @property
    def sr8(self) -> Tensor:
        """SR rounded to the source's bit depth (8 bits: as if saved to PNG; 16 for 16-bit
        images), back in ``[0, 1]``."""
        return to_levels(self.sr.float(), self.bits) / peak(self.bits)

    def cropped(self) -> tuple[Tensor, Tensor]:
        """``(sr8, gt)`` border cropped by the scale, clamped to ``[0, 1]`` (for piq)."""
        return (
            crop_border(self.sr8, self.scale).clamp(0, 1),
            crop_border(self.gt.float(), self.scale).clamp(0, 1),
        )


@dataclass(frozen=True)
class MetricSpec:
    """One metric. See the module docstring.

    Args:
        name: log key and CSV column (``val/<name>``).
        label: table header.
        decimals: digits shown in tables.
        higher_is_better: the arrow in the header (↑ or ↓).
        target: for a metric whose GT value is a target rather than an extreme (a power ratio
            whose GT value is 1, a level in dB whose GT value is 0): the target. The header then
            shows ``→target`` instead of an arrow, and studies tabulate ``|value - target|``.
        fn: ``MetricInputs -> (B,)`` per-image values.
        weight_files: file names it loads from ``<torch hub dir>/checkpoints``.
        build: makes the module passed as ``MetricInputs.module`` (once per evaluation),
            or ``None``.
        group: ``default`` (sr-eval's ``metrics=``) or ``extra`` (``extra_metrics=``).
        validation: logged during training validation.
    """

    name: str
    label: str
    decimals: int
    higher_is_better: bool
    fn: Callable[[MetricInputs], Tensor]
    weight_files: tuple[str, ...] = ()
    build: Callable[[], nn.Module] | None = None
    group: str = "extra"
    validation: bool = False
    target: float | None = None

    @property
    def header(self) -> str:
        if self.target is not None:
            return f"{self.label} →{self.target:g}"
        return f"{self.label} {'↑' if self.higher_is_better else '↓'}"

    def format(self, value: float | None) -> str:
        if value is None or value != value:  # None or NaN
            return "n/a"
        return f"{value:.{self.decimals}f}"

    def missing_weights(self) -> list[str]:
        """The weight files not found in the torch hub cache (full paths)."""
        return [str(p) for p in map(hub_checkpoint, self.weight_files) if not p.is_file()]

    def unavailable(self) -> str | None:
        """Why the metric cannot run here (weights not cached), or ``None`` when it can."""
        missing = self.missing_weights()
        if not missing:
            return None
        return (
            f"weights not in the torch hub cache (missing {', '.join(missing)}); nothing is "
            "downloaded. Copy the files there, or set TORCH_HOME to a cache that has them."
        )

    def __call__(self, inputs: MetricInputs) -> Tensor:
        return self.fn(inputs).detach().double().reshape(-1)


def hub_checkpoint(filename: str) -> Path:
    """Where ``torch.hub`` caches a downloaded file: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


# ---------------------------------------------------------------------------- functions
def _lr_consistency(x: MetricInputs) -> Tensor:
    if x.replay is None:
        raise MetricNotApplicable(x.replay_missing)
    return psnr(x.replay(x.sr8).clamp(0, 1), x.lq)


def _piq(name: str) -> Callable[[MetricInputs], Tensor]:
    def fn(x: MetricInputs) -> Tensor:
        import piq

        sr, gt = x.cropped()
        f = {
            "vif": piq.vif_p,
            "fsim": piq.fsim,
            "gmsd": piq.gmsd,
            "ms_ssim": piq.multi_scale_ssim,
        }[name]
        return f(sr, gt, data_range=1.0, reduction="none")

    return fn


def _brisque(x: MetricInputs) -> Tensor:
    import piq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return piq.brisque(x.cropped()[0], data_range=1.0, reduction="none")


def _piq_module(cls_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import piq

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation
            return getattr(piq, cls_name)(reduction="none").eval()

    return build


def _with_module(x: MetricInputs) -> Tensor:
    if x.module is None:
        raise MetricNotApplicable("its network was not built")
    return x.module(*x.cropped())


# ---------------------------------------------------------------------------- spectra
#: ``hf_ratio`` counts the luma power above the LQ Nyquist frequency, ``0.5 / scale`` cycles per
#: pixel (0.125 at x4, i.e. a quarter of the HR Nyquist frequency 0.5): the band the LQ cannot
#: carry, which the generator has to synthesise. The ratio SR/GT is 1 for natural detail, above
#: 1 for noise or invented texture, below 1 for blur. ``checkerboard`` is the power at the
#: ``1 / scale`` lattice (``(i / scale, j / scale)`` cycles/pixel, DC excluded), SR over GT: a
#: generator that tiles its output with period ``scale`` (pixel shuffle) puts power there.
#: ``translation_inconsistency``: shift between the two LQ crops, in LQ pixels.
TRANSLATION_SHIFT = 4


def luma_power(img: Tensor) -> Tensor:
    """``|FFT|^2`` of the mean-removed BT.601 luma (8-bit scale) of ``(B, 3, H, W)`` in ``[0, 1]``,
    unshifted (bin ``(i, j)`` is frequency ``(i / H, j / W)`` cycles/pixel, folded), float64."""
    y = rgb_to_y(img.double() * 255.0)[:, 0]
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.fft2(y).abs().pow(2)


def radial_frequency(h: int, w: int, device=None) -> Tensor:
    """``(H, W)`` radius of every FFT bin in cycles per pixel (0 to ``sqrt(2) / 2``)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=device)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=device)[None, :]
    return (fy**2 + fx**2).sqrt()


def high_frequency_energy(img: Tensor, scale: int) -> Tensor:
    """Luma power above the LQ Nyquist frequency ``0.5 / scale`` cycles/pixel: ``(B,)``."""
    power = luma_power(img)
    band = radial_frequency(*power.shape[-2:], device=power.device) > 0.5 / scale
    return (power * band).sum(dim=(-2, -1))


def lattice_mask(h: int, w: int, period: int, device=None) -> Tensor:
    """``(H, W)`` bool: the FFT bins at multiples of ``1 / period`` cycles/pixel on both axes
    (the nearest bin when ``H`` or ``W`` is not a multiple of the period), DC excluded."""
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    rows = sorted({round(i * h / period) % h for i in range(period)})
    cols = sorted({round(j * w / period) % w for j in range(period)})
    mask[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = True
    mask[0, 0] = False
    return mask


def lattice_energy(img: Tensor, period: int) -> Tensor:
    """Luma power at the ``1 / period`` lattice (what a period-``period`` tiling adds): ``(B,)``."""
    power = luma_power(img)
    return (power * lattice_mask(*power.shape[-2:], period, device=power.device)).sum(dim=(-2, -1))


def _ratio(num: Tensor, den: Tensor, what: str) -> Tensor:
    if bool((den <= 0).any()):
        raise MetricNotApplicable(f"GT has no {what} energy to compare with")
    return num / den


def _hf_ratio(x: MetricInputs) -> Tensor:
    sr, gt = x.cropped()
    return _ratio(high_frequency_energy(sr, x.scale), high_frequency_energy(gt, x.scale), "HF")


def _checkerboard(x: MetricInputs) -> Tensor:
    sr, gt = x.cropped()
    return _ratio(lattice_energy(sr, x.scale), lattice_energy(gt, x.scale), "lattice")


def _db(fn: Callable[[MetricInputs], Tensor]) -> Callable[[MetricInputs], Tensor]:
    """``10 log10`` of a power ratio: 0 dB is GT's power; averages over images stay meaningful
    where ratios of a near-empty band in GT would let one image dominate a mean."""

    def db(x: MetricInputs) -> Tensor:
        return 10.0 * torch.log10(fn(x).clamp_min(1e-12))

    return db


def _haarpsi(x: MetricInputs) -> Tensor:
    """HaarPSI (Reisenhofer et al., Signal Processing: Image Communication 2018) from piq, on
    the 8-bit SR and GT, border cropped: a full-reference perceptual similarity with no learned
    weights (1 = identical)."""
    import piq

    sr, gt = x.cropped()
    return piq.haarpsi(sr, gt, data_range=1.0, reduction="none")


def _l1_rgb(x: MetricInputs) -> Tensor:
    """Mean absolute error of the 8-bit SR against GT on RGB in ``[0, 1]``, border cropped: the
    L1 validation loss."""
    sr, gt = x.cropped()
    return (sr.double() - gt.double()).abs().flatten(1).mean(1)


def translation_inconsistency(
    upscale: Callable[[Tensor], Tensor], lq: Tensor, scale: int, shift: int = TRANSLATION_SHIFT
) -> Tensor:
    """Mean absolute difference (8-bit levels) between the SR of two LQ crops shifted by
    ``shift`` LQ pixels on both axes, on the HR region they share: ``(B,)``.

    Crop a is ``lq[:, :, :h-shift, :w-shift]``, crop b ``lq[:, :, shift:, shift:]``; in HR, b
    starts ``shift * scale`` pixels after a, so the shared region is ``SR_a[d:, d:]`` and
    ``SR_b[:-d, :-d]`` with ``d = shift * scale``. A shift-equivariant upscaler gives 0;
    dependence on the position in the crop (padding, borders, textures that move) does not."""
    h, w = lq.shape[-2:]
    if min(h, w) <= 2 * shift:
        raise MetricNotApplicable(f"the LQ ({h}x{w}) is too small for a {shift}-pixel shift")
    sr_a = upscale(lq[..., : h - shift, : w - shift])
    sr_b = upscale(lq[..., shift:, shift:])
    d = shift * scale
    a = to_uint8_range(sr_a.float())[..., d:, d:]
    b = to_uint8_range(sr_b.float())[..., : a.shape[-2], : a.shape[-1]]
    if a.shape != b.shape:
        raise MetricNotApplicable(f"the SR of the crops is not x{scale} of them")
    return (a.double() - b.double()).abs().flatten(1).mean(1)


def _ifc(x: MetricInputs) -> Tensor:
    """IFC (:mod:`sr_cli.metrics.ifc`) of SR against GT on the protocol's Y planes (rounded to
    the source's depth, BT.601 on the 8-bit scale, border cropped by the scale)."""
    from sr_cli.metrics.ifc import ifc_batch

    sr_y, gt_y = x.y_pair()
    values = ifc_batch(gt_y.cpu().numpy(), sr_y.cpu().numpy())
    return torch.from_numpy(values)


def _translation(x: MetricInputs) -> Tensor:
    if x.upscale is None:
        raise MetricNotApplicable("no generator was given to super-resolve shifted crops")
    with torch.no_grad():
        return translation_inconsistency(x.upscale, x.lq, x.scale)


#: torchvision's VGG16 (ImageNet) weights, the backbone of piq's LPIPS and DISTS.
VGG16_WEIGHTS = "vgg16-397923af.pth"

_REGISTRY: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec, replace: bool = False) -> MetricSpec:
    """Add a metric; an existing name is an error unless ``replace``."""
    if spec.group not in ("default", "extra"):
        raise ConfigError(f"metric {spec.name!r}: group must be 'default' or 'extra'")
    if spec.name in _REGISTRY and not replace:
        raise ConfigError(f"metric {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_metric(name: str) -> None:
    _REGISTRY.pop(name, None)


@contextmanager
def registered(spec: MetricSpec) -> Iterator[MetricSpec]:
    """Register a metric for the duration of a ``with`` block."""
    register_metric(spec)
    try:
        yield spec
    finally:
        unregister_metric(spec.name)


def _rmse_y(x: MetricInputs) -> Tensor:
    """RMSE of Y in 8-bit levels on the shared Y planes (PIRM 2018's distortion axis;
    ``psnr_y = 20 log10(255 / rmse_y)``)."""
    sr_y, gt_y = x.y_pair()
    return (sr_y - gt_y).pow(2).flatten(1).mean(1).sqrt()


def _niqe(x: MetricInputs) -> Tensor:
    """NIQE (:mod:`sr_cli.metrics.niqe`) of the 8-bit SR on MATLAB's rounded Y, border cropped."""
    from sr_cli.metrics.niqe import NIQEError, niqe_y

    try:
        return niqe_y(x.sr, x.scale)
    except NIQEError as exc:
        raise MetricNotApplicable(str(exc)) from exc


def _psnr_y(x: MetricInputs) -> Tensor:
    """:func:`~sr_cli.metrics.protocol.psnr_y` on the shared Y planes."""
    return psnr255(*x.y_pair())


def _ssim_y(x: MetricInputs) -> Tensor:
    """:func:`~sr_cli.metrics.protocol.ssim_y` on the shared Y planes."""
    return ssim(*x.y_pair(), data_range=255.0)


_VGG_LPIPS, _VGG_DISTS = (VGG16_WEIGHTS, "lpips_weights.pt"), (VGG16_WEIGHTS, "dists_weights.pt")
_EVAL, _VAL = {"group": "default"}, {"group": "default", "validation": True}

# One entry per metric: name, label, decimals, higher is better, function, [weight files,
# network builder], then group/validation.
for _spec in (
    MetricSpec("psnr_y", "PSNR_Y", 2, True, _psnr_y, **_VAL),
    MetricSpec("ssim_y", "SSIM_Y", 4, True, _ssim_y, **_VAL),
    MetricSpec(
        "psnr_rgb", "PSNR_RGB", 2, True, lambda x: psnr_rgb(x.sr, x.gt, x.scale, x.bits), **_VAL
    ),
    MetricSpec("lpips", "LPIPS", 4, False, _with_module, _VGG_LPIPS, _piq_module("LPIPS"), **_EVAL),
    MetricSpec("dists", "DISTS", 4, False, _with_module, _VGG_DISTS, _piq_module("DISTS"), **_EVAL),
    MetricSpec("lr_consistency_psnr", "LR-cons. PSNR", 2, True, _lr_consistency, **_VAL),
    MetricSpec("vif", "VIF", 4, True, _piq("vif")),
    MetricSpec("fsim", "FSIM", 4, True, _piq("fsim")),
    MetricSpec("gmsd", "GMSD", 4, False, _piq("gmsd")),
    MetricSpec("ms_ssim", "MS-SSIM", 4, True, _piq("ms_ssim")),
    # piq.brisque loads its SVM from the v0.4.0 release asset (piq.brisque._score_svr).
    MetricSpec("brisque", "BRISQUE", 2, False, _brisque, ("brisque_svm_weights.pt",)),
    # Spectral and consistency metrics of the studies (sr-study); 1 = like GT for the ratios.
    MetricSpec("hf_ratio", "HF ratio (GT=1)", 3, True, _hf_ratio, target=1.0),
    MetricSpec("checkerboard", "Checkerboard (GT=1)", 3, False, _checkerboard, target=1.0),
    MetricSpec("hf_db", "HF power vs GT (dB)", 2, True, _db(_hf_ratio), target=0.0),
    MetricSpec("lattice_db", "Lattice power vs GT (dB)", 2, False, _db(_checkerboard), target=0.0),
    MetricSpec("haarpsi", "HaarPSI", 4, True, _haarpsi),
    MetricSpec("l1_rgb", "L1 (RGB)", 4, False, _l1_rgb),
    # Information fidelity criterion (Sheikh, Bovik, de Veciana 2005), bits per pixel.
    MetricSpec("ifc", "IFC", 3, True, _ifc),
    MetricSpec("translation_inconsistency", "Transl. incons.", 3, False, _translation),
    # The perception-distortion plane (PIRM 2018): no-reference NIQE and RMSE on Y.
    MetricSpec("niqe", "NIQE", 4, False, _niqe),
    MetricSpec("rmse_y", "RMSE_Y", 3, False, _rmse_y),
):
    register_metric(_spec)


# ---------------------------------------------------------------------------- look-ups
def get_metric(name: str) -> MetricSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown metric {name!r}; choose from {list(_REGISTRY)}")
    return _REGISTRY[name]


def metric_names(group: str | None = None, validation: bool | None = None) -> tuple[str, ...]:
    """Registered names, in registration order, optionally of one group / the validation ones."""
    return tuple(
        s.name
        for s in _REGISTRY.values()
        if (group is None or s.group == group)
        and (validation is None or s.validation == validation)
    )


def header(name: str) -> str:
    """Table header of a metric: label and arrow (``PSNR_Y ↑``)."""
    return get_metric(name).header


def format_value(name: str, value: float | None) -> str:
    return get_metric(name).format(value)


@dataclass
class MetricSelection:
    """The metrics an evaluation computes, and those it cannot (with the reason)."""

    metrics: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> list[str]:
        return [m for m in self.metrics if m not in self.unavailable]


def select_metrics(metrics: list[str] | tuple[str, ...], extra: list[str] | tuple[str, ...] = ()):
    """Check ``metrics=`` (default group) and ``extra_metrics=`` names; mark missing weights."""
    for name in metrics:
        if name not in metric_names("default"):
            raise ConfigError(
                f"unknown metric {name!r} in metrics; choose from {list(metric_names('default'))}"
            )
    for name in extra:
        if name not in _REGISTRY:
            raise ConfigError(
                f"unknown metric {name!r} in extra_metrics; choose from "
                f"{list(metric_names('extra'))}"
            )
    names = list(dict.fromkeys([*metrics, *extra]))
    if not names:
        raise ConfigError("no metric selected: set e.g. metrics=[psnr_y,ssim_y]")
    unavailable = {n: why for n in names if (why := get_metric(n).unavailable())}
    return MetricSelection(names, unavailable)


def required_weight_files(name: str) -> list[str]:
    """File names a metric loads from the torch hub cache (its entry's ``weight_files``)."""
    return list(get_metric(name).weight_files)


def weights_unavailable(name: str) -> str | None:
    """Why a metric cannot run (its weights are not cached), or ``None`` when it can."""
    return get_metric(name).unavailable()


def compute_metrics(
    names: list[str] | tuple[str, ...],
    inputs: MetricInputs,
    modules: dict[str, nn.Module] | None = None,
    on_skip: Callable[[str, Exception], None] | None = None,
    skip: tuple[type[Exception], ...] = (),
) -> Tensor:
    """Per-image values of several metrics: ``(B, len(names))`` float64 on GT's device.

    A metric that raises :class:`MetricNotApplicable` (or one of ``skip``) gives NaN for the
    batch, and ``on_skip(name, exc)`` is told why."""
    out = []
    for name in names:
        inputs.module = (modules or {}).get(name)
        try:
            value = get_metric(name)(inputs)
        except (MetricNotApplicable, *skip) as exc:
            if on_skip is not None:
                on_skip(name, exc)
            value = torch.full((inputs.gt.shape[0],), float("nan"), dtype=torch.float64)
        out.append(value.to(inputs.gt.device))
    return torch.stack(out, dim=1)
