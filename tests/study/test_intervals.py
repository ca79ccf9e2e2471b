"""Interval arithmetic on known data, and criteria decided on intervals (pass, fail, straddle)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sr_cli.study.criteria import judge, overall
from sr_cli.study.intervals import (
    FAIL,
    PASS,
    STRADDLE,
    Interval,
    bootstrap_interval,
    decide,
    t_interval,
    verdict_of,
)


def test_t_interval_matches_the_textbook_value():
    # mean 2, s = 1, n = 3: t_{0.975, 2} = 4.302653 (tables), half-width 4.302653 / sqrt(3).
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3 and iv.kind == "t"
    assert iv.hi - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert 2.0 - iv.lo == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # n = 10, s = 1: t_{0.975, 9} = 2.262157.
    values = np.array([-1.0, 1.0] * 5)
    iv = t_interval(values * math.sqrt(9 / 10))  # sample std 1
    assert iv.hi == pytest.approx(2.262157 / math.sqrt(10), rel=1e-6)


def test_t_interval_needs_two_values_and_skips_nan():
    one = t_interval([5.0])
    assert one.mean == 5.0 and not one.defined and one.n == 1
    assert t_interval([1.0, float("nan"), 3.0]).n == 2
    assert not t_interval([]).defined


def test_bootstrap_interval_of_a_constant_and_of_known_data():
    c = bootstrap_interval([3.0] * 8)
    assert (c.lo, c.mean, c.hi) == (3.0, 3.0, 3.0)
    # 0/1 data with p = 0.5, n = 400: the bootstrap interval of the mean approaches the normal
    # one, 0.5 -/+ 1.96 * 0.5 / 20 = [0.451, 0.549].
    data = [0.0, 1.0] * 200
    iv = bootstrap_interval(data)
    assert iv.lo == pytest.approx(0.451, abs=0.006) and iv.hi == pytest.approx(0.549, abs=0.006)
    assert bootstrap_interval(data) == iv  # seeded: reproducible


def test_verdict_reads_the_interval_against_the_margin():
    assert verdict_of(Interval(1.0, 0.6, 1.4, 3, "t"), 0.5) == PASS
    assert verdict_of(Interval(0.2, 0.1, 0.3, 3, "t"), 0.5) == FAIL
    assert verdict_of(Interval(0.5, 0.3, 0.7, 3, "t"), 0.5) == STRADDLE
    assert verdict_of(Interval(0.9, math.nan, math.nan, 1, "t"), 0.5) == STRADDLE
    both = Interval(1.0, 0.8, 1.2, 3, "t")
    assert decide(both, both, 0.5) == PASS
    assert decide(both, Interval(0.6, 0.4, 0.8, 10, "bootstrap"), 0.5) == STRADDLE


def _values(arms: dict[str, list[list[float]]], metric: str = "psnr_y") -> dict:
    """``{arm: [[seed 0 per image], [seed 1 per image], ...]}`` -> the study's values layout."""
    out: dict = {}
    for arm, seeds in arms.items():
        for s, images in enumerate(seeds):
            out.setdefault(arm, {})[s if arm != "bicubic" else -1] = {
                f"img{i}": {metric: v} for i, v in enumerate(images)
            }
    return out


CRIT = {
    "id": "c",
    "left": {"arm": "a", "metric": "psnr_y"},
    "op": ">",
    "right": {"arm": "b", "metric": "psnr_y"},
    "margin": 0.5,
}


def test_a_criterion_passes_when_both_intervals_clear_the_margin():
    b = [[20.0, 30.0, 25.0, 28.0]] * 3
    a = [[21.1, 31.0, 26.2, 29.1], [21.0, 31.1, 26.0, 29.0], [21.2, 30.9, 26.1, 29.2]]
    v = judge(CRIT, _values({"a": a, "b": b}), {})
    assert v.verdict == PASS
    assert v.seed_interval["n"] == 3 and v.image_interval["n"] == 4
    assert v.seed_interval["lo"] > 0.5 and v.image_interval["lo"] > 0.5


def test_a_criterion_fails_when_both_lie_below_the_margin_and_straddles_otherwise():
    b = [[20.0, 30.0, 25.0, 28.0]] * 3
    close = [[20.1, 30.1, 25.0, 28.1], [20.0, 30.2, 25.1, 28.0], [20.1, 30.0, 25.1, 28.1]]
    assert judge(CRIT, _values({"a": close, "b": b}), {}).verdict == FAIL
    noisy = [[21.5, 31.5, 26.5, 29.5], [19.5, 29.5, 24.5, 27.5], [20.5, 30.5, 25.6, 28.6]]
    assert judge(CRIT, _values({"a": noisy, "b": b}), {}).verdict == STRADDLE
    # One seed: no t-interval, never a pass.
    one = judge(CRIT, _values({"a": [close[0]], "b": [b[0]]}), {})
    assert one.verdict == STRADDLE and one.seed_interval["n"] == 1


def test_less_than_relative_and_distance_criteria():
    lower = {
        "id": "l",
        "left": {"arm": "a", "metric": "psnr_y"},
        "op": "<",
        "right": {"arm": "b", "metric": "psnr_y"},
        "margin": 0.05,
        "relative": True,
    }
    b = [[10.0, 10.0, 10.0]] * 3
    a = [[9.0, 9.1, 8.9], [9.0, 8.9, 9.1], [9.05, 9.0, 8.95]]  # 10% lower
    v = judge(lower, _values({"a": a, "b": b}), {})
    assert v.verdict == PASS and v.seed_interval["mean"] == pytest.approx(0.1, abs=1e-9)
    dist = {
        "id": "d",
        "left": {"arm": "a", "metric": "psnr_y", "distance_from": 1.0},
        "op": "<",
        "right": {"value": 0.5},
        "margin": 0.0,
    }
    near = [[1.1, 0.9, 1.05]] * 2 + [[0.95, 1.05, 1.1]]
    assert judge(dist, _values({"a": near}), {}).verdict == PASS


def test_bicubic_is_the_same_under_every_seed_and_status_criteria():
    crit = {
        "id": "s",
        "left": {"arm": "a", "metric": "psnr_y"},
        "op": ">",
        "right": {"arm": "bicubic", "metric": "psnr_y"},
        "margin": 0.0,
    }
    vals = _values({"a": [[2.0, 3.0]] * 3, "bicubic": [[1.0, 1.5]]})
    # The seeds agree exactly: a zero-width t-interval at +1.25, above the margin.
    assert judge(crit, vals, {}).verdict == PASS
    status = {
        "id": "st",
        "left": {"arm": "c", "status": True},
        "op": "!=",
        "right": {"value": "finished"},
    }
    assert judge(status, {}, {"c": {0: "diverged", 1: "diverged"}}).verdict == PASS
    assert judge(status, {}, {"c": {0: "finished", 1: "finished"}}).verdict == FAIL
    assert judge(status, {}, {"c": {0: "diverged", 1: "finished"}}).verdict == STRADDLE


def test_overall_verdict():
    from sr_cli.study.criteria import Verdict

    def v(x):
        return Verdict("i", "", "", ">", "", 0.0, x)

    assert overall([v(PASS), v(PASS)], [v(PASS)]) == "held"
    assert overall([v(PASS), v(FAIL)], [v(PASS)]) == "did not hold"
    assert overall([v(PASS), v(STRADDLE)], [v(PASS)]) == "inconclusive"
    assert overall([v(PASS)], [v(STRADDLE)]) == "inconclusive"


def test_at_least_as_good_is_non_inferiority_within_the_margin():
    crit = {
        "id": "n",
        "left": {"arm": "a", "metric": "psnr_y"},
        "op": ">=",
        "right": {"arm": "b", "metric": "psnr_y"},
        "margin": 0.5,
    }
    b = [[20.0, 30.0, 25.0, 28.0]] * 3
    slightly_worse = [[19.9, 29.9, 24.9, 27.9], [19.8, 29.9, 24.9, 27.8], [19.9, 29.8, 24.8, 27.9]]
    assert judge(crit, _values({"a": slightly_worse, "b": b}), {}).verdict == PASS
    much_worse = [[x - 1.0 for x in row] for row in slightly_worse]
    assert judge(crit, _values({"a": much_worse, "b": b}), {}).verdict == FAIL
    assert judge({**crit, "op": ">"}, _values({"a": slightly_worse, "b": b}), {}).verdict == FAIL
