"""sr-export: ONNX with dynamic height/width, checked against PyTorch when ORT is installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sr_cli.commands.export import main
from sr_cli.errors import ConfigError
from sr_cli.evaluate.export import ExportWrapper, export
from sr_cli.evaluate.inference import load_generator, super_resolve

HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None


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


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx is not installed (pip install 'sr-cli[onnx]')")
def test_export_has_dynamic_spatial_axes(trained_run, tmp_path):
    import onnx

    report = export(trained_run, tmp_path / "m.onnx", check=False)
    model = onnx.load(str(report.path))
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]


@pytest.mark.skipif(
    not (HAVE_ONNX and HAVE_ORT), reason="onnx/onnxruntime not installed: ORT comparison skipped"
)
def test_onnxruntime_matches_pytorch_on_two_sizes(trained_run, tmp_path):
    report = export(trained_run, tmp_path / "m.onnx")
    assert len(report.max_abs_diff) == 2
    assert max(report.max_abs_diff.values()) < 1e-4
