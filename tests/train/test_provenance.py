"""provenance.json (git commit, versions, command line, seed) and bit-identical deterministic runs."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from sr_cli import provenance
from sr_cli.train.training import train


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def git_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "notes.txt").write_text("one\n")
    _git(repo, "add", "notes.txt")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_run_writes_provenance_next_to_the_config(tiny_cfg, val_subset, git_repo, monkeypatch):
    monkeypatch.chdir(git_repo)
    monkeypatch.setattr(sys, "argv", ["sr-train", "loss=l1", "seed=7"])
    cfg = tiny_cfg("loss=[l1]", "seed=7", f"data.val_dir={val_subset}", "val.save_images=0")
    _, objects = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "config_resolved.yaml").is_file()
    record = json.loads((out / "provenance.json").read_text())
    assert record["git"]["commit"] == _git(git_repo, "rev-parse", "HEAD")
    assert record["git"]["dirty"] is False
    assert record["seed"] == 7
    assert record["argv"] == ["sr-train", "loss=l1", "seed=7"]
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["pytorch_lightning"] == metadata.version("pytorch_lightning")
    assert record["packages"]["hydra-core"] == metadata.version("hydra-core")
    for name in ("kornia", "piq", "omegaconf", "torchvision", "sr_cli"):
        assert name in record["packages"]
    assert record["python"] == sys.version.split()[0]
    assert record["hostname"] and record["start_time"] and record["platform"]
    assert record["cuda_devices"] == []  # CPU box
    # The loggers got it too (the CSV logger's hparams.yaml; wandb's config key "provenance").
    assert "provenance" in (out / "hparams.yaml").read_text()


def test_dirty_tree_and_no_repository(git_repo, tmp_path, monkeypatch):
    (git_repo / "notes.txt").write_text("two\n")
    assert provenance.git_state(git_repo)["dirty"] is True
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert provenance.git_state(outside) == {"commit": None, "dirty": None, "root": None}
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git executable at all
    record = provenance.collect(seed=3, cwd=git_repo)
    assert record["git"]["commit"] is None and record["seed"] == 3


def test_deterministic_gan_runs_are_bit_identical(tiny_cfg, val_subset, tmp_path):
    """trainer.deterministic=true: two runs in separate folders, L1 + GAN, give identical
    generator safetensors, tensor by tensor."""
    from safetensors.torch import load_file

    common = [
        "loss=[l1,gan]",
        "trainer.deterministic=true",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
    ]
    files = []
    for name in ("a", "b"):
        train(tiny_cfg(*common, out=tmp_path / name))
        files.append(load_file(tmp_path / name / "checkpoints" / "last.generator.safetensors"))
    a, b = files
    assert set(a) == set(b) and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
