"""The benchmark suite: its helpers, and the smoke preset end to end (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import alternate, stats
from bench.run import PRESETS, SECTIONS
from bench.sections.eval import EVAL_MODELS

REPO = Path(__file__).resolve().parent.parent.parent


def test_alternate_interleaves_measurements():
    calls = []
    res = alternate(
        {"a": lambda: calls.append("a") or 3.0, "b": lambda: calls.append("b") or 1.0}, 3
    )
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert res["a"] == {"median": 3.0, "min": 3.0, "max": 3.0, "n": 3}


def test_stats_median_min_max():
    assert stats([5.0, 1.0, 3.0, 9.0]) == {"median": 4.0, "min": 1.0, "max": 9.0, "n": 4}


def test_unknown_section_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "train,nope", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert r.returncode == 2
    assert "--only nope: unknown section" in r.stderr


@pytest.mark.slow
def test_smoke_bench_writes_every_row(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "--preset", "smoke", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    env = res["environment"]
    assert env["preset"] == "smoke" and env["threads"] == 1 and env["torch"] and env["date"]
    rows = res["rows"]
    by = {s: [row for row in rows if row["section"] == s] for s in SECTIONS}
    p = PRESETS["smoke"]
    expected = {
        "train": 4,
        "peer": 1,  # skipped in the smoke preset, said so
        "data": 2,
        "upscale": 1 + 2 * len(p["upscale_sizes"]),
        "eval": len(EVAL_MODELS),
        "scaling": len(p["scaling_batches"]) * len(p["scaling_patches"]) + 1,
        "gpu": 1 if not res["environment"]["cuda"] else 2,
    }
    assert {s: len(v) for s, v in by.items()} == expected
    allowed_missing = {"peer", "gpu"}
    for row in rows:
        if row["section"] in allowed_missing:
            continue
        assert "unavailable" not in row, row
    for row in by["train"] + by["eval"]:
        assert row["a"]["n"] == row["b"]["n"] >= 2  # alternated, repeated
        assert row["a"]["min"] <= row["a"]["median"] <= row["a"]["max"]
        assert row["ratio"] > 0 and row["target"] in (1.05, 1.10, 1.20)
    for row in by["data"]:
        assert 0.0 <= row["wait_share"]["median"] <= 1.0
    md = (tmp_path / "results.md").read_text()
    for row in rows:
        assert row["what"] in md
    assert "torch " + env["torch"] in md
