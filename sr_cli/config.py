"""Where the Hydra configs live, the custom resolvers, and the ``a+b`` override shorthand."""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from sr_cli.data import demo_weights, sample_dir

#: Config groups that may select several members at once (``loss=[l1,gan]``).
LIST_GROUPS = ("loss",)


def config_dir() -> Path:
    """The ``conf/`` folder: ``$SR_CLI_CONFIG_DIR`` if set, else the one next to the package."""
    env = os.environ.get("SR_CLI_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"sr-cli configs not found in {path}. Install the project editable (`make install`) or "
            "point SR_CLI_CONFIG_DIR at its conf/ folder."
        )
    return path


def register_resolvers() -> None:
    """``${sr_samples:train}`` -> absolute path of the bundled training images."""
    if not OmegaConf.has_resolver("sr_samples"):
        OmegaConf.register_new_resolver("sr_samples", sample_dir)
    # ${sr_demo_weights:${model.name},${model.preset},${scale}} -> bundled warm start or null.
    if not OmegaConf.has_resolver("sr_demo_weights"):
        OmegaConf.register_new_resolver("sr_demo_weights", demo_weights)


_LIST_OVERRIDE = re.compile(
    r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.@/]*)=(?P<value>.*)$", re.S
)


def _as_list(value: str) -> str:
    value = value.strip()
    if value.startswith("[") or not value:
        return value
    return "[" + ",".join(v.strip() for v in value.split("+")) + "]"


def rewrite_list_override(arg: str, groups: tuple[str, ...] = LIST_GROUPS) -> str:
    """Rewrite the ``a+b`` shorthand of a multi-select group into Hydra's list syntax.

    ``loss=downsample+gan`` -> ``loss=[downsample,gan]``; ``loss=l1`` -> ``loss=[l1]``;
    sweeps keep their commas: ``loss=l1,downsample+gan`` -> ``loss=[l1],[downsample,gan]``.
    Values already in list or sweep-function form (``[..]``, ``choice(..)``) are left alone.

    Examples:
        >>> rewrite_list_override("loss=downsample+gan")
        'loss=[downsample,gan]'
        >>> rewrite_list_override("loss=l1,downsample+gan")
        'loss=[l1],[downsample,gan]'
    """
    m = _LIST_OVERRIDE.match(arg)
    if not m or m.group("key") not in groups or m.group("prefix") == "~":
        return arg
    value = m.group("value").strip()
    if not value or "(" in value or value in ("null", "[]"):
        return arg
    parts = _split_outside_brackets(value)
    return f"{m.group('prefix')}{m.group('key')}=" + ",".join(_as_list(p) for p in parts)


def _split_outside_brackets(value: str) -> list[str]:
    """Split a sweep value on the commas that are not inside ``[...]``."""
    parts, depth, current = [], 0, ""
    for ch in value:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def group_options(group: str) -> list[str]:
    """Names of the members of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def unknown_list_members(args: list[str], groups: tuple[str, ...] = LIST_GROUPS) -> str | None:
    """Hydra's message for a bad member of a multi-select group, which Hydra itself gives without
    the list of options (``Could not load 'loss/nope'``). Returns ``None`` when all exist."""
    for arg in args:
        m = _LIST_OVERRIDE.match(arg)
        if not m or m.group("key") not in groups or m.group("prefix") == "~":
            continue
        value = m.group("value")
        if "(" in value:
            continue
        names = [n.strip() for n in re.split(r"[\[\],+]", value) if n.strip() not in ("", "null")]
        known = group_options(m.group("key"))
        for name in names:
            if name not in known:
                listing = "".join(f"\t{k}\n" for k in known)
                return (
                    f"Could not find '{m.group('key')}/{name}'\n\n"
                    f"Available options in '{m.group('key')}':\n{listing}"
                )
    return None


def rewrite_overrides(args: list[str]) -> list[str]:
    """Apply :func:`rewrite_list_override` to every command-line override."""
    return [rewrite_list_override(a) for a in args]
