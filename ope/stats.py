"""Mergeable statistics of per-round terms: an estimate computed in parts and merged.

An estimate is ``value = mean(base) + mean(num) / mean(den)`` over per-round terms
(:class:`~ope.intervals.RoundTerms`). :class:`TermStats` summarises the terms of some rounds in
a few numbers that merge exactly (up to rounding) into the summary of the union of the rounds,
so partitions of a log can be evaluated apart (on several machines, :mod:`ope.distributed`) and
their summaries merged in any grouping:

- ``n``, the column means of ``(base[, num, den])`` and their co-moment matrix
  ``C = sum_i (x_i - mean)(x_i - mean)^T``, merged with Chan, Golub & LeVeque's pairwise update
  (``C = C_a + C_b + delta delta^T n_a n_b / n``; no raw sums of squares, so no cancellation);
- the minimum and maximum of each column (the range of the Bernstein bound);
- optionally, per bucket group (``bucket % NB``, :mod:`ope.buckets`), the sums of each column and
  the number of rounds: the resampling units of the bootstrap.

The intervals are those of :func:`ope.confidence_interval`:

- ``"normal"``: the same formula; the standard error is the delta-method one, the variance of
  the influence values ``base + (num - R den) / mean(den) + R`` written as ``a^T C a / (n - 1)``
  with ``a = (1, 1 / mean(den), -R / mean(den))``: equal to :func:`ope.intervals.interval_from_influence`'s
  on the same rounds up to rounding (it loses relative precision only when that variance is
  tiny next to the terms' own, e.g. constant rewards);
- ``"bernstein"``: the same formula. Linear estimators: the range is the observed one of ``base``
  (or ``value_range``, checked to contain it), as in the in-memory path. Self-normalised
  estimators: the observed range of the influence values is not mergeable (it depends on the
  final ratio), so a range containing it is bounded from the columns' ranges (interval
  arithmetic): wider than the in-memory path's; or ``value_range`` is used as given (not
  checked). Either way there is no finite-sample guarantee for a ratio (as in memory);
- ``"bootstrap"``: a Poisson bootstrap of the bucket groups: every resample weights each of the
  ``NB`` groups by an independent Poisson(1) count (seeded) and re-computes the ratio; the
  interval is the percentile one. It is not the in-memory bootstrap (which resamples rounds or
  random groups of rounds), so its numbers differ from it within the bootstrap's own noise.

:class:`WeightStats` does the same for the importance weights' diagnostics (``n``, mean and
co-moment of the weights, ``sum w^2``, ``max w``, the support deficiency): its
:meth:`~WeightStats.diagnostics` are :func:`ope.diagnose`'s, warnings included.

References
----------
Chan, Golub & LeVeque (1979), Updating formulae and a pairwise algorithm for computing sample variances.
Hanley & MacGibbon (2006), Creating non-parametric bootstrap samples using Poisson frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any

import numpy as np
from scipy.special import ndtri

from ope.diagnostics import DiagnosticThresholds, Diagnostics, weight_diagnostics
from ope.errors import InvalidConfigError
from ope.intervals import Interval, RoundTerms, check_interval_options

__all__ = ["NB", "TermStats", "WeightStats", "merge", "pairwise"]

#: bucket groups of the bootstrap: a round's group is ``bucket % NB``
NB = 4096
_CHUNK = 1 << 20  # rounds per block of the co-moment pass
_CHUNK_CELLS = 4_000_000  # Poisson counts held in memory at once


def _comoments(columns: Sequence[np.ndarray], mean: np.ndarray) -> np.ndarray:
    """``sum_i (x_i - mean)(x_i - mean)^T`` in blocks, each product summed pairwise (numpy's sum)."""
    k, n = len(columns), columns[0].shape[0]
    out = np.zeros((k, k))
    for start in range(0, n, _CHUNK):
        centred = [np.subtract(c[start:start + _CHUNK], mean[j]) for j, c in enumerate(columns)]
        for j in range(k):
            for m in range(j + 1):
                out[j, m] += float(np.multiply(centred[j], centred[m]).sum())
    return out + np.tril(out, -1).T


def pairwise(n_a: int, mean_a: Any, m2_a: Any, n_b: int, mean_b: Any, m2_b: Any) -> tuple[int, Any, Any]:
    """Chan et al.'s pairwise update: the count, mean and co-moment (sum of centred products; a scalar
    or a matrix) of two groups' rounds together, from each group's (both counts > 0).

    >>> pairwise(2, 1.5, 0.5, 2, 3.5, 0.5)  # [1, 2] and [3, 4]
    (4, 2.5, 5.0)
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    outer = np.multiply.outer(delta, delta) if np.ndim(delta) else delta * delta
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + outer * (n_a * n_b / n)


class _Mergeable:
    """What both summaries share: :meth:`merge_all` over their ``merge``."""

    @classmethod
    def merge_all(cls, items: Iterable):
        """All of ``items`` merged, in order (at least one item)."""
        items = list(items)
        if not items:
            raise InvalidConfigError("stats", f"merge_all needs at least one {cls.__name__}")
        return reduce(merge, items)


@dataclass(frozen=True, eq=False)
class TermStats(_Mergeable):
    """Mergeable summary of the per-round terms of some rounds (see the module docstring).

    Attributes
    ----------
    n : int
        Number of rounds.
    mean : numpy.ndarray, shape (k,)
        Means of ``base`` (k = 1) or ``base, num, den`` (k = 3).
    comoment : numpy.ndarray, shape (k, k)
        ``sum_i (x_i - mean)(x_i - mean)^T``.
    low, high : numpy.ndarray, shape (k,)
        Each column's minimum and maximum (``inf`` and ``-inf`` when ``n == 0``).
    bucket_sums : numpy.ndarray, shape (NB, k + 1), or None
        Per bucket group: each column's sum, then the number of rounds (None: not kept, no bootstrap).

    Examples
    --------
    >>> t = RoundTerms(base=np.zeros(4), num=np.array([1.0, 0.0, 2.0, 1.0]), den=np.array([1.0, 1.0, 2.0, 2.0]))
    >>> buckets = np.arange(4)
    >>> whole = TermStats.of(t, buckets)
    >>> halves = [TermStats.of(RoundTerms(t.base[s], t.num[s], t.den[s]), buckets[s]) for s in (slice(0, 1), slice(1, 4))]
    >>> merged = TermStats.merge_all(halves)
    >>> merged.value == whole.value == t.value, bool(np.isclose(merged.stderr, whole.stderr))
    (True, True)
    """

    n: int
    mean: np.ndarray
    comoment: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bucket_sums: np.ndarray | None = None

    @classmethod
    def empty(cls, *, ratio: bool, buckets: bool) -> TermStats:
        """The summary of no rounds (the identity of :func:`merge`)."""
        k = 3 if ratio else 1
        return cls(0, np.zeros(k), np.zeros((k, k)), np.full(k, math.inf), np.full(k, -math.inf),
                   np.zeros((NB, k + 1)) if buckets else None)

    @classmethod
    def of(cls, terms: RoundTerms, buckets: np.ndarray | None = None) -> TermStats:
        """The summary of ``terms``; with ``buckets`` (each round's stable bucket) the per-group sums too."""
        columns = [np.asarray(terms.base, dtype=np.float64)]
        if terms.is_ratio:
            columns += [np.asarray(terms.num, dtype=np.float64), np.asarray(terms.den, dtype=np.float64)]
        n = terms.n
        if n == 0:
            return cls.empty(ratio=terms.is_ratio, buckets=buckets is not None)
        mean = np.array([float(c.mean()) for c in columns])
        sums = None
        if buckets is not None:
            buckets = np.asarray(buckets)
            if buckets.shape != (n,):
                raise InvalidConfigError("buckets", f"buckets must have shape ({n},), got {buckets.shape}")
            group = (buckets % NB).astype(np.intp)
            sums = np.column_stack([np.bincount(group, weights=c, minlength=NB) for c in columns]
                                   + [np.bincount(group, minlength=NB).astype(np.float64)])
        return cls(n, mean, _comoments(columns, mean), np.array([float(c.min()) for c in columns]),
                   np.array([float(c.max()) for c in columns]), sums)

    @property
    def is_ratio(self) -> bool:
        """Whether the terms have a self-normalised part (``num``, ``den``)."""
        return self.mean.shape[0] == 3

    def merge(self, other: TermStats) -> TermStats:
        """The summary of the rounds of both (see :func:`merge`)."""
        if self.is_ratio != other.is_ratio or (self.bucket_sums is None) != (other.bucket_sums is None):
            raise InvalidConfigError("stats", "cannot merge the statistics of different estimators "
                                     "(linear and ratio terms, or with and without bucket sums)")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n, mean, comoment = pairwise(self.n, self.mean, self.comoment, other.n, other.mean, other.comoment)
        sums = None if self.bucket_sums is None else self.bucket_sums + other.bucket_sums
        return TermStats(n, mean, comoment, np.minimum(self.low, other.low), np.maximum(self.high, other.high), sums)

    @property
    def value(self) -> float:
        """The point estimate, ``mean(base) + mean(num) / mean(den)`` (NaN without rounds or weight)."""
        if self.n == 0:
            return math.nan
        value = float(self.mean[0])
        if self.is_ratio:
            den = float(self.mean[2])
            value += float(self.mean[1]) / den if den != 0 else math.nan
        return value

    def _gradient(self) -> np.ndarray | None:
        """``a`` with influence values ``a . x_i + const`` (None: ``mean(den)`` is 0)."""
        if not self.is_ratio:
            return np.ones(1)
        den = float(self.mean[2])
        if den == 0:
            return None
        return np.array([1.0, 1.0 / den, -(float(self.mean[1]) / den) / den])

    @property
    def variance(self) -> float:
        """Sample variance (``ddof=1``) of the influence values (NaN below 2 rounds)."""
        a = self._gradient()
        if self.n < 2 or a is None:
            return math.nan
        return max(float(a @ self.comoment @ a), 0.0) / (self.n - 1)

    @property
    def stderr(self) -> float:
        """Delta-method standard error, ``sqrt(variance / n)``."""
        return math.sqrt(self.variance / self.n) if self.n >= 2 else math.nan

    def influence_range(self) -> tuple[float, float]:
        """A range holding every influence value: exact for linear terms, from the columns' ranges for a ratio."""
        a = self._gradient()
        if a is None or self.n == 0:
            return math.nan, math.nan
        lo, hi = a * self.low, a * self.high
        offset = 0.0 if not self.is_ratio else float(self.mean[1]) / float(self.mean[2])
        return float(np.minimum(lo, hi).sum()) + offset, float(np.maximum(lo, hi).sum()) + offset

    def interval(self, method: str = "normal", alpha: float = 0.05, n_bootstrap: int = 1000,
                 rng: np.random.Generator | int | None = None,
                 value_range: tuple[float, float] | None = None) -> Interval:
        """Value, standard error and ``1 - alpha`` interval (see the module docstring).

        Examples
        --------
        >>> x = np.random.default_rng(0).binomial(1, 0.3, size=2000).astype(float)
        >>> from ope.intervals import confidence_interval
        >>> s = TermStats.of(RoundTerms(base=x), np.arange(2000))
        >>> bool(np.isclose(s.interval().ci_low, confidence_interval(x).ci_low, rtol=1e-12))
        True
        >>> boot = s.interval("bootstrap", rng=0)
        >>> abs(boot.ci_low - s.interval().ci_low) < 0.005
        True
        """
        check_interval_options(method, alpha, n_bootstrap, None)
        value, stderr = self.value, self.stderr
        if method == "normal":
            z = float(ndtri(1.0 - alpha / 2.0))
            return Interval(value, stderr, value - z * stderr, value + z * stderr, method, alpha)
        if method == "bootstrap":
            return self._bootstrap(alpha, n_bootstrap, rng)
        return self._bernstein(alpha, value_range)

    def _bootstrap(self, alpha: float, n_bootstrap: int, rng) -> Interval:
        if self.bucket_sums is None:
            raise InvalidConfigError("interval", "the bootstrap needs the per-bucket sums: TermStats.of(terms, buckets)")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        units = self.bucket_sums[self.bucket_sums[:, -1] > 0]  # an empty group's weight changes nothing
        stats = np.empty(n_bootstrap)
        chunk = max(1, _CHUNK_CELLS // max(1, units.shape[0]))
        for start in range(0, n_bootstrap, chunk):
            b = min(chunk, n_bootstrap - start)
            totals = gen.poisson(1.0, size=(b, units.shape[0])).astype(np.float64) @ units
            with np.errstate(divide="ignore", invalid="ignore"):
                stat = totals[:, 0] / totals[:, -1]
                if self.is_ratio:
                    stat = stat + totals[:, 1] / totals[:, 2]
            stats[start:start + b] = stat
        stats = stats[np.isfinite(stats)]
        if stats.size < 2:
            return Interval(self.value, self.stderr, math.nan, math.nan, "bootstrap", alpha)
        low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
        return Interval(self.value, float(stats.std(ddof=1)), float(low), float(high), "bootstrap", alpha)

    def _bernstein(self, alpha: float, value_range) -> Interval:
        value, stderr, n = self.value, self.stderr, self.n
        if value_range is None:
            lo, hi = self.influence_range()
        else:
            lo, hi = float(value_range[0]), float(value_range[1])
            if not hi >= lo:
                raise InvalidConfigError("value_range", f"value_range must be (low, high) with low <= high, got {value_range}")
            seen_lo, seen_hi = float(self.low[0]), float(self.high[0])
            if not self.is_ratio and n and (seen_lo < lo or seen_hi > hi):
                raise InvalidConfigError("value_range", f"value_range must contain every per-round value of the "
                                         f"estimator ({seen_lo:g} to {seen_hi:g}) for the Bernstein bound, "
                                         f"got {tuple(value_range)}")
        if n < 2:
            return Interval(value, stderr, lo, hi, "bernstein", alpha)
        log_term = math.log(4.0 / alpha)
        half = math.sqrt(2.0 * self.variance * log_term / n) + 7.0 * (hi - lo) * log_term / (3.0 * (n - 1))
        return Interval(value, stderr, max(value - half, lo), min(value + half, hi), "bernstein", alpha)


def merge(a: TermStats | WeightStats, b: TermStats | WeightStats) -> TermStats | WeightStats:
    """The summary of the rounds of ``a`` and of ``b`` (two :class:`TermStats` or two :class:`WeightStats`).

    >>> x = np.array([1.0, 2.0, 4.0, 8.0])
    >>> m = merge(TermStats.of(RoundTerms(base=x[:1])), TermStats.of(RoundTerms(base=x[1:])))
    >>> m.n, m.value, bool(np.isclose(m.variance, x.var(ddof=1)))
    (4, 3.75, True)
    """
    return a.merge(b)


@dataclass(frozen=True, eq=False)
class WeightStats(_Mergeable):
    """Mergeable summary of the importance weights of some rounds: what :func:`ope.diagnose` reports.

    ``deficiency`` is the target mass on actions the logging distribution gives probability 0,
    summed over rounds (None without a logging distribution: then the deficiency is computed over
    the actions never played, from ``action_counts`` and ``target_mass``, as :func:`ope.diagnose`
    does; both are sums, so both merge).

    Examples
    --------
    >>> w = np.array([0.0, 2.0, 0.0, 2.0])
    >>> s = merge(WeightStats.of(w[:2]), WeightStats.of(w[2:]))
    >>> s.diagnostics().ess, s.diagnostics().mean_weight
    (2.0, 1.0)
    """

    n: int
    mean: float
    m2: float  # sum (w - mean)^2
    sum_sq: float  # sum w^2 (the effective sample size's denominator)
    max: float
    deficiency: float | None = None
    action_counts: np.ndarray | None = None
    target_mass: np.ndarray | None = None

    @classmethod
    def of(cls, weights: np.ndarray, target: np.ndarray | None = None, actions: np.ndarray | None = None,
           logging_distribution: np.ndarray | None = None) -> WeightStats:
        """The summary of ``weights`` (unclipped); ``target`` (n, k) and the logged ``actions`` or
        ``logging_distribution`` give the support deficiency."""
        w = np.asarray(weights, dtype=np.float64)
        n = w.shape[0]
        if n == 0:
            return cls(0, 0.0, 0.0, 0.0, -math.inf)
        mean = float(w.sum()) / n
        d = w - mean
        np.multiply(d, d, out=d)
        deficiency = counts = mass = None
        if target is not None and logging_distribution is not None:
            deficiency = float((target * (logging_distribution <= 0.0)).sum())
        elif target is not None:
            counts = np.bincount(actions, minlength=target.shape[1]).astype(np.int64)
            mass = target.sum(axis=0)
        return cls(n, mean, float(d.sum()), float(np.einsum("i,i->", w, w)), float(w.max()), deficiency, counts, mass)

    def merge(self, other: WeightStats) -> WeightStats:
        """The summary of the rounds of both."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n, mean, m2 = pairwise(self.n, self.mean, self.m2, other.n, other.mean, other.m2)
        out = WeightStats(n, mean, m2, self.sum_sq + other.sum_sq, max(self.max, other.max))
        if self.deficiency is not None and other.deficiency is not None:
            return replace(out, deficiency=self.deficiency + other.deficiency)
        if self.action_counts is not None and other.action_counts is not None:
            return replace(out, action_counts=self.action_counts + other.action_counts,
                           target_mass=self.target_mass + other.target_mass)
        return out

    def diagnostics(self, thresholds: DiagnosticThresholds | None = None) -> Diagnostics:
        """:func:`ope.diagnose`'s diagnostics and warnings, from the summary."""
        limits = thresholds or DiagnosticThresholds()
        n, mean_w, max_w = self.n, self.mean, self.max
        total = mean_w * n
        exact = self.deficiency is not None
        if exact:
            deficiency = self.deficiency / n
        elif self.action_counts is not None:
            deficiency = float(self.target_mass[self.action_counts == 0].sum() / n)
        else:
            deficiency = 0.0
        sd = math.sqrt(self.m2 / (n - 1)) if n > 1 else 0.0
        return weight_diagnostics(n, total, self.sum_sq, max_w, sd, deficiency, exact, limits)
