"""User-facing errors.

Every error a user can cause (a bad option, a bad file, a diverged loss) is raised as a
subclass of :class:`SrCliError`. The console entry points print its message, without a
traceback, and exit with status 2. The message always names the file or option at fault
and how to fix it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class SrCliError(Exception):
    """Base class of errors whose message is meant for the user."""


class ConfigError(SrCliError, ValueError):
    """An option has a value that cannot work (wrong scale, patch size, ...)."""


class DataError(SrCliError, ValueError):
    """An input image or folder is missing, corrupt, or unsuitable."""


class CheckpointError(SrCliError, ValueError):
    """A checkpoint or weight file is missing, unsafe or does not fit the model."""


class WeightsUnavailableError(SrCliError, FileNotFoundError):
    """Pretrained weights (VGG, LPIPS, ...) are not in the local cache and cannot be downloaded."""


class NonFiniteLossError(SrCliError, FloatingPointError):
    """A loss term, its gradient or the weights became NaN or Inf during training.

    ``checkpoint`` is where the last state verified finite is saved (``None``: not saved)."""

    def __init__(self, message: str, checkpoint=None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class OutOfMemory(SrCliError, MemoryError):
    """The accelerator ran out of memory; the message names the options that need less."""


#: Messages of out-of-memory errors that torch raises as plain ``RuntimeError`` (cuBLAS/cuDNN
#: workspaces, MPS, older torch versions); ``torch.OutOfMemoryError`` is matched by its class.
_OOM_PATTERN = re.compile(
    r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_(NOT_INITIALIZED|ALLOC_FAILED)"
)


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (CUDA, ROCm, MPS, cuBLAS, cuDNN)."""
    if exc is None or isinstance(exc, OutOfMemory):
        return False
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (torch.cuda.…)
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_PATTERN.search(str(exc)))


def out_of_memory_summary(exc: BaseException) -> str:
    """The first words of torch's message, e.g. ``CUDA out of memory (tried to allocate 2.00
    GiB)``: torch's own message goes on for several sentences."""
    text = str(exc.args[0]) if exc.args else str(exc)
    head = re.split(r"\.\s|\n", text.strip(), maxsplit=1)[0].rstrip(".") or "out of memory"
    tried = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]?i?B)", text)
    return f"{head} (tried to allocate {tried.group(1)})" if tried else head


def one_line(exc: BaseException | str) -> str:
    """The whole message of ``exc`` on one line (newlines and runs of blanks become one space);
    the exception's type name when it has no message, so a reason is never empty. Nothing is
    cut: a state-dict error keeps every key it lists."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException):
        if not text:
            return type(exc).__name__
        if isinstance(exc, (KeyError, IndexError, EOFError)):
            return f"{type(exc).__name__}: {text}"
    return text


def find_user_error(exc: BaseException | None) -> SrCliError | None:
    """The :class:`SrCliError` behind ``exc``, also when Hydra's ``instantiate`` wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SrCliError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Print a user error (also one wrapped by Hydra) as ``<prog>: error: ...`` and exit with 2;
    any other exception propagates with its traceback."""
    try:
        yield
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        print(f"{prog}: error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def exit_on_hydra_user_error() -> Iterator[None]:
    """Hydra prints its own user errors (an unknown config option, a malformed override, a
    missing config file) and exits with status 1; turn that exit into 2 like every other user
    error. Any other exit passes through unchanged."""
    from hydra.errors import CompactHydraException

    try:
        yield
    except SystemExit as stop:
        if stop.code == 1 and isinstance(stop.__context__, CompactHydraException):
            raise SystemExit(2) from None
        raise
