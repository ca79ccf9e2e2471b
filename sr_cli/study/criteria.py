"""Criteria: a study's claim as comparisons that the measured intervals decide.

A criterion compares two operands with ``op`` (``>``, ``<``, ``>=``, ``<=``; ``==``/``!=`` for
statuses) and a ``margin``, the smallest difference that counts as the claimed effect::

    - id: exploit_psnr
      says: downsample-only is further from GT than L1 (PSNR_Y)
      left: {arm: ds_scratch, metric: psnr_y}
      op: "<"
      right: {arm: l1, metric: psnr_y}
      margin: 0.5                 # dB
      relative: false             # true: the difference as a fraction of the right side

``>=`` and ``<=`` claim *non-inferiority*: the left side is not worse than the right by more
than ``margin`` (the difference's interval must lie above ``-margin``); ``>`` and ``<`` claim
an improvement of at least ``margin``.

An operand is ``{arm, metric}`` (``arm: bicubic`` is the bicubic baseline; ``distance_from: c``
takes ``|value - c|`` per image), ``{value: constant}``, or ``{arm, status: true}`` (the run's
status: ``finished``, ``failed``, ``diverged``...). ``run`` is accepted for ``arm``.
``{id, says, any: [comparisons]}`` passes when one comparison passes and fails when all fail.

**How a numeric criterion is decided.** The difference ``d = left - right`` (``right - left``
for ``<``) is computed per seed (paired: both arms trained with that seed; the mean over images)
and per image (the mean over seeds). The per-seed differences get a t-interval (training
variance) and the per-image ones a bootstrap interval (image variance), see
:mod:`sr_cli.study.intervals`. The criterion **passes** when both intervals lie above the margin,
**fails** when both lie below it, and is **inconclusive** otherwise: one interval straddles the
margin, or there is only one seed. A status criterion passes when it holds for every seed and
fails when it holds for none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sr_cli.errors import ConfigError
from sr_cli.study.intervals import (
    FAIL,
    PASS,
    STRADDLE,
    Interval,
    bootstrap_interval,
    decide,
    t_interval,
)

BICUBIC = "bicubic"
NUMERIC_OPS = (">", "<", ">=", "<=")
EQUALITY_OPS = ("==", "!=")

#: ``values[arm][seed][image][metric]``: the per-image measurements (bicubic under every seed).
Values = Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]
#: ``statuses[arm][seed]``: how each run ended.
Statuses = Mapping[str, Mapping[int, str]]


def _operand_arm(operand: Mapping) -> str | None:
    arm = operand.get("arm", operand.get("run"))
    return None if arm is None else str(arm)


def check_criterion(crit: Mapping, where: Any = "study", arms: Sequence[str] | None = None) -> None:
    """A one-line error for a malformed criterion (or one naming an unknown arm)."""
    if not isinstance(crit, Mapping):
        raise ConfigError(f"{where}: a criterion is a mapping, got {crit!r}")
    if "any" in crit:
        if not crit.get("id"):
            raise ConfigError(f"{where}: criterion {dict(crit)} has no 'id'")
        for sub in crit["any"]:
            check_criterion({"id": crit.get("id"), **sub}, where, arms)
        return
    for key in ("id", "left", "op", "right"):
        if key not in crit:
            raise ConfigError(f"{where}: criterion {dict(crit)} has no {key!r}")
    if crit["op"] not in NUMERIC_OPS + EQUALITY_OPS:
        raise ConfigError(
            f"{where}: criterion {crit['id']!r} op {crit['op']!r} must be one of "
            f"{list(NUMERIC_OPS + EQUALITY_OPS)}"
        )
    for side in ("left", "right"):
        operand = crit[side]
        if not isinstance(operand, Mapping):
            raise ConfigError(f"{where}: criterion {crit['id']!r} {side} must be a mapping")
        arm = _operand_arm(operand)
        if "value" not in operand and arm is None:
            raise ConfigError(f"{where}: criterion {crit['id']!r} {side} names no arm and no value")
        if arms is not None and arm is not None and arm.split("/")[0] not in arms:
            raise ConfigError(
                f"{where}: criterion {crit['id']!r} {side} names arm {arm!r}, which the study "
                f"does not have (arms: {list(arms)})"
            )
        if arm is not None and not operand.get("status") and "metric" not in operand:
            raise ConfigError(f"{where}: criterion {crit['id']!r} {side} names no metric")
    try:
        float(crit.get("margin", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: criterion {crit['id']!r} margin must be a number") from None


@dataclass
class Verdict:
    """The judgement of one criterion, with the numbers it rests on."""

    id: str
    says: str
    left: str
    op: str
    right: str
    margin: float
    verdict: str
    why: str = ""
    relative: bool = False
    seed_interval: dict | None = None
    image_interval: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_image(
    operand: Mapping, values: Values, seeds: Sequence[int]
) -> dict[int, dict[str, float]] | None:
    """``{seed: {image: value}}`` of a numeric operand (constants: ``None``)."""
    if "value" in operand:
        return None
    arm, metric = _operand_arm(operand), str(operand["metric"])
    table = values.get(arm) or {}
    out: dict[int, dict[str, float]] = {}
    for s in seeds:
        per_seed = table.get(s) if arm != BICUBIC else next(iter(table.values()), None)
        if per_seed is None:
            continue
        row = {}
        for image, metrics in per_seed.items():
            v = metrics.get(metric)
            if v is None or not math.isfinite(float(v)):
                continue
            v = float(v)
            if operand.get("distance_from") is not None:
                v = abs(v - float(operand["distance_from"]))
            row[image] = v
        out[s] = row
    return out


def _describe(operand: Mapping) -> str:
    if "value" in operand:
        return repr(operand["value"])
    arm = _operand_arm(operand)
    if operand.get("status"):
        return f"status({arm})"
    metric = str(operand["metric"])
    if operand.get("distance_from") is not None:
        return f"|{metric} - {float(operand['distance_from']):g}|({arm})"
    return f"{metric}({arm})"


def _seeds_of(operand: Mapping, values: Values) -> set[int] | None:
    arm = _operand_arm(operand)
    if "value" in operand or arm == BICUBIC:
        return None
    return set((values.get(arm) or {}).keys())


def _judge_status(crit: Mapping, statuses: Statuses, v: Verdict) -> Verdict:
    left, right = crit["left"], crit["right"]
    if not left.get("status") or "value" not in right:
        v.why = "a status compares an arm's status with a value"
        return v
    arm = _operand_arm(left)
    per_seed = dict(statuses.get(arm) or {})
    done = {s: st for s, st in per_seed.items() if st not in ("pending", "not run", "running")}
    if not done:
        v.why = "not run"
        return v
    want = str(right["value"])
    holds = [(st == want) == (crit["op"] == "==") for st in done.values()]
    v.verdict = PASS if all(holds) else FAIL if not any(holds) else STRADDLE
    v.why = ", ".join(f"seed {s}: {st}" for s, st in sorted(done.items()))
    return v


def judge(crit: Mapping, values: Values, statuses: Statuses) -> Verdict:
    """The verdict on one criterion (see the module docstring)."""
    check_criterion(crit)
    if "any" in crit:
        subs = [judge({"id": crit["id"], **sub}, values, statuses) for sub in crit["any"]]
        joined = lambda attr: " / ".join(str(getattr(s, attr)) for s in subs)  # noqa: E731
        verdict = (
            PASS
            if any(s.verdict == PASS for s in subs)
            else FAIL
            if all(s.verdict == FAIL for s in subs)
            else STRADDLE
        )
        return Verdict(
            str(crit["id"]),
            str(crit.get("says", "")),
            joined("left"),
            joined("op"),
            joined("right"),
            max(s.margin for s in subs),
            verdict,
            "any of: " + " / ".join(f"{s.verdict} ({s.why})" for s in subs),
        )
    op, margin = str(crit["op"]), float(crit.get("margin", 0.0) or 0.0)
    relative = bool(crit.get("relative", False))
    v = Verdict(
        str(crit["id"]),
        str(crit.get("says", "")),
        _describe(crit["left"]),
        op,
        _describe(crit["right"]),
        margin,
        STRADDLE,
        relative=relative,
    )
    if op in EQUALITY_OPS or crit["left"].get("status"):
        return _judge_status(crit, statuses, v)
    left, right = crit["left"], crit["right"]
    seed_sets = [s for s in (_seeds_of(left, values), _seeds_of(right, values)) if s is not None]
    seeds = sorted(set.intersection(*seed_sets)) if seed_sets else [0]
    lv, rv = _per_image(left, values, seeds), _per_image(right, values, seeds)
    sign = -1.0 if op.startswith("<") else 1.0
    seed_diffs: list[float] = []
    image_diffs: dict[str, list[float]] = {}
    right_means: list[float] = []
    for s in seeds:
        lrow = lv.get(s) if lv is not None else None
        rrow = rv.get(s) if rv is not None else None
        images = set(lrow or {}) if lrow is not None else set(rrow or {})
        if lrow is not None and rrow is not None:
            images &= set(rrow)
        if not images or (lv is not None and lrow is None) or (rv is not None and rrow is None):
            continue
        lval = {i: lrow[i] if lrow is not None else float(left["value"]) for i in images}
        rval = {i: rrow[i] if rrow is not None else float(right["value"]) for i in images}
        right_means.append(sum(rval.values()) / len(images))
        seed_diffs.append(sum(lval[i] - rval[i] for i in images) / len(images))
        for i in images:
            image_diffs.setdefault(i, []).append(lval[i] - rval[i])
    if not seed_diffs:
        v.why = "not measured"
        return v
    scale = 1.0
    if relative:
        scale = abs(sum(right_means) / len(right_means)) or math.nan
    seed_iv = t_interval([sign * d / scale for d in seed_diffs])
    image_iv = bootstrap_interval(
        [sign * (sum(ds) / len(ds)) / scale for ds in image_diffs.values()]
    )
    v.seed_interval, v.image_interval = asdict(seed_iv), asdict(image_iv)
    threshold = -margin if op in (">=", "<=") else margin  # non-inferiority vs improvement
    v.verdict = decide(seed_iv, image_iv, threshold)
    v.why = _why(seed_iv, image_iv, threshold, relative)
    return v


def _fmt(x: float, relative: bool) -> str:
    return f"{100 * x:+.2f}%" if relative else f"{x:+.4g}"


def _iv_text(iv: Interval, relative: bool) -> str:
    if not iv.defined:
        return f"{_fmt(iv.mean, relative)} (n={iv.n}: no interval)"
    return f"{_fmt(iv.mean, relative)} [{_fmt(iv.lo, relative)}, {_fmt(iv.hi, relative)}]"


def _why(seed_iv: Interval, image_iv: Interval, margin: float, relative: bool) -> str:
    m = _fmt(margin, relative)
    return (
        f"difference over {seed_iv.n} seed(s) {_iv_text(seed_iv, relative)}, over "
        f"{image_iv.n} image(s) {_iv_text(image_iv, relative)}; margin {m}"
    )


def overall(verdicts: Sequence[Verdict], sanity: Sequence[Verdict]) -> str:
    """``held`` when every criterion passes, ``did not hold`` when one fails, ``inconclusive``
    otherwise, and whenever a sanity check does not pass (the budget could not decide)."""
    if any(s.verdict != PASS for s in sanity):
        return "inconclusive"
    if any(v.verdict == FAIL for v in verdicts):
        return "did not hold"
    if verdicts and all(v.verdict == PASS for v in verdicts):
        return "held"
    return "inconclusive"
