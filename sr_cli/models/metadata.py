"""What a weights file says about itself: the generator description sr-cli writes into it.

Every weights file sr-cli writes carries the model description that checkpoints store (the
resolved ``model`` config: the sr-cli factory as ``_target_``, its arguments, the config name
and preset) as JSON, plus the scale:

* ``.safetensors`` (generator snapshots beside checkpoints, ``sr-export --format safetensors``,
  ``make pretrain-demo``): in the file's string metadata, :func:`generator_metadata`;
* ``.pth`` (``sr-export --format pth``): BasicSR's container ``{"params": state_dict,
  "sr_cli_generator": metadata}``, which BasicSR, spandrel and chaiNNer read as usual.

Reading it back (:func:`parse_metadata`) yields plain data. It is never handed to Hydra: the
generator is rebuilt through the allow-list of :mod:`sr_cli.rebuild` by
:mod:`sr_cli.models.detect`, which also refuses any ``_target_`` that is not a generator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sr_cli.errors import CheckpointError

#: ``format`` value of the metadata sr-cli writes.
FORMAT = "sr-cli generator"
#: Key of the metadata in a ``.pth`` export (beside ``params``).
PTH_KEY = "sr_cli_generator"
#: Largest JSON description read back (a model config is a few hundred bytes).
MAX_MODEL_JSON = 1 << 16


def generator_metadata(model_cfg: Mapping[str, Any], scale: int, **extra: Any) -> dict[str, str]:
    """The string metadata describing a generator: ``format``, ``scale``, ``model`` (JSON) and
    any ``extra`` fields (``iteration``, ``ema``, ``name``, ...), all as strings."""
    out = {
        "format": FORMAT,
        "scale": str(int(scale)),
        "model": json.dumps(model_cfg, sort_keys=True, default=str),
    }
    out.update({k: str(v) for k, v in extra.items()})
    return out


def parse_metadata(meta: Any, source: str) -> tuple[dict[str, Any], int | None] | None:
    """``(model config, scale)`` from a file's sr-cli metadata; ``None`` when there is none.

    Metadata of other tools (safetensors' ``{"format": "pt"}``, ...) is ignored.

    Raises:
        CheckpointError: the metadata claims to be sr-cli's but is malformed.
    """
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT or "model" not in meta:
        return None
    text, scale = meta.get("model"), meta.get("scale")
    if not isinstance(text, str) or len(text) > MAX_MODEL_JSON:
        raise CheckpointError(
            f"{source}: its sr-cli metadata has no readable 'model' description (a JSON string "
            f"of at most {MAX_MODEL_JSON} characters); re-export it with sr-export."
        )
    try:
        model = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(
            f"{source}: its sr-cli metadata 'model' is not valid JSON ({exc}); re-export it "
            "with sr-export."
        ) from None
    if not isinstance(model, dict) or not isinstance(model.get("generator"), dict):
        raise CheckpointError(
            f"{source}: its sr-cli metadata 'model' has no 'generator' description; re-export "
            "it with sr-export."
        )
    if scale is not None:
        try:
            scale = int(str(scale))
        except ValueError:
            raise CheckpointError(
                f"{source}: its sr-cli metadata 'scale' is {scale!r}, not an integer."
            ) from None
    return model, scale


def metadata_of(raw: Mapping[str, Any], file_meta: Mapping[str, str] | None) -> Any:
    """The sr-cli metadata of a file: a safetensors header's, or a ``.pth`` export's
    :data:`PTH_KEY` entry, or an sr-train checkpoint's stored ``sr_cli`` block (as metadata)."""
    if file_meta:
        return file_meta
    if isinstance(raw.get(PTH_KEY), Mapping):
        return raw[PTH_KEY]
    ckpt = raw.get("sr_cli")
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        out = {"format": FORMAT, "model": json.dumps(dict(ckpt["model"]), default=str)}
        if ckpt.get("scale") is not None:
            out["scale"] = str(ckpt["scale"])
        return out
    return None
