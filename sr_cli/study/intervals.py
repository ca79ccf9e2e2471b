"""Confidence intervals for studies: a t-interval over seeds and a bootstrap over images.

A study measures every arm on the same images with several training seeds. Two sources of
variance matter to a reader, and they are reported separately:

* **training variance** (what another seed would give): the per-seed means (over images) of an
  arm, or the per-seed differences between two arms trained with the same seed (paired), get a
  Student-t interval with ``n - 1`` degrees of freedom;
* **image variance** (what other images would give): the per-image values, averaged over seeds,
  get a percentile bootstrap interval of their mean (resampling images with replacement; for a
  difference, the paired per-image differences are resampled).

A criterion reads both: see :func:`decide`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples, and the seed of their generator (the intervals are reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

PASS, FAIL, STRADDLE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided interval ``[lo, hi]`` from ``n`` values (``lo``/``hi`` are NaN
    when ``n`` is too small for an interval)."""

    mean: float
    lo: float
    hi: float
    n: int
    kind: str  # "t" (over seeds) or "bootstrap" (over images)

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2 if self.defined else math.nan

    def shifted(self, sign: float) -> Interval:
        """The interval of ``sign * x`` (``sign`` is +1 or -1)."""
        lo, hi = sorted((sign * self.lo, sign * self.hi))
        return Interval(sign * self.mean, lo, hi, self.n, self.kind)

    def text(self, decimals: int = 3) -> str:
        if not self.defined:
            return f"{self.mean:.{decimals}f} (n={self.n}, no interval)"
        return f"{self.mean:.{decimals}f} [{self.lo:.{decimals}f}, {self.hi:.{decimals}f}]"


def _clean(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval of the mean of ``values`` (one per seed): ``mean ± t * s / sqrt(n)``,
    ``t`` the ``(1 + confidence) / 2`` quantile with ``n - 1`` degrees of freedom. One value
    (or none) gives no interval.

    Example:
        >>> iv = t_interval([1.0, 2.0, 3.0])
        >>> round(iv.lo, 4), round(iv.hi, 4)  # 2 -/+ 4.3027 * 1 / sqrt(3)
        (-0.4841, 4.4841)
    """
    from scipy import stats

    a = _clean(values)
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "t")
    mean = float(a.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "t")
    sem = float(a.std(ddof=1)) / math.sqrt(n)
    t = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    return Interval(mean, mean - t * sem, mean + t * sem, n, "t")


def bootstrap_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (one per image): the
    ``(1 -/+ confidence) / 2`` quantiles of the means of ``resamples`` resamples drawn with
    replacement, by a generator seeded with ``seed`` (so the interval is reproducible). Fewer
    than 2 values give no interval."""
    a = _clean(values)
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "bootstrap")
    mean = float(a.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "bootstrap")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean, float(lo), float(hi), n, "bootstrap")


def verdict_of(interval: Interval, margin: float) -> str:
    """``pass`` when the whole interval of a difference (claimed direction positive) lies above
    ``margin``, ``fail`` when it lies below it, ``inconclusive`` when it straddles it or is
    undefined."""
    if not interval.defined:
        return STRADDLE
    if interval.lo > margin:
        return PASS
    if interval.hi < margin:
        return FAIL
    return STRADDLE


def decide(seed_interval: Interval, image_interval: Interval, margin: float) -> str:
    """The verdict on a difference from its two intervals: ``pass`` when both clear the margin
    in the claimed direction, ``fail`` when both lie on the other side of it, ``inconclusive``
    otherwise (one of them straddles the margin, the two disagree, or there is one seed)."""
    a, b = verdict_of(seed_interval, margin), verdict_of(image_interval, margin)
    if a == b:
        return a
    return STRADDLE
