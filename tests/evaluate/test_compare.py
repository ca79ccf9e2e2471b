"""Row labels of the shared comparison and the exact cross-process per-image table."""

from __future__ import annotations

from pathlib import Path

import torch

from sr_cli.evaluate.compare import checkpoint_label, unique_labels
from sr_cli.metrics.aggregate import PerImageTable


def test_labels_prefer_the_stored_run_name():
    ckpt = Path("outputs/esrgan/2026-11-30_12-00-00/checkpoints/best.ckpt")
    assert checkpoint_label(ckpt) == "2026-11-30_12-00-00/best"
    assert checkpoint_label(ckpt, "esrgan-l1") == "esrgan-l1"
    assert checkpoint_label(Path("weights/x4.ckpt")) == "x4"
    assert unique_labels(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]


def test_per_image_table_puts_rows_at_their_index_in_float64():
    table = PerImageTable(width=2)
    third = torch.tensor([[1 / 3, float("nan")]], dtype=torch.float64)
    table.update(torch.tensor([2]), third)
    table.update(torch.tensor([0]), torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    out = table.compute(3)
    assert out.dtype == torch.float64
    assert out[2, 0].item() == 1 / 3  # bit-exact, not rounded to float32
    assert torch.isnan(out[1]).all() and torch.isnan(out[2, 1])
    assert out[0].tolist() == [1.0, 2.0]
