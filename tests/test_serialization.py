"""Atomic writes: the folder is fsync'ed after the rename, and a killed write's temporary file
is recognisable by name (and only it)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest

from sr_cli import serialization
from sr_cli.serialization import atomic_link, atomic_write, is_atomic_temporary


def _observe_fsync(monkeypatch, fail_on_folders: int | None = None) -> list[str]:
    """Record what each os.fsync is called on ("file"/"folder"), the call passed through to the
    real one (or failing with ``fail_on_folders`` for a folder, as some filesystems do)."""
    real, seen = os.fsync, []

    def fsync(fd):
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append(kind)
        if kind == "folder" and fail_on_folders is not None:
            raise OSError(fail_on_folders, os.strerror(fail_on_folders))
        return real(fd)

    monkeypatch.setattr(serialization.os, "fsync", fsync)
    return seen


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    seen = _observe_fsync(monkeypatch)
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"data"))
    assert seen == ["file", "folder"] and (tmp_path / "a.bin").read_bytes() == b"data"
    atomic_link(tmp_path / "a.bin", tmp_path / "b.bin")
    assert seen[2:] == ["folder"] and (tmp_path / "b.bin").read_bytes() == b"data"


def test_a_filesystem_that_refuses_to_fsync_a_folder_is_let_be(tmp_path, monkeypatch):
    _observe_fsync(monkeypatch, fail_on_folders=errno.EINVAL)
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"data"))
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    _observe_fsync(monkeypatch, fail_on_folders=errno.EIO)  # a real disk error is not hidden
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(tmp_path / "c.bin", lambda f: f.write(b"data"))


def test_only_atomic_write_temporaries_are_recognised(tmp_path):
    for name in ("last.ckpt", "iter_0000004.ckpt", "x.generator_ema.safetensors"):
        fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)
        os.close(fd)
        assert is_atomic_temporary(os.path.basename(path))
    for name in (
        ".last.ckpt.tmp",
        "last.ckpt.abcdefgh.tmp",
        ".last.ckpt.ABCDEFGH.tmp",
        ".last.ckpt.abc.tmp",
        ".last.ckpt.abcdefgh.tmp.bak",
        "notes.tmp",
    ):
        assert not is_atomic_temporary(name), name
