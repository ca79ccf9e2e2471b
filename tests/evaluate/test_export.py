"""sr-export: ONNX through torch.export and the dynamo-based exporter, with dynamic batch,
height and width, checked against PyTorch by ONNX Runtime at several shapes."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.commands.export import main
from sr_cli.errors import ConfigError
from sr_cli.evaluate.export import (
    CHECK_SHAPES,
    DynamicShapeError,
    ExportWrapper,
    export,
    export_onnx,
)
from sr_cli.evaluate.inference import load_generator, super_resolve

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx/onnxscript not installed ('[onnx]')")


def test_wrapper_is_the_inference_function(trained_run):
    """What gets exported computes exactly what sr-upscale computes, at any size."""
    gen = load_generator(trained_run / "checkpoints" / "last.ckpt").generator
    wrapper = ExportWrapper(gen).eval()
    for h, w in ((12, 12), (10, 14)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            assert torch.equal(wrapper(x), super_resolve(gen, x))


@pytest.mark.skipif(HAVE_ONNX, reason="onnx is installed: the export itself is tested")
def test_without_onnx_the_error_says_what_to_install(trained_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"pip install 'sr-cli\[onnx\]'"):
        export(trained_run, tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as info:
        main([str(trained_run), "-o", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("sr-export: error:")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The tiny ESRGAN exported once (with the ONNX Runtime check when it is installed), and
    every warning the export raised."""
    out = tmp_path_factory.mktemp("onnx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export(trained_run, out / "m.onnx", check=HAVE_ORT)
    return report, [str(w.message) for w in caught]


@needs_onnx
def test_export_is_dynamo_based_with_named_dynamic_axes(exported):
    import onnx

    report, caught = exported
    # The TorchScript exporter (dynamo=False) warned that it "will be removed"; nothing here.
    assert not [m for m in caught if "TorchScript" in m or "will be removed" in m], caught
    model = onnx.load(str(report.path))
    assert model.opset_import[0].version == 18
    dims = [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (model.graph.input[0], model.graph.output[0])
    ]
    assert dims == [["batch", 3, "height", "width"], ["batch", 3, "4*height", "4*width"]]
    # One self-contained file: the weights are inside, no external .data beside it.
    assert sorted(p.name for p in report.path.parent.iterdir()) == ["m.onnx"]
    assert model.graph.initializer and not any(i.data_location for i in model.graph.initializer)


@pytest.mark.skipif(not (HAVE_ONNX and HAVE_ORT), reason="onnx/onnxruntime not installed")
def test_onnxruntime_matches_pytorch_at_several_shapes(exported):
    report, _ = exported
    assert set(report.max_abs_diff) == set(CHECK_SHAPES)
    assert any(b > 1 for b, _, _ in CHECK_SHAPES)  # a batch of two
    assert any(h % 2 and w % 2 for _, h, w in CHECK_SHAPES)  # odd sides
    assert max(report.max_abs_diff.values()) < 1e-4


class SizeBranch(nn.Module):
    """Pads to an even size only when the input is odd: a branch on the size, which
    ``torch.export`` can trace for one parity only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * 4, 3, padding=1)
        self.scale = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        return F.pixel_shuffle(self.conv(x), 2)[..., : 2 * h, : 2 * w]


@needs_onnx
def test_a_size_specialized_graph_is_refused_not_written(tmp_path):
    """Given the module, torch.onnx.export would retry with the sizes its guards suggest and
    write a graph that only runs at the example's parity; sr-export refuses with the reason."""
    with pytest.raises(DynamicShapeError) as info:
        export_onnx(SizeBranch(), tmp_path / "m.onnx")
    msg = str(info.value)
    assert "SizeBranch" in msg and "dynamic batch/height/width" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@needs_onnx
def test_an_older_opset_is_a_one_line_error(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(trained_run), "-o", str(tmp_path / "m.onnx"), "--opset", "17"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-export: error:") and "--opset 18" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()
