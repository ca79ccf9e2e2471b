"""6. GPU: bf16-mixed training steps and channels_last (CUDA only)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.harness import PlainLoop, compose_train, train_overrides
from bench.measure import alternate, ratio_row, row
from bench.sections.train import TRAIN_CASES, bench_train


def bench_gpu(p: dict, device: str, tmp: Path) -> list[dict]:
    if not torch.cuda.is_available():
        return [
            row(
                "gpu",
                "bf16 and channels_last training steps",
                unavailable="not run: no CUDA device",
            )
        ]
    rows = bench_train(
        p, "cuda", tmp, TRAIN_CASES[:1], ["trainer.precision=bf16-mixed"], " (bf16-mixed)"
    )
    cfg = compose_train(train_overrides(p, "edsr", "l1", tmp / "cl", "cuda"))
    a, b = PlainLoop(cfg, "cuda", channels_last=True), PlainLoop(cfg, "cuda")
    a.run(p["warmup"])
    b.run(p["warmup"])
    res = alternate(
        {"cl": lambda: a.run(p["block"]), "nchw": lambda: b.run(p["block"])}, p["rounds"]
    )
    rows.append(ratio_row("gpu", "plain EDSR step, channels_last vs contiguous", res["cl"], res["nchw"],
                          "channels_last", "contiguous", None))  # fmt: skip
    return rows
