"""What a weights file holds: one detector for every command that takes weights.

A weights file (``.pth``, ``.pt``, ``.safetensors``, or the state dict inside any container
:func:`~sr_cli.models.pretrained.extract_state_dict` knows) is recognised in this order:

1. **its sr-cli metadata** (:mod:`sr_cli.models.metadata`): the model description sr-cli
   writes into every weights file; rebuilt through the allow-list of :mod:`sr_cli.rebuild`,
   and only if every ``_target_`` in it is a generator (a ``torch.nn.Module`` class or one of
   sr-cli's generator factories): a description naming anything else is refused and nothing
   runs;
2. **its keys and shapes** (:mod:`sr_cli.models.shapes`), in sr-cli's layout or a published
   one (:mod:`sr_cli.models.layouts`): MSRResNet, EDSR, RCAN, ESRGAN (RRDBNet), SRCNN, VDSR,
   ESPCN, FSRCNN, LapSRN, D-DBPN and SwinIR, rebuilt as sr-cli's own modules;
3. **spandrel** (:mod:`sr_cli.models.published`), for the architectures sr-cli does not have.

Every description is first built on the ``meta`` device and its state dict compared with the
file's tensors, key by key and shape by shape, so a description that does not fit is refused
with the first differences, before any real allocation. A file nothing recognises gets one line
that says what was tried and why each failed.

:func:`load_weights` serves ``sr-upscale``, ``sr-eval``, ``sr-export``, ``sr-report`` and
``sr-rate``; :func:`load_into` serves ``model.pretrained=`` in ``sr-train`` and checks that
the file's architecture and hyper-parameters match the configured model.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.models.layouts import DERIVED_BUFFERS, strip_prefixes, to_sr_cli_layout
from sr_cli.models.metadata import metadata_of, parse_metadata
from sr_cli.models.pretrained import (
    LoadedGenerator,
    extract_state_dict,
    load_state,
    read_weights,
)
from sr_cli.models.published import describe_error, for_inference, spandrel_detect
from sr_cli.models.shapes import ARCHITECTURES, NotThis, candidates, scale_from_name
from sr_cli.rebuild import check_stored_config, rebuild

log = logging.getLogger(__name__)

#: sr-cli's generator factories, by dotted name: what a stored description may call besides
#: ``nn.Module`` classes.
GENERATOR_FACTORIES = frozenset(
    {a.factory for a in ARCHITECTURES}
    | {f"sr_cli.models.community.{n}" for n in ("span", "realplksr", "compact", "omnisr", "hat", "dat")}
)  # fmt: skip


class NotRecognised(CheckpointError):
    """No detector recognised the file (the message says what was tried)."""


@dataclass
class Detected:
    """What a weights file holds."""

    name: str  # architecture, as tables show it
    how: str  # "metadata", "shapes" or "spandrel"
    layout: str  # key layout of the file
    scale: int
    model_config: dict[str, Any]  # for sr-cli's models: a model config with a "generator"
    state_dict: dict[str, Tensor]  # in the layout of the module it builds
    assumed: tuple[str, ...] = ()
    network: nn.Module | None = None  # spandrel's module (built already)
    skeleton: nn.Module | None = field(default=None, repr=False)  # meta-device twin
    #: The scales the file allows (several where its shapes do not tell).
    scales: tuple[int, ...] = ()

    @property
    def img_range(self) -> float | None:
        """``img_range`` the tensors were trained with (EDSR/RCAN/SwinIR), if known."""
        gen = self.model_config.get("generator") or {}
        return float(gen.get("img_range", 1.0) or 1.0) if self.how != "spandrel" else None


# ------------------------------------------------------------------ the generator allow-list
def _is_generator(obj: Any, target: str) -> bool:
    if inspect.isclass(obj):
        return issubclass(obj, nn.Module)
    return target in GENERATOR_FACTORIES


def _plain(source: str | Path) -> str:
    """A file name shown as ``repr`` elsewhere, unquoted (rebuild quotes it itself)."""
    s = str(source)
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == "'" else s


def check_generator_config(node: Any, source: str | Path) -> None:
    """Refuse a stored generator description unless every ``_target_`` in it passes
    :mod:`sr_cli.rebuild`'s allow-list *and* builds a network (an ``nn.Module`` class or a
    generator factory): functions such as file readers or writers are never called."""
    found = check_stored_config(node, _plain(source), "model")
    for target, obj in found.items():
        if not _is_generator(obj, target):
            raise CheckpointError(
                f"{_plain(source)!r}: refusing to build its stored model config (_target_: {target} "
                "is not a generator class or factory); a stored description may only name "
                "sr-cli's networks and never runs other code."
            )


def _build(gen: dict[str, Any], source: str, meta: bool) -> nn.Module:
    check_generator_config(gen, source)
    if not meta:
        return rebuild(gen, _plain(source), "model")
    try:
        with torch.device("meta"):
            return rebuild(gen, _plain(source), "model")
    except (CheckpointError, RuntimeError) as exc:
        # spandrel's HAT/DAT call .item() while building (rebuild wraps that error): build on CPU
        why = exc.__cause__ if isinstance(exc, CheckpointError) else exc
        if not isinstance(why, RuntimeError) or "meta" not in str(why):
            raise
        return rebuild(gen, _plain(source), "model")


def misfit(own: dict[str, Tensor], sd: dict[str, Tensor], n: int = 3) -> str | None:
    """Why ``sd`` does not load into a module whose state dict is ``own`` (``None``: it does)."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} in the file vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for what, items in (("shape", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" and {len(items) - n} more" if len(items) > n else ""
            parts.append(f"{what}: {', '.join(items[:n])}{more}")
    return "; ".join(parts) or None


def _fit_keys(sd: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` without the derived buffers the module does not store."""
    return {k: v for k, v in sd.items() if k in own or not k.endswith(DERIVED_BUFFERS)}


# ------------------------------------------------------------------ the three detectors
def _arch_name(sd: dict[str, Tensor]) -> str | None:
    for arch in candidates(sd):
        try:
            arch.infer(sd)
            return arch.name
        except (NotThis, KeyError, IndexError, ValueError):
            continue
    return None


def from_metadata(
    sd: dict[str, Tensor], model_cfg: dict[str, Any], scale: int | None, source: str
) -> Detected:
    """The generator the file's sr-cli metadata describes, checked against its tensors."""
    gen = model_cfg["generator"]
    config = str(model_cfg.get("name", ""))
    if config == "spandrel":  # a model=spandrel run: spandrel's module, found from the tensors
        return _from_spandrel(sd, source)
    sd = strip_prefixes(sd)
    try:
        skeleton = _build(gen, source, meta=True)
    except CheckpointError:
        raise
    except Exception as exc:  # ConfigError, TypeError, ...: arguments the factory refuses
        raise CheckpointError(
            f"{source}: its sr-cli metadata describes a generator sr-cli cannot build "
            f"({describe_error(exc)}); re-export it with sr-export."
        ) from None
    own = skeleton.state_dict()
    sd = _fit_keys(sd, own)
    if why := misfit(own, sd):
        raise CheckpointError(
            f"{source}: its sr-cli metadata describes {config or gen.get('_target_')} "
            f"({_short(gen)}) but the tensors do not fit it: {why}."
        )
    built = int(getattr(skeleton, "scale", scale or 1))
    if scale is not None and scale != built:
        raise CheckpointError(
            f"{source}: its sr-cli metadata says x{scale} but describes an x{built} generator."
        )
    return Detected(
        name=_arch_name(sd) or config or type(skeleton).__name__,
        how="metadata",
        layout="sr-cli",
        scale=built,
        model_config=dict(model_cfg),
        state_dict=sd,
        skeleton=skeleton,
        scales=(built,),
    )


def _short(gen: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in gen.items() if k != "_target_")
    return f"{gen.get('_target_')}({args})"


def _pick_scale(scales, default, hint, name_scale) -> int | None:
    if len(scales) == 1:
        return scales[0]
    for s in (hint, name_scale, default):
        if s in scales:
            return s
    return None


def from_shapes(
    sd: dict[str, Tensor], source: str, scale_hint: int | None, file_name: str | None
) -> Detected | list[str]:
    """sr-cli's own architecture read from the keys and shapes, or the reasons none fits."""
    sd, layout = to_sr_cli_layout(sd)
    tried: list[str] = []
    for arch in candidates(sd):
        try:
            inf = arch.infer(sd)
        except NotThis as why:
            tried.append(f"{arch.name}: {why}")
            continue
        except (KeyError, IndexError, ValueError) as exc:
            tried.append(f"{arch.name}: {type(exc).__name__} {exc}")
            continue
        name_scale = scale_from_name(file_name) if file_name else None
        scale = _pick_scale(inf.scales, inf.default_scale, scale_hint, name_scale)
        gen = {
            "_target_": arch.factory,
            "scale": scale or inf.scales[0],
            "preset": arch.preset,
            **inf.args,
        }
        try:
            skeleton = _build(gen, source, meta=True)
        except Exception as exc:  # noqa: BLE001 - a factory refusing the read-back values
            tried.append(f"{arch.name}: {describe_error(exc)}")
            continue
        if why := misfit(skeleton.state_dict(), sd):
            tried.append(f"{arch.name} ({layout} layout): {why}")
            continue
        if scale is None:
            scales = " or x".join(map(str, inf.scales))
            raise CheckpointError(
                f"{source}: {arch.name} weights ({layout} layout) do not say their scale "
                f"(x{scales}), and neither does the file name or the command. Put the scale in "
                f"the file name (e.g. {arch.config}_x{inf.scales[-1]}.pth), or pass scale=."
            )
        config = {
            "name": arch.name,
            "config": arch.config,
            "preset": arch.preset,
            "generator": gen,
            "detected_by": "sr-cli",
            "layout": layout,
        }
        assumed = tuple(inf.assumed) + (() if len(inf.scales) == 1 else ("scale",))
        return Detected(
            arch.name, "shapes", layout, scale, config, sd, assumed, None, skeleton, inf.scales
        )
    return tried


def _from_spandrel(sd: dict[str, Tensor], source: str) -> Detected:
    net, scale, info = spandrel_detect(sd, source)
    info = {**info, "multiple_of": info.get("multiple_of", 1), "minimum": info.get("minimum", 0)}
    return Detected(
        info["name"], "spandrel", "spandrel", scale, info, dict(sd), network=net, scales=(scale,)
    )


def _names() -> str:
    return ", ".join(a.name for a in ARCHITECTURES)


def detect(
    sd: dict[str, Tensor],
    source: str,
    metadata: tuple[dict[str, Any], int | None] | None = None,
    scale_hint: int | None = None,
    file_name: str | None = None,
    spandrel: bool = True,
) -> Detected:
    """What the state dict ``sd`` (read from ``source``) holds: its metadata wins, then its
    keys and shapes, then spandrel.

    Args:
        metadata: ``(model config, scale)`` from :func:`~sr_cli.models.metadata.parse_metadata`.
        scale_hint: the scale the command works at, used where the shapes allow several.
        file_name: the file's stem, whose ``x3``/``4x`` is used likewise.
        spandrel: try spandrel last.

    Raises:
        NotRecognised: nothing recognised it (the message lists what was tried and why).
        CheckpointError: the metadata is refused or does not fit the tensors; a recognised
            architecture whose scale nothing tells.
    """
    if metadata is not None:
        return from_metadata(sd, metadata[0], metadata[1], source)
    found = from_shapes(sd, source, scale_hint, file_name)
    if isinstance(found, Detected):
        return found
    ours = "; ".join(found) if found else "no key layout matched"
    if spandrel:
        try:
            return _from_spandrel(sd, source)
        except CheckpointError as exc:
            theirs = str(exc).removeprefix(f"{source}: ")
    else:
        theirs = "not tried"
    keys = list(sd)
    raise NotRecognised(
        f"{source}: the architecture of these weights is not recognised. Tried: sr-cli "
        f"metadata (none in the file); sr-cli's architectures by key layout and shapes "
        f"({_names()}): {ours}; spandrel: {theirs}. Keys: {', '.join(keys[:6])}"
        f"{', ...' if len(keys) > 6 else ''} ({len(keys)} in all). For an architecture sr-cli "
        "builds, load it with model=<name> model.pretrained=PATH."
    )


def build(det: Detected, source: str) -> nn.Module:
    """The network ``det`` describes, with the file's weights."""
    if det.network is not None:
        return det.network
    net = _build(det.model_config["generator"], source, meta=False)
    net.load_state_dict(det.state_dict, strict=True)  # keys and shapes were checked on meta
    return net


# ------------------------------------------------------------------ the commands' entry points
def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _channels(det: Detected) -> tuple[int, int]:
    gen = det.model_config.get("generator") or {}
    return int(gen.get("num_in_ch", 3)), int(gen.get("num_out_ch", gen.get("num_in_ch", 3)))


def load_weights(
    path: str | Path,
    prefer_ema: bool = True,
    raw: dict | None = None,
    scale: int | None = None,
    safetensors: bool | None = None,
) -> LoadedGenerator:
    """A :class:`~sr_cli.models.pretrained.LoadedGenerator` for any weights file, ready for
    inference (``sr-upscale``, ``sr-eval``, ``sr-export``, ``sr-report``, ``sr-rate``).

    ``scale`` (the command's, if it has one) settles the scale of weights that do not state it;
    ``safetensors`` reads the file as safetensors (or not) whatever its suffix.
    """
    path = Path(path)
    file_meta = None
    if raw is None:
        raw, file_meta = read_weights(path, safetensors)
    source = repr(str(path))
    sd = extract_state_dict(raw, prefer_ema)
    meta_raw = metadata_of(raw, file_meta)
    det = detect(sd, source, parse_metadata(meta_raw, source), scale, path.stem)
    c_in, c_out = _channels(det)
    if (c_in, c_out) != (3, 3):
        raise CheckpointError(
            f"{source}: this {det.name} works on {c_in}-channel inputs and {c_out}-channel "
            "outputs; sr-cli's commands need RGB (3 -> 3)."
        )
    net = build(det, source)
    info = det.model_config
    generator = for_inference(net, det.scale, info).eval().requires_grad_(False)
    extra = meta_raw if isinstance(meta_raw, dict) else {}
    return LoadedGenerator(
        generator=generator,
        scale=det.scale,
        model_config={
            "architecture": det.name,
            **info,
            "detected_from": det.how,
            "published": det.how != "metadata",
        },
        degradation_config=None,
        source=path,
        used_ema=extra.get("ema") == "true" or (prefer_ema and "params_ema" in raw),
        iteration=_int_or_none(extra.get("iteration")),
        name=str(extra["name"]) if extra.get("name") else None,
    )


def _describe(net: nn.Module, sd: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """The hyper-parameters the shapes of ``net`` (or of ``sd``) tell, plus its padding."""
    sd = net.state_dict() if sd is None else sd
    out: dict[str, Any] = {}
    for arch in candidates(sd):
        try:
            inf = arch.infer(sd)
        except (NotThis, KeyError, IndexError, ValueError):
            continue
        out = {k: v for k, v in inf.args.items() if k not in inf.assumed}
        break
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        out["padding_mode"] = conv.padding_mode
    blocks = [m for m in net.modules() if isinstance(getattr(m, "res_scale", None), float)]
    if blocks:
        out["res_scale"] = blocks[0].res_scale
    return out


def _differences(det: Detected, model: nn.Module) -> list[str]:
    mine = _describe(model)
    if det.how == "metadata":
        theirs = _describe(det.skeleton)
    else:  # the shapes say nothing of the padding or of assumed values
        theirs = {k: v for k, v in _describe(det.skeleton).items() if k not in det.assumed}
        theirs.pop("padding_mode", None)
        theirs.pop("res_scale", None)
    theirs.pop("img_range", None)  # converted exactly on loading
    diffs = [
        f"{k}={theirs[k]!r} in the file, {mine[k]!r} in the model"
        for k in theirs
        if k in mine and theirs[k] != mine[k]
    ]
    model_scale = int(getattr(model, "scale", det.scale))
    scales = det.scales or (det.scale,)
    if model_scale not in scales:
        said = " or ".join(map(str, scales))
        diffs.insert(0, f"scale={said} in the file, {model_scale} in the model")
    return diffs


def load_into(model: nn.Module, path: str | Path, strict: bool = True) -> Detected | None:
    """``model.pretrained=PATH``: check what the file holds against ``model``, then load it.

    The file's architecture (from its metadata, or its keys and shapes) must be ``model``'s,
    with the same scale and hyper-parameters; otherwise a one-line error says what differs.
    Weights no detector recognises (a partial file, ...) and weights for spandrel's modules
    (``model=spandrel``, the community families) are loaded by key, with
    :func:`~sr_cli.models.pretrained.load_state`'s diagnosis. Returns what was detected.

    Raises:
        ConfigError: the file holds another architecture or other hyper-parameters.
        CheckpointError: the file is unreadable, unsafe, or does not fit ``model``.
    """
    path = Path(path)
    source = repr(str(path))
    raw, file_meta = read_weights(path)
    sd = extract_state_dict(raw)
    det = None
    if not type(model).__module__.startswith("spandrel."):  # spandrel's modules: by key
        try:
            det = detect(
                sd,
                source,
                parse_metadata(metadata_of(raw, file_meta), source),
                scale_hint=int(getattr(model, "scale", 0)) or None,
                file_name=path.stem,
                spandrel=False,
            )
        except NotRecognised:
            det = None
    if det is not None and det.skeleton is not None:
        wanted = type(det.skeleton).__name__
        if type(det.skeleton) is not type(model):
            msg = (
                f"model.pretrained={str(path)!r} holds {det.name} weights ({wanted}, read from "
                f"its {det.how}), but the configured model is {type(model).__name__}: pick "
                f"model={det.model_config.get('config') or det.model_config.get('name')}."
            )
            if strict:
                raise ConfigError(msg)
            log.warning("%s Loading the matching tensors only (strict=False).", msg)
        elif diffs := _differences(det, model):
            fix = (
                f"set scale={det.scale}"
                if diffs[0].startswith("scale=")
                else "pick the matching model.preset, or set these with "
                "++model.generator.<name>=<value>"
            )
            msg = (
                f"model.pretrained={str(path)!r} ({det.name}, read from its {det.how}) does not "
                f"match the configured model: {'; '.join(diffs)}. To use it, {fix}."
            )
            if strict:
                raise ConfigError(msg)
            log.warning("%s Loading the matching tensors only (strict=False).", msg)
    img_range = det.img_range if det is not None else None
    load_state(model, sd if det is None else det.state_dict, source, strict, img_range, raw)
    return det
