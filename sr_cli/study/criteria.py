"""The criteria of a study and their verdicts.

A criterion (``criteria`` and ``sanity`` in ``conf/study/NAME.yaml``) compares two operands
``{id, says, left, op, right, margin}`` (or ``{id, says, any: [comparisons]}``: passes when one
passes, fails when all fail); an operand is ``{run, metric}`` (the run may be ``bicubic``;
``distance_from: 1`` compares ``|value - 1|``), ``{run, status: true}`` (the run's status:
finished, failed, ...) or ``{value: constant}``. ``op`` is one of ``> < >= <=`` (numbers) or
``== !=``.

A criterion passes when its difference is beyond its margin in the claimed direction, fails when
beyond it the other way, and is inconclusive inside the margin or when a value is missing. The
study *held* when every criterion passes, *did not hold* when one fails, and is *inconclusive*
otherwise, and also whenever a sanity criterion does not pass (:func:`overall`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sr_cli.errors import ConfigError

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
PASS, FAIL, UNDECIDED = "pass", "fail", "inconclusive"
NUMERIC_OPS = (">", "<", ">=", "<=")
EQUALITY_OPS = ("==", "!=")


def check_criterion(crit: Mapping, where: Any = "study") -> None:
    if "any" in crit:
        for sub in crit["any"]:
            check_criterion({"id": crit.get("id"), **sub}, where)
        return
    for key in ("id", "left", "op", "right"):
        if key not in crit:
            raise ConfigError(f"{where}: criterion {dict(crit)} has no {key!r}")
    if crit["op"] not in NUMERIC_OPS + EQUALITY_OPS:
        raise ConfigError(
            f"{where}: criterion {crit['id']!r} op {crit['op']!r} must be one of "
            f"{list(NUMERIC_OPS + EQUALITY_OPS)}"
        )


@dataclass
class Verdict:
    id: str
    says: str
    left: Any
    op: str
    right: Any
    margin: float
    verdict: str
    why: str = ""


def operand_value(
    operand: Mapping, table: Mapping[str, Mapping[str, Any]], statuses: Mapping[str, str]
) -> tuple[Any, str]:
    """The value of one side of a criterion and how to print it (``None``: not measured)."""
    if "value" in operand:
        return operand["value"], repr(operand["value"])
    run = str(operand.get("run"))
    if operand.get("status"):
        status = statuses.get(run)
        if status not in ("finished", "failed"):  # not run (yet): nothing to judge
            return None, f"status({run})={status}"
        return status, f"status({run})={status}"
    metric = str(operand.get("metric"))
    value = (table.get(run) or {}).get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"{metric}({run})=n/a"
    text = f"{metric}({run})={value:.4g}"
    if operand.get("distance_from") is not None:
        ref = float(operand["distance_from"])
        value = abs(float(value) - ref)
        text = f"|{metric}({run}) - {ref:g}|={value:.4g}"
    return float(value), text


def judge(
    crit: Mapping, table: Mapping[str, Mapping[str, Any]], statuses: Mapping[str, str]
) -> Verdict:
    """The verdict on one criterion from the measured ``table`` ({row: {metric: value}})."""
    check_criterion(crit)
    if "any" in crit:
        subs = [judge({"id": crit["id"], **sub}, table, statuses) for sub in crit["any"]]
        joined = lambda attr: " / ".join(str(getattr(v, attr)) for v in subs)  # noqa: E731
        verdict = (
            PASS
            if any(v.verdict == PASS for v in subs)
            else FAIL
            if all(v.verdict == FAIL for v in subs)
            else UNDECIDED
        )
        return Verdict(
            str(crit["id"]),
            str(crit.get("says", "")),
            joined("left"),
            joined("op"),
            joined("right"),
            max(v.margin for v in subs),
            verdict,
            "any of: " + joined("why"),
        )
    left, ltext = operand_value(crit["left"], table, statuses)
    right, rtext = operand_value(crit["right"], table, statuses)
    op, margin = str(crit["op"]), float(crit.get("margin", 0.0) or 0.0)
    v = Verdict(str(crit["id"]), str(crit.get("says", "")), ltext, op, rtext, margin, UNDECIDED)
    if left is None or right is None:
        v.why = "not measured"
        return v
    if op in EQUALITY_OPS:
        equal = left == right
        v.verdict = PASS if equal == (op == "==") else FAIL
        v.why = f"{left!r} {'==' if equal else '!='} {right!r}"
        return v
    try:
        diff = float(left) - float(right)
    except (TypeError, ValueError):
        v.why = "not numbers"
        return v
    if op.startswith("<"):
        diff = -diff
    if diff > margin or (op in (">=", "<=") and diff >= margin):
        v.verdict = PASS
    elif diff < -margin:
        v.verdict = FAIL
    else:
        v.why = f"difference {diff:+.4g} within the margin {margin:g}"
    v.why = v.why or f"difference {diff:+.4g} (margin {margin:g})"
    return v


def overall(verdicts: Sequence[Verdict], sanity: Sequence[Verdict]) -> str:
    if any(s.verdict != PASS for s in sanity):
        return INCONCLUSIVE
    if any(v.verdict == FAIL for v in verdicts):
        return NOT_HELD
    if verdicts and all(v.verdict == PASS for v in verdicts):
        return HELD
    return INCONCLUSIVE
