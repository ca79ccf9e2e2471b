"""Use any published SR checkpoint: architecture and scale detected by spandrel.

The community publishes thousands of generator weights (BasicSR and Real-ESRGAN releases,
OpenModelDB) as bare ``.pth``/``.pt``/``.safetensors`` state dicts. `spandrel
<https://github.com/chaiNNer-org/spandrel>`_ (MIT) recognises their architectures (ESRGAN,
SwinIR, HAT, DAT, SPAN, RealPLKSR, Compact, OmniSR, RCAN, ...) and hyperparameters from the
state dict alone. :func:`load_published` reads a file **without executing anything in it**
(``torch.load(weights_only=True)`` or safetensors, through
:func:`sr_cli.models.pretrained.read_checkpoint`; spandrel's own file reader, which would run
TorchScript for ``.pt``, is never used), hands the state dict to spandrel, and returns the
detected network ready for ``sr-eval``, ``sr-upscale``, ``sr-report`` and ``sr-export``.

EDSR, which spandrel does not know, is recognised here in its BasicSR and original layouts and
built as :class:`sr_cli.models.edsr.EDSR` with the published ``img_range=255``.

:func:`spandrel_generator` is the ``model=spandrel`` factory: the detected ``nn.Module`` itself
(with a ``scale`` attribute), so ``sr-train model=spandrel model.pretrained=PATH`` fine-tunes
any supported published model with any loss mix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sr_cli.errors import CheckpointError, ConfigError, one_line
from sr_cli.models.pretrained import (
    PUBLISHED_IMG_RANGE,
    convert_edsr_original,
    extract_state_dict,
    read_checkpoint,
)

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


def _edsr_from_state_dict(sd: Mapping[str, Tensor]) -> nn.Module | None:
    """EDSR in BasicSR's or the original release's layout (``img_range=255``), else ``None``."""
    from sr_cli.models.edsr import EDSR

    if "head.0.weight" in sd and "tail.1.weight" in sd:
        sd = convert_edsr_original(sd)
    needed = (
        "conv_first.weight",
        "conv_after_body.weight",
        "upsample.0.weight",
        "conv_last.weight",
    )
    if not all(k in sd for k in needed) or "body.0.conv1.weight" not in sd:
        return None
    num_feat = int(sd["conv_first.weight"].shape[0])
    blocks = {int(m[1]) for k in sd if (m := re.match(r"^body\.(\d+)\.conv1\.weight$", k))}
    ups = sorted(int(m[1]) for k in sd if (m := re.match(r"^upsample\.(\d+)\.weight$", k)))
    ratio = int(sd["upsample.0.weight"].shape[0]) // num_feat
    scale = 3 if ratio == 9 else 2 ** len(ups)
    # The published EDSR (32 blocks x 256 features) uses residual scaling 0.1; the baseline 1.
    res_scale = 0.1 if num_feat >= 256 else 1.0
    net = EDSR(
        scale=scale,
        num_in_ch=int(sd["conv_first.weight"].shape[1]),
        num_out_ch=int(sd["conv_last.weight"].shape[0]),
        num_feat=num_feat,
        num_block=len(blocks),
        res_scale=res_scale,
        img_range=PUBLISHED_IMG_RANGE,
    )
    missing, unexpected = net.load_state_dict(dict(sd), strict=False)
    if missing or unexpected:
        return None
    return net


def detect(sd: Mapping[str, Tensor], source: str = "state dict") -> tuple[nn.Module, int, dict]:
    """``(network, scale, description)`` for a published state dict.

    Raises:
        CheckpointError: spandrel does not recognise the architecture, or it is not a 3-channel
            image-to-image model.
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
        net = _edsr_from_state_dict(sd)
        if net is None:
            keys = ", ".join(list(sd)[:6])
            raise CheckpointError(
                f"{source}: the architecture of these weights is not recognised (keys: {keys}, "
                "...). sr-cli detects published models with spandrel (ESRGAN, SwinIR, HAT, DAT, "
                "SPAN, RealPLKSR, Compact, OmniSR, RCAN, ...) and EDSR; for another "
                "architecture pick its config with model=<name> model.pretrained=PATH."
            ) from None
        info = {"name": "EDSR", "architecture": "EDSR", "detected_by": "sr-cli", "tags": []}
        return net, net.scale, info
    except Exception as exc:  # a recognised family whose tensors do not fit
        raise CheckpointError(
            f"{source}: spandrel recognised the keys but could not build the model: {one_line(exc)}"
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


def load_published(path: str | Path, prefer_ema: bool = True, raw: Mapping | None = None):
    """A :class:`~sr_cli.models.pretrained.LoadedGenerator` for a published weights file.

    ``model_config`` names the detected architecture (``name``, spandrel's ``architecture``
    id and tags); the file carries no degradation, so ``degradation_config`` is ``None``.
    """
    from sr_cli.models.pretrained import LoadedGenerator

    path = Path(path)
    if raw is None:
        raw = read_checkpoint(path)
    sd = extract_state_dict(raw, prefer_ema)
    net, scale, info = detect(sd, repr(str(path)))
    generator = for_inference(net, scale, info).eval().requires_grad_(False)
    return LoadedGenerator(
        generator=generator,
        scale=scale,
        model_config={**info, "published": True},
        degradation_config=None,
        source=path,
        used_ema=prefer_ema and "params_ema" in raw,
        iteration=None,
    )


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
    net, detected, info = detect(extract_state_dict(raw), repr(str(pretrained)))
    if scale is not None and int(scale) != detected:
        raise ConfigError(
            f"model.pretrained={pretrained!r} is a x{detected} {info['name']} model but "
            f"scale={scale}; set scale={detected}."
        )
    return net


def generator_from_state_dict(sd: Mapping[str, Tensor], source: str) -> nn.Module:
    """Rebuild a ``model=spandrel`` generator from the weights in an sr-train checkpoint."""
    net, _, _ = detect(sd, source)
    return net


__all__ = [
    "PUBLISHED_SUFFIXES",
    "PadToMultiple",
    "detect",
    "for_inference",
    "generator_from_state_dict",
    "load_published",
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
