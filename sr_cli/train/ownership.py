"""Who owns a run folder, and what a start that fails may remove.

* :class:`RunLock`: one ``sr-train`` per run folder. ``.lock`` holds the owner's pid and host; a
  lock whose process is gone, or that has been empty or unreadable for :data:`LOCK_GRACE_S`
  seconds, is taken over with a warning. A younger empty lock is being written by a process that
  is starting: it is in use.
* :class:`FolderStart`: what a run folder held before this process started in it (recorded
  before Hydra sets the folder up, by the :class:`RecordRunStart` callback), so that a start
  that fails removes only what this process created, and only while it holds the folder's lock:
  a start refused by the lock removes nothing.
* :func:`remove_stale_temporaries`: the temporary files of checkpoint writes that were killed
  (``checkpoints/.<name>.<random>.tmp``) are removed by the next run of the folder, once it
  holds the lock.
* :func:`check_writable`: a folder that cannot be written fails before any compute.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sr_cli.errors import ConfigError
from sr_cli.serialization import is_atomic_temporary

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: What Hydra puts in a new run folder before the task starts (besides its ``*.log``).
HYDRA_FILES = (".hydra",)


def _rank() -> int:
    from pytorch_lightning.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# --------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: A lock that reads empty or unreadable is another process's until it is this many seconds old:
#: it is between its owner's exclusive create and the write of the owner's pid.
LOCK_GRACE_S = 10.0


class RunLock:
    """Exclusive ownership of a run folder for the life of one training process (rank 0).

    A lock is stale, and taken over with a warning, only when its owner's pid is not running
    (on this host) or when it has been empty or unreadable for :data:`LOCK_GRACE_S` seconds; a
    younger empty lock is being written by a process that is starting, and is in use.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        if _rank() != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, seen = self._owner()
                if seen is None:
                    continue  # gone between the create and the read: try again
                if owner is None:
                    age = time.time() - seen.st_mtime
                    if age < LOCK_GRACE_S:
                        raise ConfigError(
                            f"run folder {self.path.parent} is in use: its lock is {age:.1f} s "
                            "old and still being written by an sr-train that is starting; wait "
                            "for it, or write elsewhere (hydra.run.dir=...). If no sr-train is "
                            f"starting there, delete {self.path}."
                        ) from None
                    why = f"empty or unreadable for {age:.0f} s"
                elif owner.get("pid") == os.getpid():
                    return self  # re-entered by the same process (stages)
                elif owner.get("host") != me["host"] or _pid_alive(int(owner["pid"])):
                    raise ConfigError(
                        f"run folder {self.path.parent} is in use by sr-train (pid "
                        f"{owner.get('pid')} on {owner.get('host')}); wait for it to finish, stop "
                        f"it, or write elsewhere (hydra.run.dir=...). If that process is gone, "
                        f"delete {self.path}."
                    ) from None
                else:
                    why = f"pid {owner.get('pid')} is not running"
                log.warning("taking over the stale lock %s (%s)", self.path, why)
                self._remove_if_unchanged(seen)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ConfigError(f"could not lock the run folder {self.path.parent}; delete {self.path}")

    def _owner(self) -> tuple[dict | None, os.stat_result | None]:
        """The owner the lock names (``None``: empty or unreadable) and the lock file's stat
        (``None``: there is no lock file)."""
        try:
            seen = self.path.stat()
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            return None, seen
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            return None, seen
        return owner, seen

    def _remove_if_unchanged(self, seen: os.stat_result) -> None:
        """Remove the stale lock judged from ``seen`` unless another process replaced it since."""
        try:
            now = self.path.stat()
        except FileNotFoundError:
            return
        if (now.st_ino, now.st_size, now.st_mtime_ns) == (
            seen.st_ino,
            seen.st_size,
            seen.st_mtime_ns,
        ):
            self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# --------------------------------------------------------------------------- folder state
def training_started(run_dir: Path) -> bool:
    return (run_dir / "checkpoints").is_dir() or (run_dir / "metrics.csv").is_file()


def _startup_file(entry: Path) -> bool:
    return entry.name in HYDRA_FILES or entry.suffix == ".log"


@dataclass
class FolderStart:
    """What a run folder held before this process started in it.

    ``entries`` are the names it held (``None``: it did not exist) and ``top`` the outermost
    folder this process created on the way to it (the run folder or a parent; ``None``: none).
    """

    folder: Path
    entries: frozenset[str] | None
    top: Path | None
    cleared: bool = False

    @classmethod
    def now(cls, folder: str | Path) -> FolderStart:
        folder = Path(os.path.abspath(folder))
        if folder.is_dir():
            return cls(folder, frozenset(os.listdir(folder)), None)
        top = folder
        while top.parent != top and not top.parent.exists():
            top = top.parent
        return cls(folder, None, top)

    @classmethod
    def of(cls, folder: str | Path) -> FolderStart:
        """The record :class:`RecordRunStart` made before Hydra set ``folder`` up (so that
        ``.hydra/`` and the log count as this process's), else the folder as it is now."""
        return _STARTS.pop(os.path.abspath(folder), None) or cls.now(folder)

    def remove_created(self) -> None:
        """After a start that failed before training, *while holding the folder's lock*: remove
        what this process created in the folder, provided that is only start-up files
        (``.hydra/``, logs). The folders themselves go with :meth:`remove_folders`, once the
        lock is released."""
        if _rank() != 0 or not self.folder.is_dir():
            return
        created = [
            e
            for e in self.folder.iterdir()
            if e.name != LOCK_NAME and (self.entries is None or e.name not in self.entries)
        ]
        if not all(_startup_file(e) for e in created):
            return  # training wrote something: keep everything
        for entry in created:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        self.cleared = True

    def remove_folders(self) -> None:
        """After :meth:`remove_created` and the lock's release: the folders this process created,
        from the run folder up to :attr:`top`, each only while it is empty."""
        if not self.cleared or self.top is None:
            return
        folder = self.folder
        while True:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                return
            if folder == self.top:
                return
            folder = folder.parent


#: :class:`FolderStart` records made before Hydra set up a run folder, by absolute path.
_STARTS: dict[str, FolderStart] = {}


class RecordRunStart(Callback):
    """Hydra callback: the run folder as it was before Hydra created it and wrote ``.hydra/``
    and the log into it (:class:`FolderStart`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            HydraConfig.instance().set_config(config)  # as run_job does next, for ${hydra:...}
            folder = str(OmegaConf.select(config, "hydra.run.dir"))
        except Exception:  # the folder cannot be told: the task records it as it finds it
            return
        start = FolderStart.now(folder)
        _STARTS[str(start.folder)] = start


def check_writable(run_dir: Path) -> None:
    """Fail before any compute when the run folder cannot be written."""
    if _rank() != 0:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = (
            "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror
        )
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({reason}); choose a writable place with "
            "hydra.run.dir=... (or paths.output_dir=...)."
        ) from exc


def remove_stale_temporaries(lock: RunLock) -> list[Path]:
    """Remove the temporary files that killed writes left in the run's ``checkpoints/`` (only
    names of :func:`~sr_cli.serialization.atomic_write`'s pattern), provided this process holds
    the folder's ``lock``: then no other process is writing there. Returns what was removed."""
    folder = lock.path.parent / "checkpoints"
    if not lock.held or not folder.is_dir():
        return []
    stale = [
        p
        for p in sorted(folder.iterdir())
        if is_atomic_temporary(p.name) and p.is_file() and not p.is_symlink()
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.warning(
            "removed %d temporary file(s) of checkpoint writes that were killed: %s",
            len(stale),
            ", ".join(p.name for p in stale),
        )
    return stale
