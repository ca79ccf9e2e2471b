"""Export a checkpoint's generator for ``sr-export``: as ONNX (or as community weights), checked.

``--format pth|safetensors`` writes the generator's weights as a bare state dict in the layout
published checkpoints of its family use (:func:`sr_cli.models.published.published_state_dict`),
so spandrel, chaiNNer and the other community tools load it; the written file is read back
through spandrel detection and its output compared with sr-cli's (``--atol``).

The graph takes ``lq`` ``(N, 3, H, W)`` in ``[0, 1]`` and returns ``sr``
``(N, 3, H * scale, W * scale)`` clamped to ``[0, 1]`` (pyramid models: the finest level),
with dynamic ``batch``, ``height`` and ``width`` axes. It is captured with ``torch.export``
(a generator whose code fixes a size, e.g. by branching on it, is refused with the reason) and
written by torch's dynamo-based exporter (opset 18, ``onnx`` + ``onnxscript``), weights inside
the file. The model is validated with onnx's checker; when ``onnxruntime`` is installed
(``pip install 'sr-cli[onnx]'``) its output is compared with PyTorch's at several
``(batch, height, width)`` (:data:`CHECK_SHAPES`, odd sides and a batch of two included; max
abs difference below ``--atol``, 1e-4).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from sr_cli.errors import ConfigError, one_line
from sr_cli.evaluate.inference import load_generator, resolve_checkpoint
from sr_cli.models.common import final_output

#: The opset written by default, and the oldest the dynamo-based exporter writes.
OPSET = 18
MIN_OPSET = 18
#: Input sizes ``(batch, height, width)`` of the ONNX Runtime check: square, wide, odd sides with
#: a batch of two, and a side smaller than a 16-pixel window.
CHECK_SHAPES = ((1, 32, 32), (1, 40, 56), (2, 33, 47), (1, 17, 9))
#: Input sizes of the spandrel read-back check of ``--format pth|safetensors``.
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
    max_abs_diff: dict[tuple[int, ...], float] = field(default_factory=dict)
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


class DynamicShapeError(ConfigError):
    """``torch.export`` cannot keep the batch, height and width of a generator dynamic."""


def _reason(exc: BaseException) -> str:
    """The first two meaningful lines of an exporter error, without colours or log hints."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = re.sub(r"\s*For more information, run with TORCH_LOGS=\S+", "", text)
    lines = [line.strip(" -|.") for line in text.splitlines() if line.strip(" -|.")]
    reason = f"{type(exc).__name__}: {'; '.join(lines[:2])[:300]}"
    if "SymInt" in text:
        reason += (
            "; the model computes with the input size outside torch (e.g. a cache keyed on it)"
        )
    return reason


@contextmanager
def _fused_once(model: nn.Module) -> Iterator[None]:
    """Fuse re-parameterized convolutions once, not in the traced forward.

    SPAN's ``Conv3XC`` (spandrel) folds its three training convolutions into ``eval_conv`` on
    every eval-mode forward by writing ``.data``, which ``torch.export`` cannot trace; the
    fused weights are the same every time, so they are computed here and the fusion is skipped
    while the graph is captured."""
    fused = [m for m in model.modules() if callable(getattr(m, "update_params", None))]
    fused = [m for m in fused if isinstance(getattr(m, "eval_conv", None), nn.Conv2d)]
    with torch.no_grad():
        for m in fused:
            m.update_params()
            m.update_params = lambda: None  # an instance attribute over the method
    try:
        yield
    finally:
        for m in fused:
            del m.update_params


def _capture(model: nn.Module, name: str) -> torch.export.ExportedProgram:
    """The generator's graph with dynamic batch, height and width, or a one-line reason.

    ``torch.export`` runs here, not inside ``torch.onnx.export``: given a module, the ONNX
    exporter retries with the shapes its guards suggest, which can fix the batch or a side to
    the example's size without an error. The example (2 x 3 x 37 x 43) avoids the sizes 0 and 1
    that ``torch.export`` specializes on."""
    dims = {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}
    example = torch.rand(2, 3, 37, 43, generator=torch.Generator().manual_seed(0))
    try:
        with _fused_once(model):
            return torch.export.export(model, (example,), dynamic_shapes=(dims,), strict=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the reason is kept
        raise DynamicShapeError(
            f"ONNX export of {name}: torch.export cannot trace it with dynamic batch/height/"
            f"width ({_reason(exc)}). Use --format pth/safetensors for this model."
        ) from exc


def export_onnx(generator: nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Export ``generator`` (eval mode, CPU) to ONNX with dynamic batch/height/width axes,
    through ``torch.export`` and the dynamo-based ONNX exporter (onnxscript); the weights are
    stored inside the one ``.onnx`` file."""
    from sr_cli.serialization import check_output_file

    if opset < MIN_OPSET:
        raise ConfigError(
            f"--opset {opset}: the ONNX exporter (torch.onnx, dynamo) writes opset {MIN_OPSET} "
            f"or newer; use --opset {OPSET}"
        )
    path = check_output_file(Path(path), "the ONNX output", folder=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ExportWrapper(generator).eval().cpu()
    program = _capture(model, type(generator).__name__)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=opset,
            input_names=["lq"],
            output_names=["sr"],
            external_data=False,
            optimize=True,
            verbose=False,
        )
        inp, out = onnx_program.model.graph.inputs[0], onnx_program.model.graph.outputs[0]
        axes = [(inp.shape[0], "batch"), (inp.shape[2], "height"), (inp.shape[3], "width")]
        fixed = [name for dim, name in axes if isinstance(dim, int)]
        if fixed:
            raise DynamicShapeError(
                f"ONNX export of {type(generator).__name__}: the graph fixes {', '.join(fixed)} "
                f"(input {list(inp.shape)}, output {list(out.shape)})"
            )
        onnx_program.rename_axes({dim: name for dim, name in axes})
        onnx_program.save(tmp, external_data=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def compare_with_onnxruntime(
    generator: nn.Module,
    path: Path,
    shapes: Sequence[tuple[int, int, int]] = CHECK_SHAPES,
    seed: int = 0,
) -> dict[tuple[int, ...], float]:
    """Max abs difference between ONNX Runtime and PyTorch on random inputs of each
    ``(batch, height, width)``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = ExportWrapper(generator).eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    diffs: dict[tuple[int, ...], float] = {}
    for b, h, w in shapes:
        x = torch.rand(b, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        try:
            (out,) = session.run(["sr"], {"lq": x.numpy()})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"ONNX Runtime cannot run {str(path)!r} on a {b}x3x{h}x{w} input ({first}); "
                "the exported graph is not faithful."
            ) from exc
        if out.shape != ref.shape:
            raise ConfigError(
                f"ONNX output {out.shape} differs from PyTorch {ref.shape} at {b}x3x{h}x{w}"
            )
        diffs[(b, h, w)] = float(abs(out - ref).max())
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
    missing = [m for m in ("onnx", "onnxscript") if not have(m)]
    if missing:
        raise ConfigError(
            f"sr-export needs {' and '.join(missing)} to write ONNX files (torch's dynamo-based "
            "exporter): pip install 'sr-cli[onnx]' (or: pip install onnx onnxscript onnxruntime)"
        )
    try:
        export_onnx(loaded.generator, path, opset)
    except ConfigError:
        raise
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
