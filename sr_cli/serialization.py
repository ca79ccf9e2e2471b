"""Safe, atomic reading and writing of files (a ground module: no Lightning import).

* Destinations are checked first (:func:`check_output_file`, :func:`check_output_dir`): one that
  exists and is not a regular file (a device such as ``/dev/full``, a FIFO, a folder) is refused,
  never replaced, and a folder that cannot be written is named before anything is computed.
* Writes go to a temporary file in the target folder, are flushed and fsync'ed, then renamed
  over the destination with ``os.replace``: a crash leaves either the old or the new file,
  never a truncated one.
* Reads use ``torch.load(weights_only=True)``: a checkpoint cannot execute code when loaded.
  Checkpoints written by sr-cli contain only tensors and plain Python values, so they load.
  A file that does not load is described in words (empty, not a zip archive or pickle, a
  damaged zip, ...), and the values sr-cli stores under ``checkpoint["sr_cli"]`` are checked
  for their types when the file is opened (:func:`check_checkpoint_meta`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sr_cli.errors import CheckpointError, ConfigError, one_line


# ----------------------------------------------------------------------- what a path is
def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def file_problem(path: str | Path) -> str | None:
    """``None`` when ``path`` is a regular file (or a link to one), else what it is, in words:
    ``"does not exist"``, ``"is a folder, not a regular file"``, ``"is a symbolic link to
    '/dev/zero', a character device, not a regular file"``, ..."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (to {os.readlink(path)!r})"
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    via = f"is a symbolic link to {os.readlink(path)!r}, " if path.is_symlink() else "is "
    return f"{via}{_kind(mode)}, not a regular file"


def check_output_dir(folder: str | Path, what: str = "output folder") -> Path:
    """Refuse, before anything is computed, a folder that cannot be created or written.

    Nothing is created: the nearest existing folder on the way is probed with a temporary
    file. ``what`` names the option in the message (``-o``, ``hydra.run.dir``, ...).

    Raises:
        ConfigError: a part of the path is not a folder, or the folder is not writable.
    """
    folder = Path(folder)
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        mode = os.stat(probe).st_mode
    except OSError as exc:
        raise ConfigError(
            f"{what} {str(folder)!r}: {str(probe)!r} cannot be read ({exc.strerror})."
        ) from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(
            f"{what} {str(folder)!r}: {str(probe)!r} is {_kind(mode)}, not a folder; "
            "choose another output folder."
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sr-cli-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        read_only = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        reason = "read-only" if read_only else f"not writable ({exc.strerror})"
        if probe == folder:
            message = f"cannot write to {what} {str(folder)!r}: it is {reason}"
        else:
            message = f"cannot create {what} {str(folder)!r}: {str(probe)!r} is {reason}"
        raise ConfigError(f"{message}; choose a writable folder.") from None
    return folder


def check_output_file(path: str | Path, what: str = "output file", folder: bool = True) -> Path:
    """Refuse, before anything is computed, a destination that exists and is not a regular
    file (a device such as ``/dev/full``, a FIFO, a folder: replacing it would destroy it, and
    writing into it would hang or lose the output), or (with ``folder``) whose folder cannot
    be written.

    Raises:
        ConfigError: one line naming ``what`` (the option) and ``path``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be checked ({exc.strerror}).") from None
    if mode is not None and not stat.S_ISREG(mode):
        via = f"a symbolic link to {os.readlink(path)!r}, " if path.is_symlink() else ""
        hint = (
            "give a file name inside it, or a new file name"
            if stat.S_ISDIR(mode)
            else "give a new file name"
        )
        raise ConfigError(
            f"{what} {str(path)!r} is {via}{_kind(mode)}, not a regular file; sr-cli writes "
            f"regular files only and never replaces anything else: {hint}."
        )
    if folder:
        check_output_dir(path.parent, f"the folder of {what}")
    return path


def _no_space(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(
        f"no space left on {path.parent} while writing {path.name} ({exc.strerror}); the previous "
        "checkpoints are intact. Free some space (or point paths.output_dir elsewhere) and resume "
        "with resume=auto."
    )


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: a crash or a full disk leaves the old file (or none), never a truncated one."""
    path = Path(path)
    check_output_file(path, folder=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space(path, exc) from exc
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ConfigError(
                f"cannot write {str(path)!r}: its folder is read-only ({exc.strerror}); choose "
                "a writable folder."
            ) from exc
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


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


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
    check_output_file(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def is_readable_checkpoint(path: str | Path) -> str | None:
    """``None`` when ``path`` opens as a torch zip checkpoint (without reading its tensors),
    else the reason it does not."""
    import zipfile

    problem = file_problem(path)
    if problem is not None:
        return f"it {problem}"
    if Path(path).stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"member {bad} is corrupt"
    except (OSError, zipfile.BadZipFile) as exc:
        return one_line(exc)


#: First bytes of a zip archive (torch's format since 1.6) and of a pickle (protocol 2-5).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _torch_reason(exc: BaseException) -> str:
    """What torch says went wrong, on one line, without its advice about ``weights_only``."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = re.split(r"Please use `torch\.serialization|Check the documentation", text)[0]
    return one_line(text) or one_line(exc)


def _load_failure(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a file that ``torch.load(weights_only=True)`` refused, in words."""
    reason = _torch_reason(exc)
    if "Unsupported global" in reason:
        return CheckpointError(
            f"checkpoint {str(path)!r} contains Python objects that cannot be loaded safely "
            f"(weights_only=True refused: {reason}); loading it would run code. "
            "If you trust its source, re-save just its tensors, e.g. "
            "torch.save(torch.load(p, weights_only=False)['params'], 'clean.pth'), or convert "
            "it to .safetensors."
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _ZIP_MAGIC:
        what = "a damaged or truncated zip archive"
    elif _is_pickle(head):
        what = "a pickle that is truncated, damaged or not a PyTorch checkpoint"
    else:
        what = "not a PyTorch file"
    return CheckpointError(
        f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: {what} "
        f"({path.stat().st_size} bytes; torch.load: {reason}). Use a .ckpt written by sr-train or "
        "published .pth/.safetensors weights."
    )


def _check_readable(path: Path) -> None:
    """Refuse, in words and before ``torch.load``, what is not a regular file, an empty file
    and one that is neither a zip archive nor a pickle."""
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} {problem}. Check the path (resume=..., "
            "model.pretrained=..., the checkpoint argument)."
        )
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: empty file (0 bytes). "
            "It was not written completely; use another checkpoint."
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] not in _ZIP_MAGIC and not _is_pickle(head):
        shown = head.decode("latin-1")
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: not a zip archive or "
            f"pickle ({size} bytes; first bytes {head.hex(' ')}, {shown!r}). Use a .ckpt written "
            "by sr-train or published .pth/.safetensors weights."
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping_or_none(value: Any) -> bool:
    return value is None or isinstance(value, Mapping)


#: The values sr-train stores under ``checkpoint["sr_cli"]``: key -> (check, what it must be).
META_TYPES: dict[str, tuple[Any, str]] = {
    "scale": (_positive_int, "a positive integer"),
    "iteration": (_count, "an integer >= 0"),
    "skipped_steps": (_count, "an integer >= 0"),
    "scaler_skipped_steps": (_count, "an integer >= 0"),
    "ema": (lambda v: isinstance(v, bool), "true or false"),
    "name": (lambda v: v is None or isinstance(v, str), "a string"),
    "adversarial_terms": (
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        "a list of term names",
    ),
    "model": (_mapping_or_none, "a mapping"),
    "degradation": (_mapping_or_none, "a mapping"),
    "loss": (_mapping_or_none, "a mapping"),
    "optim": (_mapping_or_none, "a mapping"),
}


def check_checkpoint_meta(obj: Any, path: str | Path) -> None:
    """Check the types of what sr-train stores under ``obj["sr_cli"]`` (scale, iteration, run
    name, the stored configs), so that a damaged or crafted file is refused with one line when
    it is opened, not deep inside a command (``int('${oc.env:HOME}')``). Files without an
    ``sr_cli`` entry (published weights) pass; unknown keys are ignored.

    Raises:
        CheckpointError: naming the file, the key, its value and what it must be.
    """
    if not isinstance(obj, Mapping) or "sr_cli" not in obj:
        return
    meta = obj["sr_cli"]

    def refuse(key: str, value: Any, must: str) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged or was not written by sr-train: its stored "
            f"{key} is {shown} ({type(value).__name__}), not {must}. Use a checkpoint written "
            "by sr-train."
        )

    if not isinstance(meta, Mapping):
        refuse("sr_cli", meta, "a mapping")
    for key, (ok, must) in META_TYPES.items():
        if key in meta and not ok(meta[key]):
            refuse(f"sr_cli.{key}", meta[key], must)
    model = meta.get("model")
    if isinstance(model, Mapping) and not _mapping_or_none(model.get("generator")):
        refuse("sr_cli.model.generator", model.get("generator"), "a mapping")


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file, say in words what is
    wrong with it and how to fix it; the stored sr-cli values are type-checked
    (:func:`check_checkpoint_meta`)."""
    path = Path(path)
    _check_readable(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError for corrupt zips, ...
        raise _load_failure(path, exc) from exc
    check_checkpoint_meta(obj, path)
    return obj
