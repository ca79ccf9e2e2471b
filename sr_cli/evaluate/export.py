"""Export a checkpoint's generator for ``sr-export``: as ONNX (or as community weights), checked.

``--format pth|safetensors`` writes the generator's weights as a bare state dict in the layout
published checkpoints of its family use (:func:`sr_cli.models.published.published_state_dict`),
so spandrel, chaiNNer and the other community tools load it; the written file is read back
through spandrel detection and its output compared with sr-cli's (``--atol``).

The graph takes ``lq`` ``(N, 3, H, W)`` in ``[0, 1]`` and returns ``sr``
``(N, 3, H * scale, W * scale)`` clamped to ``[0, 1]`` (pyramid models: the finest level),
with dynamic batch, height and width axes (opset 17, TorchScript-based exporter: it needs the
``onnx`` package but not ``onnxscript``). The model is validated with onnx's checker; when ``onnxruntime`` is installed (``pip install 'sr-cli[onnx]'``) its output is
compared with PyTorch's on two input sizes (max abs difference below ``--atol``, 1e-4).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sr_cli.errors import ConfigError, one_line
from sr_cli.evaluate.inference import load_generator, resolve_checkpoint
from sr_cli.models.common import final_output

OPSET = 17
CHECK_SIZES = ((32, 32), (40, 56))


class ExportWrapper(nn.Module):
    """``lq -> sr``: the generator's finest output, clamped to ``[0, 1]``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return final_output(self.generator(lq)).clamp(0.0, 1.0)


FORMATS = ("onnx", "pth", "safetensors")


@dataclass
class ExportReport:
    path: Path
    scale: int
    checked_with_onnx: bool = False
    max_abs_diff: dict[tuple[int, int], float] = field(default_factory=dict)
    skipped: str | None = None
    layout: str | None = None
    detected: str | None = None


def export_weights(
    generator: nn.Module, scale: int, path: Path, fmt: str, check: bool = True, atol: float = 1e-4
) -> ExportReport:
    """Write ``generator`` as a community ``.pth``/``.safetensors`` and read it back with
    spandrel detection (architecture, scale, outputs on two input sizes)."""
    from safetensors.torch import load_file

    from sr_cli.models.published import load_published, published_state_dict
    from sr_cli.serialization import atomic_save_safetensors, atomic_torch_save

    sd, layout = published_state_dict(generator)
    if fmt == "safetensors":
        atomic_save_safetensors({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        atomic_torch_save(sd, path)
    report = ExportReport(path=path, scale=scale, layout=layout)
    if not check:
        report.skipped = "--no-check"
        return report
    try:  # read back as the format written, whatever the file's suffix
        raw = load_file(str(path)) if fmt == "safetensors" else None
        loaded = load_published(path, raw=raw)
    except Exception as exc:  # noqa: BLE001 - spandrel cannot represent this configuration
        report.skipped = f"spandrel does not detect this configuration: {one_line(exc)}"
        return report
    if loaded.scale != scale:
        raise ConfigError(f"{str(path)!r} is detected as x{loaded.scale}, not x{scale}")
    report.detected = str(loaded.model_config.get("name"))
    ref = ExportWrapper(generator).eval().cpu()
    gen = torch.Generator().manual_seed(0)
    for h, w in CHECK_SIZES:
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            diff = (ref(x) - final_output(loaded.generator(x)).clamp(0, 1)).abs().max()
        report.max_abs_diff[(h, w)] = float(diff)
    worst = max(report.max_abs_diff.values())
    if worst >= atol:
        raise ConfigError(
            f"spandrel's {report.detected} from {str(path)!r} differs from sr-cli's output by "
            f"{worst:.2e} (>= {atol:g}); the exported weights are not faithful."
        )
    return report


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def export_onnx(generator: nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Export ``generator`` (eval mode, CPU) to ONNX with dynamic batch/height/width axes."""
    from sr_cli.serialization import check_output_file

    path = check_output_file(Path(path), "the ONNX output", folder=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ExportWrapper(generator).eval().cpu()
    dummy = torch.rand(1, 3, 32, 32)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=["lq"],
            output_names=["sr"],
            dynamic_axes={
                "lq": {0: "batch", 2: "height", 3: "width"},
                "sr": {0: "batch", 2: "out_height", 3: "out_width"},
            },
            do_constant_folding=True,
        )
    tmp.replace(path)
    return path


def compare_with_onnxruntime(
    generator: nn.Module, path: Path, sizes: Sequence[tuple[int, int]] = CHECK_SIZES, seed: int = 0
) -> dict[tuple[int, int], float]:
    """Max abs difference between ONNX Runtime and PyTorch on random inputs of each size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = ExportWrapper(generator).eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        (out,) = session.run(["sr"], {"lq": x.numpy()})
        if out.shape != ref.shape:
            raise ConfigError(
                f"ONNX output {out.shape} differs from PyTorch {ref.shape} at {h}x{w}"
            )
        diffs[(h, w)] = float(abs(out - ref).max())
    return diffs


def export(
    checkpoint: str | Path,
    output: str | Path | None = None,
    opset: int = OPSET,
    check: bool = True,
    atol: float = 1e-4,
    prefer_ema: bool = True,
    fmt: str = "onnx",
) -> ExportReport:
    """Export a checkpoint's generator; validate with onnx / onnxruntime when installed
    (``fmt="onnx"``) or by spandrel detection (``fmt="pth"``/``"safetensors"``)."""
    from sr_cli.serialization import check_output_file

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    ckpt = resolve_checkpoint(checkpoint)
    path = Path(output) if output else ckpt.with_suffix(f".{fmt}")
    # -o names a file: an existing folder, device or FIFO is refused before anything runs.
    check_output_file(path, "-o" if output else "the output file (next to the checkpoint)")
    if path.resolve() == ckpt.resolve():
        raise ConfigError(f"-o {str(path)!r} would overwrite the checkpoint; pick another name")
    loaded = load_generator(ckpt, prefer_ema=prefer_ema)
    if fmt != "onnx":
        return export_weights(loaded.generator, loaded.scale, path, fmt, check, atol)
    if not have("onnx"):
        raise ConfigError(
            "sr-export needs the onnx package to write ONNX files (torch's exporter serializes "
            "with it): pip install 'sr-cli[onnx]' (or: pip install onnx onnxruntime)"
        )
    try:
        export_onnx(loaded.generator, path, opset)
    except Exception as exc:  # unsupported operator, ...
        raise ConfigError(
            f"ONNX export of {type(loaded.generator).__name__} failed: {one_line(exc)}"
        ) from exc
    report = ExportReport(path=path, scale=loaded.scale)
    if not check:
        report.skipped = "--no-check"
        return report
    if have("onnx"):
        import onnx

        onnx.checker.check_model(str(path))
        report.checked_with_onnx = True
    if not have("onnxruntime"):
        report.skipped = "onnxruntime is not installed (pip install 'sr-cli[onnx]')"
        return report
    report.max_abs_diff = compare_with_onnxruntime(loaded.generator, path)
    worst = max(report.max_abs_diff.values())
    if worst >= atol:
        raise ConfigError(
            f"ONNX Runtime output differs from PyTorch by {worst:.2e} (>= {atol:g}) on "
            f"{report.max_abs_diff}; the exported model {str(path)!r} is not faithful."
        )
    return report
