"""Throughput of every degradation, in images per second, as a markdown table.

Usage::

    python -m bench.degradation_throughput            # CPU, batch 16 x 3 x 256 x 256
    python -m bench.degradation_throughput cuda 32 256

Each degradation draws its parameters (``sample``) and degrades the batch (``forward``); the
timed figure covers both, after one warm-up call. Not part of the test suite.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from sr_cli.degradations import (
    BlurDownsample,
    BSRGANDegradation,
    Degradation,
    DegradationNotInvertible,
    JPEGDownsample,
    NoisyDownsample,
    QuantizedDownsample,
    RealESRGANDegradation,
    ResizeDownsample,
)
from sr_cli.degradations.blur import KERNEL_TYPES

SCALE = 4


def catalogue(scale: int = SCALE) -> dict[str, Callable[[], Degradation]]:
    """The benchmarked degradations (the defaults of ``conf/degradation/*.yaml``)."""
    return {
        "bicubic": lambda: ResizeDownsample(scale, "bicubic"),
        "bilinear": lambda: ResizeDownsample(scale, "bilinear"),
        "area": lambda: ResizeDownsample(scale, "area"),
        "nearest": lambda: ResizeDownsample(scale, "nearest"),
        "blur": lambda: BlurDownsample(scale, kernel_list=list(KERNEL_TYPES)),
        "noise": lambda: NoisyDownsample(scale, gaussian_prob=0.5, gray_prob=0.4),
        "jpeg": lambda: JPEGDownsample(scale),
        "quantization": lambda: QuantizedDownsample(scale, bits=5),
        "bsrgan_shuffle": lambda: BSRGANDegradation(scale),
        "realesrgan": lambda: RealESRGANDegradation(scale),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    device: str = "cpu", batch: int = 16, size: int = 256, repeats: int = 3, seed: int = 0
) -> list[dict]:
    """Time every degradation on a ``(batch, 3, size, size)`` batch.

    Returns:
        one dict per degradation: ``name``, ``images_per_s``, ``ms_per_batch``,
        ``replay_ms`` (the replay, or ``None`` if it refuses), ``lq_shape``, ``device``.
    """
    dev = torch.device(device)
    hr = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dev)
    rows = []
    for name, make in catalogue().items():
        d = make().to(dev)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            lq = d(hr, d.sample(hr, g))  # warm-up (caches, kernels, lazy init)
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(repeats):
                params = d.sample(hr, g)
                lq = d(hr, params)
            _sync(dev)
            per_batch = (time.perf_counter() - t0) / repeats
            try:
                t0 = time.perf_counter()
                d.replay(hr, params)
                _sync(dev)
                cons_ms = 1000 * (time.perf_counter() - t0)
            except DegradationNotInvertible:
                cons_ms = None
        rows.append(
            {
                "name": name,
                "images_per_s": batch / per_batch,
                "ms_per_batch": 1000 * per_batch,
                "replay_ms": cons_ms,
                "lq_shape": tuple(lq.shape),
                "device": str(dev),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| degradation | images/s | ms / batch | replay ms | LQ shape |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        cons = "-" if r["replay_ms"] is None else f"{r['replay_ms']:.1f}"
        lines.append(
            f"| {r['name']} | {r['images_per_s']:.1f} | {r['ms_per_batch']:.1f} | {cons} "
            f"| {'x'.join(map(str, r['lq_shape']))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    device = args[0] if args else "cpu"
    batch = int(args[1]) if len(args) > 1 else 16
    size = int(args[2]) if len(args) > 2 else 256
    rows = run(device, batch, size)
    print(f"Degradation throughput on {device}, batch {batch}x3x{size}x{size}, scale x{SCALE}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
