"""A command touches only runs that are its own (issue 26): ``resume=auto`` continues this
folder or a run of the same name and settings, a refused start removes nothing of the live
run, the lock cannot be taken from a process that is still writing it, and a killed write's
temporary file is cleared by the next run of the folder. Real ``sr-train`` processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.commands.test_sr_train import TINY_CLI, run_cli

ARGS = [
    "experiment=demo",
    "model.pretrained=null",
    *TINY_CLI,
    "loss=[l1]",
    "val.save_images=0",
    "data.iters_per_epoch=2",
]


def _iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["sr_cli"]["iteration"])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- resume=auto
def _first_run(tmp_path: Path, val_subset: Path, name: str) -> Path:
    run = tmp_path / "X" / name
    done = run_cli(
        [
            *ARGS,
            f"data.val_dir={val_subset}",
            f"name={name}",
            "trainer.max_steps=2",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def test_resume_auto_never_continues_a_run_of_another_name(tmp_path, val_subset):
    """`sr-train name=a` in X/a, then `sr-train name=b resume=auto` in X/b: b starts fresh in X/b
    and says why in one line; not one byte of a's files changes."""
    a = _first_run(tmp_path, val_subset, "a")
    before = _snapshot(a)
    b = a.parent / "b"
    other = run_cli(
        [
            *ARGS,
            f"data.val_dir={val_subset}",
            "name=b",
            "trainer.max_steps=2",
            "resume=auto",
            f"hydra.run.dir={b}",
        ],
        tmp_path,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert _snapshot(a) == before
    assert _iteration(b / "checkpoints" / "last.ckpt") == 2
    assert json.loads((b / "summary.json").read_text())["name"] == "b"
    said = [line for line in (other.stdout + other.stderr).splitlines() if "not continuing" in line]
    assert len(said) == 1 and str(a) in said[0] and "'a'" in said[0], said


@pytest.mark.slow
def test_resume_auto_continues_a_run_of_the_same_name_and_settings(tmp_path, val_subset):
    """A new folder, the same name and settings, more steps: resume=auto continues X/a."""
    a = _first_run(tmp_path, val_subset, "a")
    a2 = a.parent / "a2"
    same = run_cli(
        [
            *ARGS,
            f"data.val_dir={val_subset}",
            "name=a",
            "trainer.max_steps=4",
            "resume=auto",
            f"hydra.run.dir={a2}",
        ],
        tmp_path,
    )
    assert same.returncode == 0, same.stderr[-2000:]
    assert f"continuing the run in {a}" in same.stdout + same.stderr
    assert _iteration(a / "checkpoints" / "last.ckpt") == 4
    assert not a2.exists()


def test_a_run_of_the_same_name_with_other_settings_is_not_continued(tiny_cfg, tmp_path):
    """The decision itself: the recorded name and the settings record, run-control keys aside."""
    from omegaconf import OmegaConf, open_dict

    from sr_cli.train.rundir import continuable

    earlier = tmp_path / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    recorded = tiny_cfg("name=a", "loss=[l1]", out=earlier)
    (earlier / "config_resolved.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.to_container(recorded, resolve=True))
    )
    # more steps, another folder, resume=auto, another logger: the same run, continued
    same = tiny_cfg("name=a", "loss=[l1]", "trainer.max_steps=9", "resume=auto", out=tmp_path / "n")
    assert continuable(earlier, same) is None
    assert "its run name is 'a', this run's is 'b'" in continuable(
        earlier, tiny_cfg("name=b", "loss=[l1]", out=tmp_path / "n")
    )
    lr = tiny_cfg("name=a", "loss=[l1]", "optim.generator.lr=1e-3", out=tmp_path / "n")
    assert "optim.generator.lr" in continuable(earlier, lr)
    with open_dict(same):
        same.seed = 5
    assert "seed: 0 -> 5" in continuable(earlier, same)
    (earlier / "config_resolved.yaml").unlink()
    assert "no readable config_resolved.yaml" in continuable(earlier, same)
