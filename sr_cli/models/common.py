"""Building blocks shared by the generators: upsamplers, presets and weight initialisation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from sr_cli.errors import ConfigError

UPSAMPLERS = ("pixelshuffle", "nearest+conv", "transposed")


def check_scale(model: str, scale: int, supported: tuple[int, ...]) -> int:
    """Validate ``scale`` for ``model``; the error lists the scales the architecture supports."""
    if int(scale) != scale or int(scale) not in supported:
        raise ConfigError(
            f"{model} does not support scale={scale!r}; supported scales: "
            f"{', '.join(map(str, supported))}. Set e.g. `scale={supported[-1]}`."
        )
    return int(scale)


def resolve_preset(
    model: str, presets: Mapping[str, Mapping[str, Any]], preset: str, overrides: Mapping[str, Any]
):
    """Merge a named preset with explicit keyword overrides (``None`` values mean 'from the preset')."""
    if preset not in presets:
        raise ConfigError(
            f"{model} has no preset {preset!r}; available presets: {', '.join(presets)}."
        )
    args = dict(presets[preset])
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


class Upsample(nn.Sequential):
    """Upsample features by an integer ``scale`` in steps of 2 (or one step of 3).

    Modes:
        ``pixelshuffle``: conv to ``r^2 * C`` channels + pixel shuffle (ESPCN, EDSR).
        ``nearest+conv``: nearest-neighbour resize + 3x3 conv (ESRGAN; avoids checkerboards).
        ``transposed``: stride-``r`` transposed conv (FSRCNN, DBPN-style).

    Layer ``i`` of the sequence is a conv-carrying step, so state-dict keys are
    ``<name>.0.weight``, ``<name>.2.weight`` ... as in EDSR/BasicSR checkpoints.
    """

    def __init__(self, scale: int, num_feat: int, mode: str = "pixelshuffle") -> None:
        if mode not in UPSAMPLERS:
            raise ConfigError(f"unknown upsampler {mode!r}; choose one of {', '.join(UPSAMPLERS)}.")
        if scale & (scale - 1) == 0:
            steps = [2] * int(math.log2(scale))
        elif scale == 3:
            steps = [3]
        else:
            raise ConfigError(f"upsampler supports scales 2^n and 3, got {scale}.")
        layers: list[nn.Module] = []
        for r in steps:
            if mode == "pixelshuffle":
                layers += [nn.Conv2d(num_feat, num_feat * r * r, 3, 1, 1), nn.PixelShuffle(r)]
            elif mode == "nearest+conv":
                layers += [
                    nn.Upsample(scale_factor=r, mode="nearest"),
                    nn.Conv2d(num_feat, num_feat, 3, 1, 1),
                ]
            else:
                layers += [
                    nn.ConvTranspose2d(
                        num_feat, num_feat, 2 * r, r, r // 2 + r % 2, output_padding=r % 2
                    )
                ]
                layers += [nn.Identity()]
        super().__init__(*layers)
        self.scale = scale
        self.mode = mode


def scaled_kaiming_init(module: nn.Module, scale: float = 1.0) -> None:
    """Kaiming-normal init of convs/linears, scaled down (ESRGAN uses 0.1 for residual blocks)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def as_levels(out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
    """A generator's output as a coarse-to-fine list; the last element is the SR image."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def final_output(out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The full-resolution output of a generator that may return a pyramid (last level is final)."""
    return out[-1] if isinstance(out, (list, tuple)) else out
