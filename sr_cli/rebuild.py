"""Rebuild networks and degradations from configs stored in files, through an allow-list.

A checkpoint written by ``sr-train`` stores the resolved ``model``, ``degradation`` and
``loss`` configs, so the other commands need nothing but the file. Such a config is *data*:
handing it to Hydra's ``instantiate`` would let a crafted checkpoint (one that still loads
with ``weights_only=True``) call anything importable, e.g. ``_target_: pathlib.Path.touch``,
``builtins.open`` or ``os.system``. :func:`rebuild` builds it with its own small builder
instead, after checking *every* ``_target_`` in the tree (nested nodes, ``_args_``, lists,
``_partial_`` nodes):

* the dotted path must lie inside one of :data:`ALLOWED_PACKAGES` (``sr_cli.models``,
  ``sr_cli.degradations``), with no private (``_``) component; only modules inside those
  packages are ever imported while resolving it;
* the object it resolves to must be a class or a plain function *defined* there: its
  ``__module__`` is in an allowed package, its ``__qualname__`` is a top-level, public name,
  and that module really holds it under that name. ``sr_cli.models.pretrained.Path.touch``
  (a stdlib class imported there), ``sr_cli.models.x.os.system`` and methods such as
  ``sr_cli.models.edsr.EDSR.load_state_dict`` are refused;
* or it is one of the harmless building blocks listed in :data:`ALLOWED_EXTRA`.

Anything else raises :class:`~sr_cli.errors.CheckpointError`, one line naming the file, the
config and the refused target, before anything is built. Nothing is interpolated: ``${...}``
strings stay plain strings. Configs the user composes for ``sr-train`` keep going through
Hydra's ``instantiate``; only configs read back from files come here.

This is a leaf module: it imports the allowed packages by name, on demand, and nothing else
of sr-cli but the error classes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from sr_cli.errors import CheckpointError

#: Packages whose own classes and factories a stored config may name.
ALLOWED_PACKAGES: tuple[str, ...] = ("sr_cli.models", "sr_cli.degradations")

#: Other harmless building blocks a stored config may name, by exact dotted path.
ALLOWED_EXTRA: frozenset[str] = frozenset(
    f"torch.nn.{name}"
    for name in (
        "ELU",
        "GELU",
        "Identity",
        "LeakyReLU",
        "Mish",
        "PReLU",
        "ReLU",
        "SiLU",
        "Sigmoid",
        "Tanh",
    )
)

#: Targets renamed since an earlier sr-cli wrote them into checkpoints: old path -> (new path,
#: keyword arguments the old class implied). Applied before the allow-list check.
RENAMED: dict[str, tuple[str, dict[str, Any]]] = {
    "sr_cli.degradations.resize.BicubicDownsample": (
        "sr_cli.degradations.pipeline.ResizeDownsample",
        {"mode": "bicubic"},
    ),
    "sr_cli.degradations.resample.ResizeDownsample": (
        "sr_cli.degradations.pipeline.ResizeDownsample",
        {},
    ),
}


def migrate(node: Any) -> Any:
    """A copy of a stored config tree with renamed targets (:data:`RENAMED`) brought up to date."""
    if isinstance(node, Mapping):
        out = {k: migrate(v) for k, v in node.items()}
        renamed = RENAMED.get(out.get("_target_")) if isinstance(out.get("_target_"), str) else None
        if renamed is not None:
            out["_target_"] = renamed[0]
            for key, value in renamed[1].items():
                out.setdefault(key, value)
        return out
    if _is_list(node):
        return [migrate(v) for v in node]
    return node


#: Keys with a meaning to Hydra; the others are keyword arguments.
RESERVED_KEYS = frozenset({"_target_", "_args_", "_partial_", "_convert_", "_recursive_"})

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class _Refused(Exception):
    """Internal: why a target is refused (turned into a CheckpointError with the context)."""


def _in_allowed_package(name: str) -> str | None:
    for pkg in ALLOWED_PACKAGES:
        if name == pkg or name.startswith(pkg + "."):
            return pkg
    return None


def _is_package(module: ModuleType) -> bool:
    return hasattr(module, "__path__")


def _resolve_allowed(target: str, pkg: str) -> Any:
    """Walk ``target`` from ``pkg``: submodules (of allowed packages only), then attributes."""
    parts = target.split(".")
    start = len(pkg.split("."))
    if any(p.startswith("_") for p in parts[start:]):
        raise _Refused("a private or special name is part of the path")
    obj: Any = importlib.import_module(pkg)
    for part in parts[start:]:
        if isinstance(obj, ModuleType):
            sub = f"{obj.__name__}.{part}"
            if (
                _is_package(obj)
                and _in_allowed_package(sub)
                and importlib.util.find_spec(sub) is not None
            ):
                obj = importlib.import_module(sub)
                continue
        # Class attributes are looked up statically: no descriptor or property runs.
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            raise _Refused("it does not exist in this version of sr-cli") from None
    return obj


def _check_defined_here(obj: Any) -> None:
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise _Refused(f"it is a {type(obj).__name__}, not a class or factory function")
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not isinstance(module, str) or not _in_allowed_package(module):
        raise _Refused(f"it is {module}.{qualname}, defined outside {', '.join(ALLOWED_PACKAGES)}")
    if "." in qualname or qualname.startswith("_"):
        raise _Refused(f"{module}.{qualname} is not a public top-level class or factory")
    home = sys.modules.get(module)
    if home is None or inspect.getattr_static(home, qualname, None) is not obj:
        raise _Refused(f"{module}.{qualname} is not what its module defines under that name")


def resolve_target(target: Any) -> Any:
    """The class or factory an allowed ``_target_`` names; raises ``_Refused`` otherwise."""
    if not isinstance(target, str) or not _DOTTED.match(target):
        raise _Refused("it is not a dotted Python name")
    if target in ALLOWED_EXTRA:
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)
    pkg = _in_allowed_package(target)
    if pkg is None or target == pkg:
        raise _Refused(f"only classes and factories of {', '.join(ALLOWED_PACKAGES)} may be built")
    obj = _resolve_allowed(target, pkg)
    _check_defined_here(obj)
    return obj


def _is_list(node: Any) -> bool:
    return isinstance(node, Sequence) and not isinstance(node, (str, bytes, bytearray))


def _walk(node: Any, where: str, found: dict[str, Any], refuse) -> None:
    """Check every ``_target_`` under ``node``; resolved ones are collected in ``found``."""
    if isinstance(node, Mapping):
        for key in node:
            if not isinstance(key, str):
                refuse(where, f"key {key!r} is not a string", None)
        if "_target_" in node:
            target = node["_target_"]
            try:
                found[target] = resolve_target(target)
            except _Refused as why:
                refuse(where, str(why), target)
            except Exception as exc:  # an allowed module failed to import
                refuse(where, f"{type(exc).__name__}: {exc}", target)
            if "_partial_" in node and not isinstance(node["_partial_"], bool):
                refuse(where, "_partial_ is not true/false", target)
            if "_args_" in node and not _is_list(node["_args_"]):
                refuse(where, "_args_ is not a list", target)
        elif "_args_" in node or "_partial_" in node:
            refuse(where, "_args_/_partial_ without a _target_", None)
        for key, value in node.items():
            _walk(value, f"{where}.{key}" if where else str(key), found, refuse)
    elif _is_list(node):
        for i, value in enumerate(node):
            _walk(value, f"{where}[{i}]", found, refuse)


def _build(node: Any, found: dict[str, Any]) -> Any:
    """Instantiate a checked tree bottom-up, as ``instantiate(..., _convert_="all")`` would."""
    if isinstance(node, Mapping):
        if "_target_" not in node:
            return {k: _build(v, found) for k, v in node.items()}
        recursive = node.get("_recursive_", True) is not False
        sub = (lambda v: _build(v, found)) if recursive else (lambda v: v)
        args = [sub(a) for a in node.get("_args_", ())]
        kwargs = {k: sub(v) for k, v in node.items() if k not in RESERVED_KEYS}
        fn = found[node["_target_"]]
        if node.get("_partial_", False):
            return functools.partial(fn, *args, **kwargs)
        return fn(*args, **kwargs)
    if _is_list(node):
        return [_build(v, found) for v in node]
    return node


def _refuser(source: str | Path, what: str):
    def refuse(where: str, why: str, target: Any) -> None:
        at = f" at {where}" if where else ""
        named = f"_target_: {target}" if target is not None else "a node"
        raise CheckpointError(
            f"{str(source)!r}: refusing to build its stored {what} config ({named}{at}: {why}); "
            "a stored config may only name sr-cli's own models and degradations and never runs "
            "other code. Use a checkpoint written by sr-train."
        )

    return refuse


def check_stored_config(node: Any, source: str | Path, what: str) -> dict[str, Any]:
    """Check a stored config tree without building it; returns the resolved targets.

    Raises:
        CheckpointError: a ``_target_`` outside the allow-list, or a malformed node, naming
            ``source`` (the file it came from) and ``what`` (``model``, ``degradation``, ...).
    """
    refuse = _refuser(source, what)
    if not isinstance(node, Mapping) or "_target_" not in node:
        refuse("", "it is not a mapping with a _target_", None)
    node = migrate(node)
    found: dict[str, Any] = {}
    _walk(node, "", found, refuse)
    return found


def rebuild(node: Any, source: str | Path, what: str) -> Any:
    """Build the object a stored config describes, if every target in it is allowed.

    Args:
        node: the stored config (plain dicts and lists, as read from a checkpoint).
        source: the file it was read from, for the error message.
        what: which config it is (``model``, ``degradation``, ``discriminator``).

    Raises:
        CheckpointError: see :func:`check_stored_config`; nothing has been built then.

    Example:
        >>> rebuild({"_target_": "sr_cli.degradations.pipeline.ResizeDownsample", "scale": 2},
        ...         "x.ckpt", "degradation").scale
        2
    """
    from sr_cli.errors import SrCliError, one_line

    node = migrate(node)
    found = check_stored_config(node, source, what)
    try:
        return _build(node, found)
    except SrCliError:
        raise
    except Exception as exc:  # a value of the wrong type or out of range: the file is damaged
        raise CheckpointError(
            f"{str(source)!r}: its stored {what} config does not build "
            f"({type(exc).__name__}: {one_line(exc)}); the file is damaged or was not written by "
            "this sr-cli. Use a checkpoint written by sr-train."
        ) from exc
