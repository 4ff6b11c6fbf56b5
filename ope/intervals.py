"""One function turning per-round values into a value, a standard error and an interval.

Every estimator reduces to per-round terms of the form

    value = mean(base) + mean(num) / mean(den)

where the ratio part is present only for self-normalised estimators (SNIPS, SNDR).
:func:`confidence_interval` works on those terms, so every estimator gets every
interval:

- ``"normal"``: CLT interval ``value +- z * se``; ``se`` is the standard error of the
  linearised (delta-method) per-round values, which is the plain standard error of
  the mean for linear estimators.
- ``"bootstrap"``: vectorised percentile bootstrap. Each resample re-computes the
  ratio (``sum m*num / sum m*den``), so self-normalised estimators are bootstrapped
  as ratio estimators. Resample counts are drawn from a seeded Generator in chunks
  and applied with one matrix product per chunk. When ``n_rounds`` exceeds
  ``max_units`` the rounds are first split into ``max_units`` random groups of
  (almost) equal size and the groups are resampled: a random partition keeps every
  cumulant of the resampled mean equal in expectation to the per-round bootstrap,
  at a cost independent of ``n_rounds``.
- ``"bernstein"``: empirical Bernstein bound (Maurer & Pontil, 2009, Thm. 4) which
  holds for bounded per-round values without a normality assumption:
  ``value +- (sqrt(2 V ln(4/alpha) / n) + 7 M ln(4/alpha) / (3 (n - 1)))`` with ``V``
  the sample variance and ``M`` the range of the per-round values. Pass
  ``value_range`` (an a-priori range, e.g. ``(0, clip)`` for clipped IPS with rewards
  in [0, 1]) for the guarantee to hold; otherwise the observed range is used.

References
----------
Efron & Tibshirani (1993), An Introduction to the Bootstrap.
Maurer & Pontil (2009), Empirical Bernstein Bounds and Sample Variance Penalization.
Thomas, Theocharous & Ghavamzadeh (2015), High Confidence Off-Policy Evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from ope.errors import InvalidConfigError

__all__ = ["RoundTerms", "Interval", "confidence_interval", "check_interval_options", "interval_from_influence",
           "sample_std", "INTERVAL_METHODS", "DEFAULT_BOOTSTRAP_UNITS"]

INTERVAL_METHODS = ("normal", "bootstrap", "bernstein")
DEFAULT_BOOTSTRAP_UNITS = 20_000
_CHUNK_CELLS = 4_000_000  # resample-count cells held in memory at once


@dataclass(frozen=True, eq=False)
class RoundTerms:
    """Per-round terms of an estimate: ``value = mean(base) + mean(num) / mean(den)``.

    Parameters
    ----------
    base : numpy.ndarray, shape (n_rounds,)
        The linear part (the whole estimate for IPS, DM, DR, ...).
    num, den : numpy.ndarray, shape (n_rounds,), optional
        Numerator and denominator of the self-normalised part (both or neither).

    Examples
    --------
    >>> t = RoundTerms(base=np.zeros(3), num=np.array([1.0, 0.0, 2.0]), den=np.array([1.0, 1.0, 2.0]))
    >>> t.value
    0.75
    >>> float(t.influence().mean())
    0.75
    """

    base: np.ndarray
    num: np.ndarray | None = None
    den: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.num is None) != (self.den is None):
            raise InvalidConfigError("den", "num and den must be given together")

    @property
    def n(self) -> int:
        """Number of rounds."""
        return int(self.base.shape[0])

    @property
    def is_ratio(self) -> bool:
        """Whether the estimate has a self-normalised (ratio) part."""
        return self.num is not None

    @property
    def value(self) -> float:
        """The point estimate."""
        value = float(self.base.mean())
        if self.num is not None:
            den = float(self.den.mean())
            value += float(self.num.mean()) / den if den != 0 else math.nan
        return value

    def influence(self) -> np.ndarray:
        """Linearised per-round values: their mean is the estimate and their variance / n
        its delta-method variance (``base + (num - R den) / mean(den) + R``, ``R`` the ratio).
        """
        if self.num is None:
            return self.base
        den = float(self.den.mean())
        if den == 0:
            return np.full(self.n, math.nan)
        ratio = float(self.num.mean()) / den
        # base + (num - ratio * den) / den + ratio, evaluated in that order in one buffer
        out = np.multiply(self.den, ratio)
        np.subtract(self.num, out, out=out)
        out /= den
        out += self.base
        out += ratio
        return out


@dataclass(frozen=True)
class Interval:
    """A point estimate with its standard error and a ``1 - alpha`` interval.

    Examples
    --------
    >>> Interval(value=1.0, stderr=0.1, ci_low=0.8, ci_high=1.2, method="normal", alpha=0.05).ci_high
    1.2
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    method: str
    alpha: float


def sample_std(x: np.ndarray, mean: float) -> float:
    """``x.std(ddof=1)`` given ``mean == x.mean()``, bit for bit, without recomputing the mean
    (numpy's own algorithm: one temporary, squared in place, pairwise sum).

    Examples
    --------
    >>> x = np.array([1.0, 2.0, 4.0])
    >>> sample_std(x, float(x.mean())) == float(x.std(ddof=1))
    True
    """
    d = x - mean
    np.multiply(d, d, out=d)
    return math.sqrt(float(d.sum()) / (x.shape[0] - 1))


def check_interval_options(method: str, alpha: float, n_bootstrap: int, max_units: int | None) -> None:
    """Validate the options of :func:`confidence_interval` (raises naming the field and value).

    Examples
    --------
    >>> check_interval_options("normal", 0.05, 1000, None)
    >>> check_interval_options("normal", 1.5, 1000, None)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: alpha must be in (0, 1), got 1.5
    """
    if method not in INTERVAL_METHODS:
        raise InvalidConfigError("interval", f"interval must be one of {INTERVAL_METHODS}, got {method!r}")
    if not (isinstance(alpha, (float, int)) and 0.0 < alpha < 1.0):
        raise InvalidConfigError("alpha", f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 2:
        raise InvalidConfigError("n_bootstrap", f"n_bootstrap must be an integer >= 2, got {n_bootstrap!r}")
    if max_units is not None and (not isinstance(max_units, (int, np.integer)) or max_units < 2):
        raise InvalidConfigError("max_units", f"max_units must be an integer >= 2 or None, got {max_units!r}")


def _as_terms(values: Any) -> RoundTerms:
    if isinstance(values, RoundTerms):
        return values
    return RoundTerms(base=np.asarray(values, dtype=np.float64))


def _resampling_units(terms: RoundTerms, rng: np.random.Generator, max_units: int | None) -> np.ndarray:
    """Columns (base, [num, den], count) summed per resampling unit."""
    cols = [terms.base] if terms.num is None else [terms.base, terms.num, terms.den]
    n = terms.n
    if max_units is None or n <= max_units:
        return np.column_stack([*cols, np.ones(n)])
    group = np.empty(n, dtype=np.intp)
    group[rng.permutation(n)] = np.arange(n) % max_units
    sums = [np.bincount(group, weights=c, minlength=max_units) for c in cols]
    sizes = np.bincount(group, minlength=max_units).astype(np.float64)
    return np.column_stack([*sums, sizes])


def _bootstrap_stats(units: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    n_units = units.shape[0]
    chunk = max(1, min(n_bootstrap, _CHUNK_CELLS // n_units))
    stats = np.empty(n_bootstrap)
    offsets = None
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n_units, size=(b, n_units))
        if offsets is None or offsets.shape[0] != b:
            offsets = (np.arange(b) * n_units)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_units).reshape(b, n_units)
        totals = counts.astype(np.float64) @ units
        stat = totals[:, 0] / totals[:, -1]
        if units.shape[1] == 4:
            with np.errstate(divide="ignore", invalid="ignore"):
                stat = stat + totals[:, 1] / totals[:, 2]
        stats[start : start + b] = stat
    return stats


def confidence_interval(
    values: RoundTerms | np.ndarray,
    *,
    method: str = "normal",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    rng: np.random.Generator | int | None = None,
    value_range: tuple[float, float] | None = None,
    max_units: int | None = DEFAULT_BOOTSTRAP_UNITS,
) -> Interval:
    """Value, standard error and ``1 - alpha`` interval from per-round values.

    Parameters
    ----------
    values : RoundTerms or array-like, shape (n_rounds,)
        Per-round terms of an estimator (a plain array means a linear estimator).
    method : {"normal", "bootstrap", "bernstein"}
        See the module docstring.
    alpha : float
        Significance level; the interval has nominal coverage ``1 - alpha``.
    n_bootstrap : int
        Number of bootstrap resamples.
    rng : numpy.random.Generator or int or None
        Source of randomness for the bootstrap (a seed builds a Generator once).
    value_range : (float, float), optional
        A-priori range of the per-round values, for ``"bernstein"``.
    max_units : int or None
        Largest number of resampling units for the bootstrap; above it rounds are
        grouped at random (None: always resample single rounds).

    Returns
    -------
    Interval

    Examples
    --------
    >>> x = np.random.default_rng(0).binomial(1, 0.3, size=2000).astype(float)
    >>> ci = confidence_interval(x, method="normal")
    >>> round(ci.value, 4), ci.ci_low < 0.3 < ci.ci_high
    (0.303, True)
    >>> boot = confidence_interval(x, method="bootstrap", rng=0)
    >>> abs(boot.ci_low - ci.ci_low) < 0.005
    True
    >>> confidence_interval(x, method="bernstein", value_range=(0, 1)).ci_low < ci.ci_low
    True
    """
    check_interval_options(method, alpha, n_bootstrap, max_units)
    terms = _as_terms(values)
    return interval_from_influence(terms, terms.influence(), method, alpha, n_bootstrap, rng, value_range, max_units)


def interval_from_influence(
    terms: RoundTerms, infl: np.ndarray, method: str, alpha: float, n_bootstrap: int,
    rng: Any, value_range: Any, max_units: int | None,
) -> Interval:
    """:func:`confidence_interval` for checked arguments (see :func:`check_interval_options`)
    and a precomputed ``infl = terms.influence()``, so a caller that also keeps the per-round
    values computes them once.

    Examples
    --------
    >>> terms = RoundTerms(base=np.array([0.0, 1.0, 1.0, 2.0]))
    >>> ci = interval_from_influence(terms, terms.influence(), "normal", 0.05, 1000, None, None, None)
    >>> ci == confidence_interval(terms)
    True
    """
    value = terms.value
    n = terms.n
    if n > 1:
        mean = value if infl is terms.base else float(infl.mean())  # linear: the mean is the value
        stderr = sample_std(infl, mean) / math.sqrt(n)
    else:
        stderr = math.nan
    if method == "normal":
        z = float(ndtri(1.0 - alpha / 2.0))
        return Interval(value, stderr, value - z * stderr, value + z * stderr, method, alpha)
    if method == "bootstrap":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        stats = _bootstrap_stats(_resampling_units(terms, gen, max_units), n_bootstrap, gen)
        stats = stats[np.isfinite(stats)]
        if stats.size == 0:
            return Interval(value, stderr, math.nan, math.nan, method, alpha)
        low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
        return Interval(value, float(stats.std(ddof=1)), float(low), float(high), method, alpha)
    if value_range is None:
        lo, hi = float(infl.min()), float(infl.max())
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi >= lo:
            raise InvalidConfigError("value_range", f"value_range must be (low, high) with low <= high, got {value_range}")
        seen = infl[np.isfinite(infl)]
        if seen.size and (seen.min() < lo or seen.max() > hi):  # the bound holds only for values in range
            raise InvalidConfigError("value_range", f"value_range must contain every per-round value of the "
                                     f"estimator ({seen.min():g} to {seen.max():g}) for the Bernstein bound, "
                                     f"got {tuple(value_range)}")
    if n < 2:
        return Interval(value, stderr, lo, hi, method, alpha)
    log_term = math.log(4.0 / alpha)
    var = float(infl.var(ddof=1))
    half = math.sqrt(2.0 * var * log_term / n) + 7.0 * (hi - lo) * log_term / (3.0 * (n - 1))
    return Interval(value, stderr, max(value - half, lo), min(value + half, hi), method, alpha)
