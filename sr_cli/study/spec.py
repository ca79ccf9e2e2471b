"""A study file: what it may say, how it is read, and what it is refused.

A study is a YAML file (``conf/study/NAME.yaml``, or any ``path/to/my.yaml``), plain data read
with OmegaConf, never composed by Hydra and never executed::

    claim: >                       # what the study tests, in words
      ...
    seed_idea: "000"               # optional: where the claim comes from
    common: [model=edsr_baseline, degradation=bicubic]     # sr-train overrides of every job
    presets:                        # sr-study NAME preset=cpu|full|smoke|...
      cpu:
        seeds: 3                    # training seeds per arm (sr-study ... seeds=N overrides)
        overrides: [trainer=cpu, data.patch_size=96, trainer.max_steps=1500]
        params: {finetune: 500}     # $finetune in any override of this preset
        eval: heldout               # evaluation images: a folder, heldout, or benchmark names
      full: {seeds: 3, overrides: [...], eval: [set5, set14, bsd100, urban100]}
    warm_starts:                    # trained once per seed, cached by the hash of their config
      psnr: ["loss=[l1]"]
      gan_base: {from: psnr, overrides: ["loss=[l1,gan]"]}
    arms:                           # what the claim compares; every arm runs every seed
      l1: {is: psnr}                # the warm start itself is an arm
      ds_scratch: ["loss=[downsample]"]
      ds_gan: {from: psnr, overrides: ["loss=[downsample,gan]"]}   # starts from its generator
      late: {continue: gan_base, overrides: [...]}   # continues its whole training state
    eval:
      metrics: [psnr_y, ssim_y, ...]
    criteria: [...]                 # see sr_cli.study.criteria
    sanity: [...]

``from: W`` starts the arm's generator from warm start W's final generator (new optimizer,
iteration 0), as ESRGAN's GAN stage starts from its PSNR-oriented generator. ``continue: W``
forks W's whole training state (generator, discriminator, optimizers, iteration) into the arm's
own folder (``init_from=``), so the arm continues W's training under its own recipe.

**A study file is data.** It is shared like a paper's protocol, so it may only choose
config-group options and set values. An override that names code (``_target_``, ``_args_``,
``_partial_``), anything under ``hydra``, paths and run control (``paths``, ``name``,
``resume``, ``init_from``), added ``callbacks``/``logger`` entries, a command-line flag, or a
``pipe:`` stream (a shell command) is refused with one line naming the study, the place and the
override. ``trust_study=true`` on the user's own ``sr-study`` command line lifts this. Arm,
warm-start and preset names are plain identifiers (``[A-Za-z0-9_.-]``, no leading dot), so no
run can be written outside the study's folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sr_cli.errors import ConfigError

#: Plain identifiers for arms, warm starts, presets and study names.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Keys of an override that name code for Hydra's ``instantiate``.
CODE_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
#: Top-level keys a study may not set: run control and Hydra itself.
FORBIDDEN_ROOTS = ("hydra", "paths", "name", "resume", "init_from", "trust_study")
#: Groups whose entries a study may not add to (they would run a callback or a logger).
NO_NEW_ENTRIES = ("callbacks", "logger")

DEFAULT_SEEDS = 3


def check_name(name: str, what: str, where: str) -> str:
    """A plain identifier (``[A-Za-z0-9_.-]``, no leading dot), or a one-line error."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{where}: {what} name {name!r} is not allowed; names are plain identifiers "
            "(letters, digits, '_', '.', '-'; no leading dot, no '/')"
        )
    return name


def untrusted_override(override: str) -> str | None:
    """Why a study file may not carry ``override`` (``None``: it may)."""
    text = str(override).strip()
    if text.startswith("-"):
        return "command-line flags are the user's own"
    key, eq, value = text.partition("=")
    if not eq:
        return "not a key=value override"
    prefix = re.match(r"^[+~]*", key).group(0)
    path = key[len(prefix) :].strip()
    parts = re.split(r"[./]", path)
    if any(p in CODE_KEYS for p in parts) or any(k in value for k in CODE_KEYS):
        return "it names code (_target_/_args_/_partial_)"
    if parts[0] in FORBIDDEN_ROOTS:
        return f"'{parts[0]}' is set by sr-study or by the user's own command line"
    if parts[0] in NO_NEW_ENTRIES and prefix.startswith("+"):
        return f"it adds a '{parts[0]}' entry (code that runs with the training)"
    if "pipe:" in value:
        return "a pipe: stream runs a shell command"
    return None


def check_overrides(overrides: Sequence[str], where: str, trusted: bool) -> list[str]:
    out = [str(o) for o in overrides]
    if trusted:
        return out
    for o in out:
        why = untrusted_override(o)
        if why:
            raise ConfigError(
                f"{where}: override {o!r} is refused ({why}); a study file only chooses "
                "config options and sets values. If you trust this file, pass trust_study=true "
                "on your own sr-study command line."
            )
    return out


@dataclass
class Preset:
    name: str
    overrides: list[str]
    seeds: int = DEFAULT_SEEDS
    params: dict[str, str] = field(default_factory=dict)
    eval: Any = None  # a folder, a registered set name, or a list of them (None: eval.dataset)


@dataclass
class Job:
    """A warm start or an arm: its overrides, and where it starts from."""

    name: str
    overrides: list[str]
    start_from: str | None = None  # warm start whose generator it starts from
    continues: str | None = None  # warm start whose whole state it continues
    is_warm: str | None = None  # the arm is this warm start itself

    @property
    def depends_on(self) -> str | None:
        return self.start_from or self.continues or self.is_warm


@dataclass
class Study:
    name: str
    path: Path
    claim: str
    common: list[str]
    presets: dict[str, Preset]
    warm_starts: dict[str, Job]
    arms: dict[str, Job]
    eval: dict[str, Any]
    criteria: list[dict]
    sanity: list[dict]
    optional_terms: dict[str, str]
    run_requires: dict[str, str]
    seed_idea: str = ""
    raw: DictConfig | None = None

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ConfigError(
                f"study {self.name!r} has no preset {name!r}; choose one of "
                f"{list(self.presets)} (preset=...)"
            )
        return self.presets[name]


def _as_list(node: Any, where: str) -> list[str]:
    if node is None:
        return []
    if isinstance(node, (list, tuple, ListConfig)):
        return [str(x) for x in node]
    raise ConfigError(f"{where}: expected a list of overrides, got {node!r}")


def _job(name: str, node: Any, where: str, trusted: bool, warm: Mapping[str, Any]) -> Job:
    check_name(name, "arm or warm-start", where)
    if node is None or isinstance(node, (list, tuple, ListConfig)):
        return Job(name, check_overrides(_as_list(node, where), f"{where} {name}", trusted))
    if not isinstance(node, (dict, DictConfig)):
        raise ConfigError(f"{where} {name}: expected a list of overrides or a mapping")
    node = dict(node)
    unknown = set(node) - {"overrides", "from", "continue", "is"}
    if unknown:
        raise ConfigError(
            f"{where} {name}: unknown key(s) {sorted(unknown)}; an arm has overrides, and at "
            "most one of from / continue / is"
        )
    refs = [k for k in ("from", "continue", "is") if node.get(k)]
    if len(refs) > 1:
        raise ConfigError(f"{where} {name}: use one of from / continue / is, not {refs}")
    for key in refs:
        if str(node[key]) not in warm:
            raise ConfigError(
                f"{where} {name}: {key}: {node[key]!r} is not a warm start of this study "
                f"(warm_starts: {list(warm)})"
            )
    if node.get("is") and node.get("overrides"):
        raise ConfigError(f"{where} {name}: an arm that *is* a warm start has no overrides")
    return Job(
        name,
        check_overrides(_as_list(node.get("overrides"), where), f"{where} {name}", trusted),
        start_from=str(node["from"]) if node.get("from") else None,
        continues=str(node["continue"]) if node.get("continue") else None,
        is_warm=str(node["is"]) if node.get("is") else None,
    )


def _preset(name: str, node: Any, where: str, trusted: bool) -> Preset:
    check_name(name, "preset", where)
    if node is None or isinstance(node, (list, tuple, ListConfig)):
        return Preset(name, check_overrides(_as_list(node, where), f"{where} {name}", trusted))
    node = dict(node)
    unknown = set(node) - {"overrides", "seeds", "params", "eval"}
    if unknown:
        raise ConfigError(
            f"{where} {name}: unknown key(s) {sorted(unknown)} (a preset has overrides, seeds, "
            "params, eval)"
        )
    seeds = node.get("seeds", DEFAULT_SEEDS)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{where} {name}: seeds={seeds!r} must be a positive integer")
    params = {str(k): str(v) for k, v in dict(node.get("params") or {}).items()}
    for k, v in params.items():
        check_overrides([f"{k}={v}"], f"{where} {name} params", trusted)
    ev = node.get("eval")
    if isinstance(ev, ListConfig):
        ev = [str(x) for x in ev]
    return Preset(
        name,
        check_overrides(_as_list(node.get("overrides"), where), f"{where} {name}", trusted),
        int(seeds),
        params,
        ev,
    )


def study_dir() -> Path:
    from sr_cli.config import config_dir

    return config_dir() / "study"


def study_names() -> list[str]:
    return sorted(p.stem for p in study_dir().glob("*.yaml"))


def resolve_study_path(name: str) -> Path:
    """``NAME`` -> ``conf/study/NAME.yaml``; a name ending in ``.yaml``/``.yml`` is a file."""
    if str(name).endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"study file {str(path)!r} does not exist")
        return path
    check_name(str(name), "study", "sr-study")
    path = study_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown study {name!r}; choose one of {study_names()} (conf/study/), or pass the "
            "path of your own study file (my_study.yaml)"
        )
    return path


def load_study(name: str, trusted: bool = False) -> Study:
    """Read and check a study file (see the module docstring)."""
    from sr_cli.study.criteria import check_criterion

    path = resolve_study_path(name)
    where = str(path)
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"{where}: not a readable YAML study file ({exc})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{where}: a study file is a mapping (claim, presets, arms, criteria)")
    arms_key = "arms" if "arms" in cfg else "runs"
    for key in ("claim", "presets", arms_key, "criteria"):
        if key not in cfg:
            raise ConfigError(f"{where}: the study has no {key!r} (see sr_cli/study/spec.py)")
    study_name = check_name(path.stem, "study", where)
    warm = dict(cfg.get("warm_starts") or {})
    warm_jobs = {
        str(k): _job(str(k), v, f"{where} warm_starts", trusted, warm) for k, v in warm.items()
    }
    for w in warm_jobs.values():
        if w.is_warm:
            raise ConfigError(f"{where} warm_starts {w.name}: a warm start cannot be 'is' another")
    _check_acyclic(warm_jobs, where)
    arms = {
        str(k): _job(str(k), v, f"{where} arms", trusted, warm)
        for k, v in dict(cfg[arms_key]).items()
    }
    clash = set(arms) & set(warm_jobs)
    if clash:
        raise ConfigError(f"{where}: {sorted(clash)} name both an arm and a warm start")
    presets = {
        str(k): _preset(str(k), v, f"{where} presets", trusted)
        for k, v in dict(cfg.presets).items()
    }
    criteria = [OmegaConf.to_container(c, resolve=False) for c in cfg.criteria]
    sanity = [OmegaConf.to_container(c, resolve=False) for c in (cfg.get("sanity") or [])]
    for crit in [*criteria, *sanity]:
        check_criterion(crit, where, [*arms, "bicubic"])
    ev = OmegaConf.to_container(cfg.eval, resolve=False) if cfg.get("eval") else {}
    return Study(
        name=study_name,
        path=path,
        claim=str(cfg.claim).strip(),
        common=check_overrides(_as_list(cfg.get("common"), where), f"{where} common", trusted),
        presets=presets,
        warm_starts=warm_jobs,
        arms=arms,
        eval=dict(ev),
        criteria=criteria,
        sanity=sanity,
        optional_terms={str(k): str(v) for k, v in dict(cfg.get("optional_terms") or {}).items()},
        run_requires={str(k): str(v) for k, v in dict(cfg.get("run_requires") or {}).items()},
        seed_idea=str(cfg.get("seed_idea") or ""),
        raw=cfg,
    )


def _check_acyclic(warm: Mapping[str, Job], where: str) -> None:
    for name in warm:
        seen, cur = [name], warm[name].depends_on
        while cur:
            if cur in seen:
                raise ConfigError(f"{where}: warm starts depend on each other in a circle: {seen}")
            seen.append(cur)
            cur = warm[cur].depends_on


# ---------------------------------------------------------------------------- overrides
def substitute(overrides: Sequence[str], params: Mapping[str, str]) -> list[str]:
    """``$name`` / ``${name}`` -> ``params[name]`` (Hydra's own ``${...}`` interpolations of
    config keys, which contain a dot or a colon, are left alone)."""
    return [string.Template(o).safe_substitute(params) for o in overrides]


def optional_members(
    overrides: Sequence[str], optional: Mapping[str, str], cached: Any
) -> tuple[list[str], list[str]]:
    """Resolve the optional members of ``loss=[...]``: ``name?`` is kept only when the weight
    files ``optional[name]`` are cached; ``name?other`` is ``name`` when they are, else ``other``.
    Returns the overrides and notes on what was left out or replaced."""
    notes: list[str] = []
    out = []
    for arg in overrides:
        m = re.fullmatch(r"loss=\[(.*)\]", arg)
        if m and "?" in arg:
            members = []
            for member in (x.strip() for x in m.group(1).split(",") if x.strip()):
                if "?" in member:
                    term, _, fallback = member.partition("?")
                    weights = optional.get(term)
                    if weights and not cached(str(weights)):
                        why = f"its weights {weights} are not in the torch hub cache"
                        if fallback:
                            notes.append(f"{term} replaced by {fallback}: {why}")
                            members.append(fallback)
                        else:
                            notes.append(f"{term} left out: {why} (nothing is downloaded)")
                        continue
                    member = term
                members.append(member)
            arg = f"loss=[{','.join(members)}]"
        out.append(arg)
    return out, notes


def canonical(overrides: Sequence[str]) -> list[str]:
    """The overrides that decide a job's result, last value per key, sorted: the warm-start cache
    key. Options that change where or how fast, not what, are left out."""
    skip = (
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "logger",
        "val.save_images",
    )
    last: dict[str, str] = {}
    for o in overrides:
        key, _, value = str(o).partition("=")
        key = key.lstrip("+~")
        if key in skip:
            continue
        last[key] = value
    return [f"{k}={v}" for k, v in sorted(last.items())]


def config_hash(overrides: Sequence[str], extra: Mapping[str, Any] | None = None) -> str:
    payload = json.dumps({"overrides": canonical(overrides), **dict(extra or {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
