"""Safe, atomic reading and writing of torch files (a leaf module: no Lightning import).

* Writes go to a temporary file in the target folder (``.<name>.<8 random chars>.tmp``), are
  flushed and fsync'ed, then renamed over the destination with ``os.replace``, and the folder is
  fsync'ed so that the rename itself survives a power cut: a crash leaves either the old or the
  new file, never a truncated one. A write killed mid-way leaves its temporary file, which
  :func:`is_atomic_temporary` recognises (the next run of a folder removes them).
* Reads use ``torch.load(weights_only=True)``: a checkpoint cannot execute code when loaded.
  Checkpoints written by sr-cli contain only tensors and plain Python values, so they load.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from sr_cli.errors import CheckpointError


def _no_space(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(
        f"no space left on {path.parent} while writing {path.name} ({exc.strerror}); the previous "
        "checkpoints are intact. Free some space (or point paths.output_dir elsewhere) and resume "
        "with resume=auto."
    )


#: The name of :func:`atomic_write`'s temporary file: ``.<name>.`` + tempfile's 8 random
#: characters + ``.tmp``.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def is_atomic_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of an :func:`atomic_write` (left by one that was
    killed, once no process writes in that folder)."""
    return _TEMPORARY.fullmatch(name) is not None


def fsync_folder(folder: str | Path) -> None:
    """fsync a folder, so that a rename in it is on disk; filesystems that refuse to fsync a
    folder (EINVAL, and the like) are let be."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder that cannot be opened (another platform): nothing more can be done
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: a crash or a full disk leaves the old file (or none), never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(exc)
        if full is not None:
            raise _no_space(path, full) from exc
        raise
    fsync_folder(path.parent)


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The ENOSPC error behind ``exc`` (torch.save reports it as a RuntimeError whose context
    is the OSError), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        if "No space left on device" in str(exc):
            return OSError(errno.ENOSPC, "No space left on device")
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + rename)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """A ``.safetensors`` file written atomically."""
    from safetensors.torch import save

    atomic_write(path, lambda f: f.write(save(tensors, metadata=metadata)))


def atomic_link(source: str | Path, dest: str | Path) -> None:
    """Make ``dest`` the same file as ``source`` (a hard link, else a copy), replacing it
    atomically: readers see the old or the new file, never a partial one."""
    import shutil

    source, dest = Path(source), Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    fsync_folder(dest.parent)


def is_readable_checkpoint(path: str | Path) -> str | None:
    """``None`` when ``path`` opens as a torch zip checkpoint (without reading its tensors),
    else the reason it does not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"member {bad} is corrupt"
    except (OSError, zipfile.BadZipFile) as exc:
        return str(exc) or type(exc).__name__


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist. Check the path (resume=..., model.pretrained=...)."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError for corrupt zips, ...
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects that cannot be loaded safely "
                f"(weights_only=True refused: {str(exc).splitlines()[0]}); loading it would run code. "
                "If you trust its source, re-save just its tensors, e.g. "
                "torch.save(torch.load(p, weights_only=False)['params'], 'clean.pth'), or convert "
                "it to .safetensors."
            ) from exc
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: {exc}"
        ) from exc
