"""Rebuild a trained generator from an sr-cli checkpoint, for evaluation and inference.

A checkpoint written by ``sr-train`` carries, under ``checkpoint["sr_cli"]``, the resolved
``model`` and ``degradation`` configs and the scale, so nothing else is needed to use it. The
EMA generator is preferred when the run kept one. A published weights file (``.pth``, ``.pt``,
``.safetensors``: BasicSR, Real-ESRGAN, OpenModelDB models) is accepted everywhere a checkpoint
is: its architecture and scale are detected by :mod:`sr_cli.models.published` (spandrel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_cli.errors import CheckpointError, one_line
from sr_cli.models.common import final_output
from sr_cli.models.pretrained import LoadedGenerator, extract_state_dict
from sr_cli.serialization import safe_torch_load


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file, or a run directory's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for cand in (
            p / "checkpoints" / "best.ckpt",
            p / "checkpoints" / "last.ckpt",
            p / "best.ckpt",
            p / "last.ckpt",
        ):
            if cand.is_file():
                return cand
        raise CheckpointError(
            f"run directory {str(p)!r} has no checkpoints/best.ckpt or checkpoints/last.ckpt. "
            "Pass a .ckpt file written by sr-train."
        )
    from sr_cli.serialization import file_problem

    problem = file_problem(p)
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(p)!r} {problem}. Check the path.")
    return p


def load_generator(
    path: str | Path, prefer_ema: bool = True, map_location: Any = "cpu"
) -> LoadedGenerator:
    """Build the generator described by an sr-train checkpoint and load its weights (safely).

    The stored model config is rebuilt through the allow-list of :mod:`sr_cli.rebuild`
    (never Hydra's ``instantiate``), and the stored degradation config is checked against it
    too, so a crafted checkpoint is refused before anything is built.

    Raises:
        CheckpointError: missing/unsafe file, a checkpoint without the sr-cli model config, or
            a stored config naming anything but sr-cli's own models and degradations.
    """
    from sr_cli.rebuild import check_stored_config, rebuild

    path = Path(path)
    if path.suffix == ".safetensors":  # published weights: architecture detected by spandrel
        from sr_cli.models.published import load_published

        return load_published(path, prefer_ema)
    ckpt = safe_torch_load(path, map_location=map_location)
    meta = ckpt.get("sr_cli") if isinstance(ckpt, dict) else None
    if not meta or "model" not in meta:
        from sr_cli.models.published import load_published

        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{str(path)!r} holds a {type(ckpt).__name__}, not weights.")
        return load_published(path, prefer_ema, raw=ckpt)
    model_cfg = meta["model"]
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("generator"), dict):
        raise CheckpointError(
            f"{str(path)!r} has no model.generator config inside; use a checkpoint written by sr-train."
        )
    if meta.get("degradation") is not None:
        check_stored_config(meta["degradation"], path, "degradation")
    if model_cfg.get("name") == "spandrel":  # model=spandrel: rebuilt from its own weights
        from sr_cli.models.published import generator_from_state_dict

        generator = generator_from_state_dict(extract_state_dict(ckpt, prefer_ema), repr(str(path)))
    else:
        generator = rebuild(model_cfg["generator"], path, "model")
    state = extract_state_dict(ckpt, prefer_ema)
    used_ema = prefer_ema and any(
        k.startswith("generator_ema.") for k in ckpt.get("state_dict", {})
    )
    try:
        missing, unexpected = generator.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: every one is listed, nothing is cut
        raise CheckpointError(
            f"{str(path)!r} does not fit its own model config: {one_line(exc)}"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{str(path)!r} does not fit its own model config: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
    generator.eval().requires_grad_(False)
    return LoadedGenerator(
        generator=generator,
        scale=int(meta.get("scale", getattr(generator, "scale", 1))),
        model_config=model_cfg,
        degradation_config=meta.get("degradation"),
        source=path,
        used_ema=used_ema,
        iteration=meta.get("iteration"),
        name=meta.get("name"),
    )


@torch.no_grad()
def super_resolve(generator: nn.Module, lq: torch.Tensor) -> torch.Tensor:
    """SR of a ``(B, 3, H, W)`` batch in ``[0, 1]``, clamped (pyramid models: the last level)."""
    return final_output(generator(lq)).clamp(0, 1)
