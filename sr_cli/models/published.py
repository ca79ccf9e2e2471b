"""Published SR checkpoints of the architectures sr-cli does not build, through spandrel.

The community publishes thousands of generator weights (BasicSR and Real-ESRGAN releases,
OpenModelDB) as bare ``.pth``/``.pt``/``.safetensors`` state dicts. `spandrel
<https://github.com/chaiNNer-org/spandrel>`_ (MIT) recognises their architectures (HAT, DAT,
SPAN, RealPLKSR, Compact, OmniSR, ...) and hyperparameters from the state dict alone.
:func:`spandrel_detect` is the last step of :mod:`sr_cli.models.detect`, after a file's sr-cli
metadata and sr-cli's own architectures: it only ever receives tensors read **without executing
anything** (``torch.load(weights_only=True)`` or safetensors; spandrel's own file reader, which
would run TorchScript for ``.pt``, is never used).

:func:`spandrel_generator` is the ``model=spandrel`` factory: the detected ``nn.Module`` itself
(with a ``scale`` attribute), so ``sr-train model=spandrel model.pretrained=PATH`` fine-tunes
any supported published model with any loss mix. :func:`published_state_dict` writes a
generator in the layout published checkpoints of its family use (``sr-export``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.errors import CheckpointError, ConfigError, one_line
from sr_cli.models.pretrained import PUBLISHED_IMG_RANGE, extract_state_dict, read_checkpoint

#: File types accepted as published weights.
PUBLISHED_SUFFIXES = (".pth", ".pt", ".safetensors")


class PadToMultiple(nn.Module):
    """Pad the input (reflect) to the size a network needs and crop its output back."""

    def __init__(self, net: nn.Module, scale: int, multiple_of: int = 1, minimum: int = 0) -> None:
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.multiple_of = max(1, int(multiple_of))
        self.minimum = int(minimum)

    def _target(self, n: int) -> int:
        n = max(n, self.minimum)
        return -(-n // self.multiple_of) * self.multiple_of

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = self._target(h) - h, self._target(w) - w
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.net(x)
        return out[..., : h * self.scale, : w * self.scale]


_LOAD_ERROR = re.compile(r"Error\(s\) in loading state_dict for (\w+)")
_SIZE = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch.Size\(\[([\d, ]*)\]\) "
    r"from checkpoint, the shape in current model is torch.Size\(\[([\d, ]*)\]\)"
)
_KEYS = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]+\"(?:, )?)+)")


def describe_error(exc: BaseException) -> str:
    """``exc``'s message on one line, whole (as :func:`sr_cli.errors.one_line`). A
    ``load_state_dict`` error (one line per key) is rewritten in words: every size mismatch
    (the file's shape vs the model's) and every missing/unexpected key, nothing cut."""
    text = one_line(exc)
    if m := _LOAD_ERROR.search(text):
        parts = []
        sizes = _SIZE.findall(text)
        if sizes:
            shown = [f"{k} ({a}) in the file vs ({b}) in the model" for k, a, b in sizes]
            parts.append("size mismatch for " + ", ".join(shown))
        for kind, keys in _KEYS.findall(text):
            names = re.findall(r'"([^"]+)"', keys)
            parts.append(f"{kind.lower()} keys {', '.join(names)}")
        if parts:
            return f"{m[1]} does not load these tensors: {'; '.join(parts)}"
    return text


def spandrel_detect(
    sd: Mapping[str, Tensor], source: str = "state dict"
) -> tuple[nn.Module, int, dict]:
    """``(network, scale, description)`` of a published state dict, by spandrel.

    Raises:
        CheckpointError: spandrel does not recognise the architecture (the message says "not
            recognised"), or cannot build it (the whole reason, on one line), or it is not a
            3-channel image-to-image model.
    """
    from spandrel import (
        ImageModelDescriptor,
        ModelLoader,
        UnsupportedModelError,
        canonicalize_state_dict,
    )

    sd = canonicalize_state_dict(dict(sd))
    try:
        desc = ModelLoader().load_from_state_dict(sd)
    except UnsupportedModelError:
        raise CheckpointError(f"{source}: not recognised by spandrel") from None
    except Exception as exc:  # a recognised family whose tensors do not fit
        raise CheckpointError(
            f"{source}: spandrel recognised the keys but could not build the model: "
            f"{describe_error(exc)}"
        ) from exc
    if not isinstance(desc, ImageModelDescriptor):
        raise CheckpointError(
            f"{source}: {desc.architecture.name} is an inpainting model, not super-resolution."
        )
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise CheckpointError(
            f"{source}: {desc.architecture.name} works on {desc.input_channels}-channel inputs "
            f"and {desc.output_channels}-channel outputs; sr-cli needs RGB (3 -> 3)."
        )
    net = desc.model
    net.scale = int(desc.scale)
    name = desc.architecture.name
    if name == "PLKSR" and "Real" in desc.tags:
        name = "RealPLKSR"
    info = {
        "name": name,
        "architecture": str(desc.architecture.id),
        "detected_by": "spandrel",
        "tags": list(desc.tags),
        "multiple_of": int(desc.size_requirements.multiple_of),
        "minimum": int(desc.size_requirements.minimum),
    }
    return net, int(desc.scale), info


def for_inference(net: nn.Module, scale: int, info: Mapping[str, Any]) -> nn.Module:
    """``net``, padded to the input sizes it needs (spandrel's size requirements)."""
    if info.get("multiple_of", 1) > 1 or info.get("minimum", 0) > 0:
        return PadToMultiple(net, scale, info.get("multiple_of", 1), info.get("minimum", 0))
    return net


def spandrel_generator(pretrained: str | None = None, scale: int | None = None) -> nn.Module:
    """``model=spandrel``: the network detected in the weights file ``pretrained``.

    Its weights are loaded too (``model.pretrained`` loads them again, identically). The
    ``scale`` of the run must match the detected one.
    """
    if not pretrained:
        raise ConfigError(
            "model=spandrel needs model.pretrained=PATH: the published weights (.pth/.pt/"
            ".safetensors) whose architecture spandrel detects."
        )
    raw = read_checkpoint(pretrained)
    net, detected, info = spandrel_detect(extract_state_dict(raw), repr(str(pretrained)))
    if scale is not None and int(scale) != detected:
        raise ConfigError(
            f"model.pretrained={pretrained!r} is a x{detected} {info['name']} model but "
            f"scale={scale}; set scale={detected}."
        )
    return net


def generator_from_state_dict(sd: Mapping[str, Tensor], source: str) -> nn.Module:
    """Rebuild a ``model=spandrel`` generator from the weights in an sr-train checkpoint."""
    net, _, _ = spandrel_detect(sd, source)
    return net


__all__ = [
    "PUBLISHED_SUFFIXES",
    "PadToMultiple",
    "describe_error",
    "for_inference",
    "generator_from_state_dict",
    "published_generator_overrides",
    "published_state_dict",
    "spandrel_detect",
    "spandrel_generator",
]


# ------------------------------------------------------------------ export for the community
#: Image size whose shifted-window masks are stored in SwinIR files (spandrel reads it back).
SWINIR_MASK_SIZE = 64


def _swinir_buffers(generator: nn.Module) -> dict[str, Tensor]:
    """The derivable buffers official SwinIR files carry (``relative_position_index`` per
    block, ``attn_mask`` for shifted blocks at 64x64), which spandrel uses for detection."""
    from sr_cli.models.swinir import relative_position_index, shifted_window_mask

    out = {}
    for name, module in generator.named_modules():
        if hasattr(module, "shift_size") and hasattr(module, "window_size"):
            w, s = int(module.window_size), int(module.shift_size)
            out[f"{name}.attn.relative_position_index"] = relative_position_index(w)
            if s > 0:
                size = -(-SWINIR_MASK_SIZE // w) * w
                out[f"{name}.attn_mask"] = shifted_window_mask(
                    size, size, w, s, torch.device("cpu")
                )
    return out


def published_state_dict(generator: nn.Module) -> tuple[dict[str, Tensor], str]:
    """The generator's weights in the layout published checkpoints of its family use, and a
    note saying which.

    * spandrel's own modules (``model=hat``, ``model=spandrel``, ...): their state dict;
    * RRDBNet, MSRResNet, SwinIR: BasicSR's layout (SwinIR with its derivable buffers);
    * EDSR and RCAN: BasicSR's layout with the weights converted exactly to ``img_range=255``,
      the input range of every published EDSR/RCAN.
    """
    from sr_cli.models.edsr import EDSR
    from sr_cli.models.pretrained import rescale_img_range
    from sr_cli.models.rcan import RCAN
    from sr_cli.models.swinir import SwinIR

    if isinstance(generator, PadToMultiple):
        generator = generator.net
    sd = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    spandrel_cls = next(
        (c for c in type(generator).__mro__ if c.__module__.startswith("spandrel.")), None
    )
    if spandrel_cls is not None:
        return sd, f"spandrel {spandrel_cls.__name__} layout"
    if isinstance(generator, (EDSR, RCAN)):
        arch = "EDSR" if isinstance(generator, EDSR) else "RCAN"
        src = float(generator.img_range)
        return (
            rescale_img_range(sd, src, PUBLISHED_IMG_RANGE, arch),
            f"BasicSR {arch} layout, img_range=255",
        )
    if isinstance(generator, SwinIR):
        return {**sd, **_swinir_buffers(generator)}, "official SwinIR layout"
    return sd, f"BasicSR {type(generator).__name__} layout"


def published_generator_overrides(generator: nn.Module) -> dict[str, Any]:
    """Generator arguments that :func:`published_state_dict` changes: EDSR/RCAN weights are
    written at ``img_range=255``, so a description of the written file says so."""
    from sr_cli.models.edsr import EDSR
    from sr_cli.models.rcan import RCAN

    if isinstance(generator, PadToMultiple):
        generator = generator.net
    return {"img_range": PUBLISHED_IMG_RANGE} if isinstance(generator, (EDSR, RCAN)) else {}
