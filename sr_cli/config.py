"""Where the Hydra configs live, the custom resolvers, and the ``a+b`` override shorthand."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from sr_cli.data import demo_weights, sample_dir

#: Config groups that may select several members at once (``loss=[l1,gan]``,
#: ``logger=[wandb,tensorboard]``).
LIST_GROUPS = ("loss", "logger")


#: The configs ship inside the package (``sr_cli/conf``; the repository's top-level ``conf`` is a
#: symlink to it), so an editable install, ``pip install .`` and a wheel all find them.
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def config_dir() -> Path:
    """The configs: ``$SR_CLI_CONFIG_DIR`` if set (a complete replacement), else the package's
    ``sr_cli/conf``. To add or override single configs, use Hydra's ``--config-dir DIR``."""
    env = os.environ.get("SR_CLI_CONFIG_DIR")
    path = Path(env).expanduser() if env else PACKAGE_CONFIG_DIR
    if not (path / "train.yaml").is_file():
        if env:
            raise FileNotFoundError(
                f"SR_CLI_CONFIG_DIR={env} holds no train.yaml; unset it to use the configs "
                "installed with sr-cli, or point it at a complete copy of them."
            )
        raise FileNotFoundError(
            f"sr-cli configs not found in {path}: the installation is incomplete; reinstall "
            "sr-cli (pip install --force-reinstall sr-cli, or make install in a clone)."
        )
    return path


def register_resolvers() -> None:
    """``${sr_samples:train}`` -> absolute path of the bundled training images;
    ``${sr_run_name:}`` / ``${sr_run_name:base}`` -> the run's name (see :func:`run_name`)."""
    if not OmegaConf.has_resolver("sr_samples"):
        OmegaConf.register_new_resolver("sr_samples", sample_dir)
    # ${sr_demo_weights:${model.name},${model.preset},${scale}} -> bundled warm start or null.
    if not OmegaConf.has_resolver("sr_demo_weights"):
        OmegaConf.register_new_resolver("sr_demo_weights", demo_weights)
    if not OmegaConf.has_resolver("sr_run_name"):
        OmegaConf.register_new_resolver(
            "sr_run_name", lambda part="", *, _root_: run_name(_root_, part)
        )


#: Overrides that never appear in a run name (they change where or how fast, not what).
NAME_EXCLUDED = (
    "experiment",
    "debug",
    "hparams_search",
    "name",
    "resume",
    "init_from",
    "hydra",
    "trainer",
    "logger",
    "paths",
    "callbacks",
    "data.num_workers",
    "val.save_images",
    "model",
    "loss",
    "degradation",
)


def safe_name(text: str) -> str:
    """A folder- and override-safe form of ``text``: ``loss=[a,b]`` -> ``loss-a+b``."""
    text = re.sub(r"[\[\]'\"]", "", text).replace("=", "-").replace(",", "+").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text).strip("._") or "run"


def _choice(group: str) -> str | None:
    """The member of config group ``group`` that Hydra picked for this run (``None`` outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except Exception:
        return None


#: Set by ``sr-train -m``: the keys the command line sweeps over (a job's name shows only them).
SWEEP_KEYS_ENV = "SR_CLI_SWEEP_KEYS"
_SWEEP_VALUE = re.compile(r"^(choice|range|interval|glob|shuffle|sort|tag)\(")


def sweep_keys(args: list[str]) -> list[str]:
    """The keys of command-line overrides that sweep (``a=1,2``, ``a=choice(..)``, ``loss=[a],[b]``)."""
    keys = []
    for arg in args:
        m = _LIST_OVERRIDE.match(arg)
        if not m:
            continue
        value = m.group("value").strip()
        if _SWEEP_VALUE.match(value) or len(_split_outside_brackets(value)) > 1:
            keys.append(m.group("key"))
    return keys


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``sr-train -m``; ``False`` outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def _job_overrides() -> list[str]:
    """The overrides that set the current Hydra sweep job apart: the swept keys of the command
    line and of the sweeper's config (``[]`` outside a sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return []
        swept = {k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k}
        swept |= set((OmegaConf.select(hc, "sweeper.params", default=None) or {}).keys())
        overrides = [str(o) for o in hc.overrides.task]
        if not swept:
            return overrides
        return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    except Exception:
        return []


def run_name(cfg, part: str = "") -> str:
    """The run's name: ``name=`` when given, else ``<model>_<loss terms>[_<degradation>]``
    (``esrgan_downsample+gan``); a sweep job adds the overrides that set it apart
    (``esrgan_l1_loss.l1.weight-0.1``). Only characters that are safe in paths and overrides.

    ``part="base"``: without the sweep job's overrides; ``part="sweep"``: the sweep folder's
    name (``name=`` when given, else ``sweep``)."""
    given = cfg.get("name")
    if part == "sweep":
        return safe_name(str(given)) if given else "sweep"
    if given:
        base = safe_name(str(given))
    else:
        model = OmegaConf.select(cfg, "model.name", default=None) or "model"
        losses = "+".join(k for k, v in (cfg.get("loss") or {}).items() if v is not None)
        deg = _choice("degradation")
        parts = [str(model), losses or "noloss"]
        if deg and deg != "bicubic":
            parts.append(str(deg))
        base = safe_name("_".join(parts))
    if part == "base":
        return base
    extra = []
    for override in _job_overrides():
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == k or key.startswith(k + ".") for k in NAME_EXCLUDED) and not (
            key.startswith("loss.") or key.startswith("model.") or key.startswith("degradation.")
        ):
            continue
        extra.append(safe_name(override))
    return "_".join([base, *extra])


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


def user_config_dirs(args: list[str]) -> list[Path]:
    """The config folders a command line adds to the package's: Hydra's ``--config-dir DIR``
    (``-cd DIR``, ``--config-dir=DIR``) and the ``file://`` / ``pkg://`` entries of
    ``hydra.searchpath=[...]``. Hydra searches them after the package's configs, so they add
    members (``DIR/model/my_model.yaml`` -> ``model=my_model``)."""
    import importlib.util

    dirs: list[Path] = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]).expanduser())
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]).expanduser())
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            for entry in re.split(r"[\[\],]", arg.split("=", 1)[1]):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://") :]).expanduser())
                elif entry.startswith("pkg://"):
                    try:
                        spec = importlib.util.find_spec(entry[len("pkg://") :])
                    except (ImportError, ValueError):
                        spec = None
                    dirs += [Path(p) for p in (spec and spec.submodule_search_locations) or []]
    return dirs


def group_options(group: str, extra_dirs: list[Path] | tuple[Path, ...] = ()) -> list[str]:
    """Names of the members of a config group (``conf/<group>/*.yaml``), with those of the
    user's config folders ``extra_dirs`` (:func:`user_config_dirs`)."""
    folders = [config_dir(), *extra_dirs]
    return sorted({p.stem for folder in folders for p in (Path(folder) / group).glob("*.yaml")})


def unknown_list_members(args: list[str], groups: tuple[str, ...] = LIST_GROUPS) -> str | None:
    """Hydra's message for a bad member of a multi-select group, which Hydra itself gives without
    the list of options (``Could not load 'loss/nope'``). Returns ``None`` when all exist."""
    extra = user_config_dirs(args)
    for arg in args:
        m = _LIST_OVERRIDE.match(arg)
        if not m or m.group("key") not in groups or m.group("prefix") == "~":
            continue
        value = m.group("value")
        if "(" in value:
            continue
        names = [n.strip() for n in re.split(r"[\[\],+]", value) if n.strip() not in ("", "null")]
        known = group_options(m.group("key"), extra)
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


class OutputDirCheck(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): before Hydra creates the run folder
    (``hydra.run.dir``) or the sweep folder (``hydra.sweep.dir``), check that it can be created
    and written. Hydra's own ``mkdir`` would fail with a traceback before sr-train's (or
    sr-eval's) task runs; here a read-only place is one line naming the folder, exit status 2,
    and nothing is created."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config, key: str) -> None:
        from sr_cli.errors import exit_on_user_error
        from sr_cli.serialization import check_output_dir

        try:
            folder = OmegaConf.select(config, key)
            prog = f"sr-{OmegaConf.select(config, 'hydra.job.config_name') or 'train'}"
        except Exception:  # noqa: BLE001 - Hydra reports a folder it cannot resolve itself
            return
        if folder:
            with exit_on_user_error(prog):
                check_output_dir(str(folder), key)
