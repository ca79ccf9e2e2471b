"""Every Makefile target in a quick form, in a copy of the working tree laid out like a fresh clone.

``make test``/``test-slow``/``test-all`` would run this suite again, and ``format``/``clean``/
``chromium`` change files or the system, so those are checked with ``make -n`` (the commands they
would run). Everything else really runs. The venv is this interpreter's (``VENV=``) and its install
stamp is declared up to date (``make -o``), so nothing is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
DRY_RUN = {"test", "test-slow", "test-all", "format", "clean", "chromium"}


def documented_targets() -> list[str]:
    """Targets listed by ``make help`` (a ``## `` comment after the rule)."""
    text = (REPO / "Makefile").read_text()
    return re.findall(r"^([a-zA-Z_-]+):.*?## ", text, flags=re.M)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The tracked and untracked-but-not-ignored files: what a fresh clone (plus edits) holds."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for f in filter(None, files):
        src = REPO / f
        if src.is_symlink():  # conf -> sr_cli/conf
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / f)
        elif src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    assert not (dest / "bench" / "results.md").exists()
    return dest


def make(clone: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(clone), WANDB_MODE="offline")
    return subprocess.run(
        ["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_every_target_has_a_quick_form():
    covered = {"help", "install", "train", "pretrain-demo", "pretrain-aux", "lint", "bench", "gpu-check"} | DRY_RUN
    assert set(documented_targets()) <= covered, "add the new target's quick form to this file"


def test_help_lists_every_target(clone):
    r = make(clone, "help")
    assert r.returncode == 0, r.stderr
    for target in documented_targets():
        assert f"make {target}" in r.stdout


@pytest.mark.parametrize("target", sorted(DRY_RUN))
def test_dry_run_targets(clone, target):
    r = make(clone, "-n", target)
    assert r.returncode == 0, r.stderr
    if target.startswith("test"):
        assert "-m pytest" in r.stdout


def test_gpu_check_without_cuda(clone):
    """Without CUDA (CI), `make gpu-check` says so in one line and succeeds."""
    r = make(clone, "gpu-check", timeout=300)
    assert r.returncode == 0, r.stderr
    import torch

    if not torch.cuda.is_available():
        assert "gpu-check: no CUDA device; nothing run" in r.stdout


def test_install_default_and_cpu_torch(clone, tmp_path):
    venv = f"VENV={tmp_path / 'venv'}"  # a venv that does not exist: the full recipe is shown
    default = subprocess.run(
        ["make", "-n", "install", venv], cwd=clone, capture_output=True, text=True
    )
    assert default.returncode == 0, default.stderr
    assert "torch==2.14.1 torchvision==0.29.1" in default.stdout
    assert "--extra-index-url" not in default.stdout
    cpu = subprocess.run(
        ["make", "-n", "install", venv, "TORCH=cpu"], cwd=clone, capture_output=True, text=True
    )
    assert cpu.returncode == 0, cpu.stderr
    assert re.search(r"pip install .*--extra-index-url \S+/whl/cpu torch==2\.14\.1", cpu.stdout)
    assert "-e '.[test,onnx]'" in cpu.stdout
    bad = subprocess.run(
        ["make", "-n", "install", venv, "TORCH=gpu"], cwd=clone, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "TORCH=gpu is not a torch build; use TORCH=default or TORCH=cpu" in bad.stderr


def test_lint(clone):
    r = make(clone, "lint")
    assert r.returncode == 0, r.stdout + r.stderr


def test_train(clone, tmp_path):
    out = tmp_path / "run"
    r = make(clone, "train", f"TRAIN_ARGS=debug=fast paths.output_dir={out}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (out / "config_resolved.yaml").is_file()
    assert json.loads((out / "summary.json").read_text())["iteration"] >= 1


def test_pretrain_demo(clone, tmp_path):
    """The warm start's recipe, two iterations long, exported where DEMO_WEIGHTS says."""
    from safetensors.torch import load_file

    weights = tmp_path / "w.safetensors"
    r = make(
        clone,
        "pretrain-demo",
        "TRAIN_ARGS=trainer.max_steps=2 data.iters_per_epoch=2 data.patch_size=32 "
        "data.batch_size=2 logger=none",
        f"DEMO_WEIGHTS={weights}",
        f"PRETRAIN_DIR={tmp_path / 'pre'}",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert any(k.startswith("body.") or k.startswith("conv_first") for k in load_file(weights))


def test_pretrain_aux(clone, tmp_path):
    """The AuxNet recipe, three steps long, written where AUX_WEIGHTS says with its metadata."""
    from safetensors import safe_open

    weights = tmp_path / "aux.safetensors"
    r = make(clone, "pretrain-aux", "AUX_STEPS=3", f"AUX_WEIGHTS={weights}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with safe_open(weights, "pt") as f:
        meta = f.metadata()
        assert f.keys()
    assert meta and int(meta["steps"]) == 3, meta


def test_bench_on_a_fresh_clone(clone, tmp_path):
    # The full smoke bench runs in tests/bench; here the target's wiring, on one cheap section.
    r = make(clone, "bench", "BENCH=smoke", f"BENCH_OUT={tmp_path}", "BENCH_ARGS=--only eval")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["preset"] == "smoke"
    assert {row["section"] for row in results["rows"]} == {"eval"}  # one row per eval model
    assert "unavailable" not in results["rows"][0], results["rows"][0]
    assert "## 4. Evaluation (sr-eval)" in (tmp_path / "results.md").read_text()
