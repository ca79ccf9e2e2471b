"""``make gpu-check``'s script, dry-run on the CPU: every check runs as a real CLI process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_check import CHECKS

REPO = Path(__file__).resolve().parent.parent.parent


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    res = _run("--out", str(tmp_path / "table.md"), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines() == [
        "gpu-check: no CUDA device; nothing run (--allow-cpu dry-runs the checks on CPU)."
    ]
    assert not (tmp_path / "table.md").exists()


@pytest.mark.slow
def test_cpu_dry_run_produces_every_row(tmp_path):
    out = tmp_path / "gpu_check.md"
    res = _run("--allow-cpu", "--out", str(out), "--keep", str(tmp_path / "work"))
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    text = out.read_text()
    assert text in res.stdout  # the same table on stdout and in the file
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| check | status | wall time |")
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows[1:]]
    table = {row[0]: row for row in cells}
    assert list(table) == list(CHECKS)
    for check, (_, status, wall, _gpu, rss, _figure) in table.items():
        assert status == "ok", f"{check}: {status}"
        assert wall.endswith(" s") and rss.endswith(" GiB"), check
    assert table["train bf16 GAN"][5].endswith(tuple("0123456789"))  # "x it/s, loss y"
    assert " it/s" in table["train DDP x2"][5]
    assert "PSNR_Y" in table["sr-eval sharded"][5] and "2 shard(s)" in table["sr-eval sharded"][5]
    assert "200x150 -> 800x600" in table["sr-upscale bf16"][5]
    # Both training runs really trained: DDP with 2 ranks.
    import json

    summary = json.loads((tmp_path / "work" / "train_ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations_per_rank"] == [3, 3]
