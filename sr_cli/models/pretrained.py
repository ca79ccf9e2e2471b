"""Load published or self-trained weights into a generator.

:func:`load_pretrained` reads ``.pth``/``.pt``/``.ckpt`` files with
``torch.load(..., weights_only=True)`` (never running pickled code) and ``.safetensors`` files,
finds the generator's state dict inside the common containers, renames the historical key
layouts to this project's, and loads it with an error message that says what went wrong.

Containers understood:

* BasicSR / Real-ESRGAN: ``{"params_ema": sd}`` or ``{"params": sd}`` (the EMA is preferred);
* Lightning checkpoints of :mod:`sr_cli.train.lit`: ``{"state_dict": {"generator.*", "generator_ema.*",
  "discriminator.*", ...}}`` (the EMA generator is preferred when present; ``module.`` and
  ``n_averaged`` from :class:`torch.optim.swa_utils.AveragedModel` are handled);
* ``{"state_dict": sd}``, ``{"model": sd}``, ``{"net": sd}``, ``{"generator": sd}`` and bare state dicts;
* ``module.`` prefixes left by ``DataParallel``/``DistributedDataParallel``.

Key layouts converted:

* the original ESRGAN release (``RRDB_ESRGAN_x4.pth``: ``model.0``, ``model.1.sub.{i}.RDB{j}.conv{k}.0``,
  ``model.1.sub.{N}``, ``model.3``, ``model.6``, ``model.8``, ``model.10``) to
  :class:`~sr_cli.models.rrdbnet.RRDBNet`;
* the original EDSR release (``head.0``, ``body.{i}.body.{0,2}``, ``body.{N}``, ``tail.0.{j}``,
  ``tail.1``; the ``sub_mean``/``add_mean`` constants are dropped) to
  :class:`~sr_cli.models.edsr.EDSR`. The original EDSR and BasicSR EDSR/RCAN weights work on
  ``[0, 255]`` images: build the model with ``img_range=255`` to reproduce their outputs;
* official SwinIR files: the derivable buffers ``relative_position_index`` and ``attn_mask``
  are dropped.

Input range. Published EDSR and RCAN weights (BasicSR's zoo, the original EDSR release) were
trained on ``[0, 255]`` images (``img_range=255``: ``x = (x - mean) * 255``, body,
``x = x / 255 + mean``). The networks are positively homogeneous in their input once their
biases are scaled (ReLU, convolutions, residual sums, pixel shuffle; RCAN's channel attention
keeps its gate by the inverse scaling of its first 1x1 convolution), so
:func:`rescale_img_range` converts such weights *exactly* to the ``img_range`` of the model they
are loaded into. :func:`load_pretrained` does this for every file that is not an sr-cli
checkpoint (those store their own ``img_range``), so ``model=edsr_baseline
model.pretrained=EDSR_Mx4_f64b16_DIV2K_official.pth`` gives the published outputs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sr_cli.errors import CheckpointError
from sr_cli.serialization import safe_torch_load

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


@dataclass
class LoadedGenerator:
    """A generator ready for inference, with what the checkpoint says about it."""

    generator: nn.Module
    scale: int
    model_config: dict[str, Any]
    degradation_config: dict[str, Any] | None
    source: Path
    used_ema: bool
    iteration: int | None
    #: The run name stored by sr-train (``checkpoint["sr_cli"]["name"]``), if any.
    name: str | None = None


def read_checkpoint(path: str | Path) -> dict:
    """The raw object stored in a weight file (a dict), read without executing pickled code."""
    from sr_cli.errors import one_line
    from sr_cli.serialization import file_problem

    path = Path(path).expanduser()
    problem = file_problem(path)
    if problem is not None:
        what = "checkpoint file not found" if problem == "does not exist" else "checkpoint file"
        raise CheckpointError(
            f"{what}: {path} {problem}. Check model.pretrained / the path you passed."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if path.stat().st_size == 0:
            raise CheckpointError(f"could not read safetensors file {path}: empty file (0 bytes)")
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(f"could not read safetensors file {path}: {one_line(e)}") from e
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, Tensor) for v in obj.values())
    )


def _strip(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def extract_state_dict(obj: Mapping, prefer_ema: bool = True) -> dict[str, Tensor]:
    """The generator's state dict inside a checkpoint container (see module docstring); the EMA
    weights (``params_ema``, ``generator_ema.*``) when present, unless ``prefer_ema`` is false."""
    for key in ("params_ema", "params") if prefer_ema else ("params", "params_ema"):
        if _is_state_dict(obj.get(key)):
            return dict(obj[key])
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        for prefix in ("generator_ema.", "generator.") if prefer_ema else ("generator.",):
            sd = _strip(inner, prefix)
            if sd:
                if any(k.startswith("module.") for k in sd):
                    sd = _strip(sd, "module.")
                sd.pop("n_averaged", None)
                return sd
        if _is_state_dict(inner):
            return dict(inner)
    for key in ("model", "net", "generator"):
        if _is_state_dict(obj.get(key)):
            return dict(obj[key])
    if _is_state_dict(obj):
        return dict(obj)
    keys = ", ".join(list(obj)[:8])
    raise CheckpointError(
        f"no generator state dict found in the checkpoint (top-level keys: {keys}). Expected a state dict, "
        "BasicSR's params/params_ema, or a Lightning checkpoint with generator.* weights."
    )


_ESRGAN_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_ESRGAN_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_ESRGAN_TOP = {
    "model.0": "conv_first",
    "model.3": "conv_up1",
    "model.6": "conv_up2",
    "model.8": "conv_hr",
    "model.10": "conv_last",
}


def convert_esrgan_original(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN (``model.*``) keys -> RRDBNet keys."""
    out = {}
    for k, v in sd.items():
        if m := _ESRGAN_RDB.match(k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := _ESRGAN_TRUNK.match(k):
            out[f"conv_body.{m[2]}"] = v
        else:
            base, _, param = k.rpartition(".")
            out[f"{_ESRGAN_TOP.get(base, base)}.{param}"] = v
    return out


_EDSR_BLOCK = re.compile(r"^body\.(\d+)\.body\.([02])\.(weight|bias)$")
_EDSR_TRUNK = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_EDSR_UP = re.compile(r"^tail\.0\.(\d+)\.(weight|bias)$")


def convert_edsr_original(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original EDSR (``head``/``body``/``tail``) keys -> EDSR keys; mean-shift constants dropped."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean.", "add_mean.")):
            continue
        if m := _EDSR_BLOCK.match(k):
            out[f"body.{m[1]}.conv{1 if m[2] == '0' else 2}.{m[3]}"] = v
        elif m := _EDSR_TRUNK.match(k):
            out[f"conv_after_body.{m[2]}"] = v
        elif m := _EDSR_UP.match(k):
            out[f"upsample.{m[1]}.{m[2]}"] = v
        elif k.startswith("head.0."):
            out["conv_first." + k[len("head.0.") :]] = v
        elif k.startswith("tail.1."):
            out["conv_last." + k[len("tail.1.") :]] = v
        else:
            out[k] = v
    return out


def convert_layout(sd: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename a known foreign key layout to ``model``'s and drop derivable buffers."""
    sd = dict(sd)
    if any(k.startswith("module.") for k in sd) and all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    if "model.0.weight" in sd and any(k.startswith("model.1.sub.") for k in sd):
        sd = convert_esrgan_original(sd)
    elif "head.0.weight" in sd and "tail.1.weight" in sd:
        sd = convert_edsr_original(sd)
    own = model.state_dict()
    return {k: v for k, v in sd.items() if k in own or not k.endswith(_DERIVED_BUFFERS)}


#: ``img_range`` of published EDSR/RCAN weights (BasicSR's zoo and the original EDSR code).
PUBLISHED_IMG_RANGE = 255.0
_RCAN_GATE_IN = re.compile(r"\.attention\.1\.(weight|bias)$")
_RCAN_GATE_OUT = re.compile(r"\.attention\.3\.(weight|bias)$")


def rescale_img_range(
    sd: Mapping[str, Tensor], src: float, dst: float, arch: str = "EDSR"
) -> dict[str, Tensor]:
    """Weights of an EDSR/RCAN trained with ``img_range=src``, converted exactly to ``dst``.

    With ``c = dst / src`` the network on ``c``-times larger inputs equals ``c`` times the
    network with biases scaled by ``c``; RCAN's channel-attention gate sees features ``c`` times
    larger, so its first 1x1 weight is divided by ``c`` (its bias and the second conv stay).
    """
    if arch not in ("EDSR", "RCAN"):
        raise ValueError(f"rescale_img_range supports EDSR and RCAN, not {arch}")
    c = float(dst) / float(src)
    if c == 1.0:
        return dict(sd)
    out = {}
    for k, v in sd.items():
        if arch == "RCAN" and (_RCAN_GATE_IN.search(k) or _RCAN_GATE_OUT.search(k)):
            out[k] = v / c if k.endswith(".attention.1.weight") else v
        elif k.endswith(".bias"):
            out[k] = v * c
        else:
            out[k] = v
    return out


def source_img_range(raw: Mapping) -> float:
    """``img_range`` the weights in a checkpoint container were trained with: an sr-cli
    checkpoint says so in its stored model config (default 1); anything else is a published
    file, whose EDSR/RCAN weights use :data:`PUBLISHED_IMG_RANGE`."""
    meta = raw.get("sr_cli")
    if isinstance(meta, Mapping) and isinstance(meta.get("model"), Mapping):
        gen = meta["model"].get("generator") or {}
        value = gen.get("img_range", 1.0) or 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(
                f"the stored model.generator.img_range {value!r} is not a number; the checkpoint "
                "is damaged or was not written by sr-train."
            )
        return float(value)
    return PUBLISHED_IMG_RANGE


def _img_range_arch(model: nn.Module) -> str | None:
    from sr_cli.models.edsr import EDSR
    from sr_cli.models.rcan import RCAN

    if isinstance(model, EDSR):
        return "EDSR"
    if isinstance(model, RCAN):
        return "RCAN"
    return None


_BLOCK_KEY = re.compile(r"^(body|layers|levels)\.(\d+)\.")
_UPSAMPLER_HINTS = ("upsample", "upconv", "conv_up", "tail", "conv_last", "up1", "down1")


def _block_count(keys) -> int | None:
    idx = {int(m[2]) for k in keys if (m := _BLOCK_KEY.match(k))}
    return max(idx) + 1 if idx else None


def diagnose(
    model: nn.Module, sd: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """``(missing, unexpected, shape mismatches, likely causes)`` of loading ``sd`` into ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    causes = []
    if own and not set(own) & set(sd):
        causes.append(
            "no key matches at all: the checkpoint is for a different architecture (check `model=`)"
        )
    bad = [s.split(":")[0] for s in shapes]
    if any(any(h in k for h in _UPSAMPLER_HINTS) for k in bad) or any(
        any(h in k for h in ("upconv2", "conv_up", "upsample.2", "levels."))
        for k in missing + unexpected
    ):
        causes.append(
            f"the upsampler differs: the checkpoint was probably trained for another scale than "
            f"scale={getattr(model, 'scale', '?')} (or with another `upsampler`)"
        )
    if "conv_first.weight" in bad:
        causes.append(
            "conv_first differs: different input channels, or a scale that folds the input "
            "(RRDBNet x1/x2 use pixel-unshuffle)"
        )
    n_model, n_ckpt = _block_count(own), _block_count(sd)
    if n_model is not None and n_ckpt is not None and n_model != n_ckpt:
        causes.append(
            f"the block count differs: the checkpoint has {n_ckpt} blocks, the model {n_model} "
            "(pick the matching `model.preset` or set num_block)"
        )
    if shapes and not causes:
        causes.append(
            "feature widths differ: pick the matching `model.preset` (e.g. paper vs small)"
        )
    if (missing or unexpected) and not causes:
        causes.append(
            "the layout differs: the checkpoint may come from another architecture or version"
        )
    return missing, unexpected, shapes, causes


def _summary(keys: list[str], n: int = 10) -> str:
    return (
        ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")
        if keys
        else "none"
    )


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load the generator weights in ``path`` into ``model`` (in place).

    Args:
        model: the generator to fill.
        path: ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file in any layout listed in the module
            docstring.
        strict: every key must match in name and shape (default). With ``strict=False`` the
            matching tensors are loaded and the rest is reported as a warning.

    Raises:
        CheckpointError: the file is missing, unreadable or unsafe, or (with ``strict``) does
            not fit the model; the message lists missing/unexpected keys and a likely cause.

    Example:
        >>> net = rrdbnet(scale=4)
        >>> load_pretrained(net, "RealESRGAN_x4plus.pth")  # doctest: +SKIP
    """
    raw = read_checkpoint(path)
    sd = convert_layout(extract_state_dict(raw), model)
    arch = _img_range_arch(model)
    if arch is not None:
        src, dst = source_img_range(raw), float(model.img_range)
        if src != dst:
            log.info("%s: converting %s weights from img_range=%g to %g", path, arch, src, dst)
            sd = rescale_img_range(sd, src, dst, arch)
    missing, unexpected, shapes, causes = diagnose(model, sd)
    if missing or unexpected or shapes:
        msg = (
            f"checkpoint {path} does not fit {type(model).__name__}: "
            f"missing keys: {_summary(missing)}; "
            f"unexpected keys: {_summary(unexpected)}; "
            f"shape mismatches: {_summary(shapes, 5)}; "
            f"likely cause: {'; '.join(causes)}"
        )
        if strict:
            raise CheckpointError(msg)
        log.warning(
            "%s; loading the %d matching tensors only (strict=False).",
            msg,
            len(sd) - len(unexpected),
        )
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=False)


def export_generator(checkpoint: str | Path, out: str | Path, prefer_ema: bool = True) -> Path:
    """Write the generator weights of ``checkpoint`` (any container above) to a ``.safetensors`` file.

    Used by ``make pretrain-demo`` to turn the warm-start run's ``last.ckpt`` into the small
    file that ships with the repo and that ``model.pretrained`` reads back.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"export_generator writes .safetensors files; got {str(out)!r}")
    sd = extract_state_dict(read_checkpoint(checkpoint), prefer_ema=prefer_ema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp))
    tmp.replace(out)
    return out
