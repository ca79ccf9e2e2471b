"""Every generator config through sr-export's ONNX path (small presets, x4): either a graph with
dynamic batch/height/width that ONNX Runtime runs like PyTorch at every check shape, or a
one-line refusal for the families torch.export cannot trace with dynamic sizes.

Slow (about 15 s per family on 2 cores): ``make test-slow``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sr_cli.evaluate.export import (
    CHECK_SHAPES,
    DynamicShapeError,
    compare_with_onnxruntime,
    export_onnx,
)
from tests.models.test_generators import CONFIGS, SCALES, build

#: Families whose code fixes the input size for torch.export, and why (README, sr-export).
NOT_EXPORTABLE = {
    # the MATLAB bicubic pre-upsampling builds its matrices in NumPy for each size
    "srcnn": "SymInt",
    "vdsr": "SymInt",
    # pads to a multiple of the window only when needed; the mask is cached per size
    "swinir": "SymInt",
    "swinir_light": "SymInt",
    # spandrel's window-attention models branch on the padding the size needs
    "dat": "Constraints violated",
    "hat": "Constraints violated",
    "omnisr": "Constraints violated",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
        reason="onnx, onnxscript and onnxruntime are needed ('[onnx]')",
    ),
]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_family_exports_faithfully_or_says_why(name, tmp_path):
    scale = 4 if 4 in SCALES[name] else max(SCALES[name])
    torch.manual_seed(0)
    generator = build(name, scale).eval()
    if name in NOT_EXPORTABLE:
        with pytest.raises(DynamicShapeError, match=NOT_EXPORTABLE[name]) as info:
            export_onnx(generator, tmp_path / "m.onnx")
        assert "\n" not in str(info.value) and "--format pth/safetensors" in str(info.value)
        assert list(tmp_path.iterdir()) == []
        return
    path = export_onnx(generator, tmp_path / "m.onnx")
    diffs = compare_with_onnxruntime(generator, path, CHECK_SHAPES)
    assert max(diffs.values()) < 1e-4, diffs
