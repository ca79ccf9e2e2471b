"""A command touches only runs that are its own (issue 26): ``resume=auto`` continues this
folder or a run of the same name and settings, a refused start removes nothing of the live
run, the lock cannot be taken from a process that is still writing it, and a killed write's
temporary file is cleared by the next run of the folder. Real ``sr-train`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.commands.test_sr_train import SR_TRAIN, TINY_CLI, run_cli

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


# --------------------------------------------------------------------------- refused start
def _start(tmp_path: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [SR_TRAIN, *ARGS, f"hydra.run.dir={run_dir}", *extra],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"sr-train ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.1)


def test_a_refused_start_removes_nothing_of_the_live_run(tmp_path, val_subset):
    """The first sr-train holds the folder's lock and waits, before it writes anything of its
    own, for its training data (a pipe: command that waits for a gate file); a second sr-train
    into the folder is refused and must leave the first's .hydra/ and train.log alone. Then the
    gate opens and the first finishes its run."""
    from sr_cli.commands.data import main as sr_data
    from sr_cli.data import SAMPLES_DIR

    shards, gate = tmp_path / "shards", tmp_path / "gate"
    assert sr_data(["shard", str(SAMPLES_DIR / "train"), str(shards), "--quiet"]) == 0
    wait_then_print = f"while [ ! -e {gate} ]; do sleep 0.1; done; cat {shards}/manifest.json"
    run = tmp_path / "busy"
    first = _start(
        tmp_path,
        run,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=2",
        "data=stream",
        f"data.train_stream='pipe:sh -c \"{wait_then_print}\"'",
    )
    lock = run / ".lock"

    def holds_lock() -> bool:
        try:
            return json.loads(lock.read_text())["pid"] == first.pid
        except (OSError, ValueError, KeyError):
            return False

    try:
        _wait_until(holds_lock, first, "the first process taking the lock")
        second = run_cli([*ARGS, f"data.val_dir={val_subset}", f"hydra.run.dir={run}"], tmp_path)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"in use by sr-train (pid {first.pid}" in second.stderr
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
        assert holds_lock()
    finally:
        gate.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    assert not lock.exists()


# --------------------------------------------------------------------------- lock takeover
@pytest.mark.parametrize("content", ["", '{"pid": 12'], ids=["empty", "half-written"])
def test_a_lock_being_written_is_in_use_until_it_is_old(content, tmp_path):
    """Between another process's O_EXCL create and its write, the lock reads empty (or half
    written): that lock is in use, not stale. Only once it is old is it taken over."""
    from sr_cli.errors import ConfigError
    from sr_cli.train.ownership import LOCK_GRACE_S, RunLock, _rank

    assert _rank() == 0  # imports Lightning now, not while the lock's age is being judged
    lock = tmp_path / ".lock"
    lock.write_text(content)
    with pytest.raises(ConfigError, match=r"run folder .* is in use: .*being written"):
        with RunLock(tmp_path):
            raise AssertionError("took a lock that is being written")
    assert lock.read_text() == content  # left as it was
    old = time.time() - LOCK_GRACE_S - 1
    os.utime(lock, (old, old))
    with RunLock(tmp_path) as taken:
        assert taken.held and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


# --------------------------------------------------------------------------- leftovers
def test_the_next_run_of_a_folder_removes_temporaries_of_killed_writes(tiny_cfg, tmp_path):
    """A checkpoint write killed mid-way leaves `.<name>.<random>.tmp` (atomic_write's own
    pattern) in checkpoints/: the next run of the folder removes exactly those, once it holds
    the folder's lock; a run refused by the lock leaves them alone."""
    import socket
    import tempfile

    from sr_cli.errors import ConfigError
    from sr_cli.train.training import train

    out = tmp_path / "run"
    common = ["loss=[l1]", "val.save_images=0", "data.val_dir=null"]
    train(tiny_cfg(*common, out=out))
    ckpts = out / "checkpoints"
    leftovers = []
    for name in ("last.ckpt", "iter_0000004.ckpt", "last.generator.safetensors"):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=ckpts)  # as atomic_write
        os.write(fd, b"half a checkpoint")
        os.close(fd)
        leftovers.append(Path(tmp))
    others = [ckpts / n for n in (".last.ckpt.tmp", "notes.tmp", ".last.ckpt.ab.tmp", "mine.txt")]
    for path in others:
        path.write_text("not a leftover of atomic_write")

    owner = subprocess.Popen(["sleep", "60"])  # a live process holding the folder
    try:
        (out / ".lock").write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname()}))
        with pytest.raises(ConfigError, match="in use"):
            train(tiny_cfg(*common, "trainer.max_steps=4", "resume=auto", out=out))
        assert all(p.exists() for p in leftovers)
    finally:
        owner.kill()
        owner.wait()
    (out / ".lock").unlink()

    _, objects = train(tiny_cfg(*common, "trainer.max_steps=4", "resume=auto", out=out))
    assert objects["module"].iteration == 4
    assert not any(p.exists() for p in leftovers)
    assert all(p.read_text() == "not a leftover of atomic_write" for p in others)
    assert not [p for p in ckpts.iterdir() if p.name.endswith(".tmp") and p not in others]
