"""Anytime-valid confidence sequences (CS) for off-policy values and their paired difference.

A confidence sequence ``(L_t, U_t)`` covers its target at *every* round at once:
``P(exists t: target_t outside (L_t, U_t)) <= alpha``, so it may be looked at after every
batch, and a decision taken the first time it clears a threshold keeps its error rate. A
fixed-horizon interval looked at repeatedly does not (see ``benchmarks/bench_monitor.py``).

The bound: an empirical-Bernstein mixture
-----------------------------------------
:class:`LowerConfidenceSequence` bounds from below the running average of the conditional
means ``m_i = E[x_i | past]`` of terms that are only *bounded below*, ``x_i >= floor``, whose
means are at most ``ceiling``. With ``s = ceiling - floor``, scaled terms ``y_i = (x_i - floor)
/ s >= 0``, a predictable centre ``c_{i-1}`` in ``[0, 1]`` (the running mean of the earlier
terms), ``V_t = sum (y_i - c_{i-1})^2``, ``psi(lam) = -log(1 - lam) - lam`` and ``mu_i =
(m_i - floor) / s`` the scaled conditional means, each

    M_t(lam) = exp(lam * sum_i (y_i - mu_i) - psi(lam) * V_t),    0 <= lam < 1,

is a non-negative supermartingale, because
``exp(lam z - psi(lam) z^2) <= 1 + lam z`` for ``z >= -1`` (Fan, Grama & Liu 2015, Lemma 4.1;
Howard, Ramdas, McAuliffe & Sekhon 2021, Theorem 4). So is their average over a fixed grid of
``lam`` (a discrete mixture), and Ville's inequality bounds the chance that it ever reaches
``1 / alpha``. ``L_t`` is the mean at which the mixture equals ``1 / alpha`` (it decreases in
the mean; solved by Newton's method, which converges monotonically on this convex function).
The state is three numbers per sequence (``n``, ``sum y``, ``V``), so an update costs the
batch and nothing more. No upper bound on the terms is needed: that is what lets importance-
weighted terms with unbounded weights be used below.

Because every ``lam`` is fixed, the target is the *running average* ``(1/t) sum m_i``: with
policies that learn during the canary, the CS covers the average of the per-round values, and
a test of ``"m_i <= theta at every round"`` (a candidate never better than the baseline) that
rejects when ``L_t > theta`` has type-I error ``<= alpha`` at any stopping time.

Off-policy terms (:class:`OffPolicyCS`)
---------------------------------------
With ``w = pi(a_i | x_i) / p_i`` (``p_i`` the logged propensity), rewards ``r`` in the known
range ``[lo, hi]`` and ``E[w | x] = 1`` (the logging policy covers the target), the terms

- value, lower side: ``lo + w (r - lo) >= lo``; upper side: ``hi - w (hi - r) <= hi``;
- difference (candidate ``c`` - baseline ``b``), no weight bound: lower
  ``w_c (r - lo) + w_b (hi - r) - (hi - lo) >= -(hi - lo)``, upper side the same with ``c`` and
  ``b`` swapped (Waudby-Smith, Wu, Ramdas, Karampatziakis & Mineiro 2022 use the same fact:
  a lower bound on the terms and ``E[w] = 1`` suffice, the weights need no bound). If the
  logging policy misses some of a target's actions these sides are conservative;
- difference with a known weight bound ``w_c, w_b <= W`` (a canary with fraction ``f`` has
  ``W = 1 / min(f, 1 - f)``): ``(w_c - w_b) (r - mid)`` with ``mid = (lo + hi) / 2``, bounded
  below by ``-W (hi - lo) / 2``; centring cancels much of the reward's variance (a median
  4,640 rounds instead of 6,280 to detect +0.05 in the benchmark). This needs ``E[w_c] = E[w_b]
  = 1``, which the bound implies.

References
----------
Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Annals of Statistics.
Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting", JRSS-B.
Waudby-Smith, Wu, Ramdas, Karampatziakis & Mineiro (2022), "Anytime-valid off-policy inference
for contextual bandits".
Fan, Grama & Liu (2015), "Exponential inequalities for martingales with applications".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ope.errors import InvalidConfigError, InvalidFeedbackError

__all__ = ["LowerConfidenceSequence", "OffPolicyCS", "SequenceBounds", "MIXTURE_LAMBDAS"]

#: The fixed bets ``lam`` (in scaled units) averaged with equal weights: from 0.9 (a few dozen
#: rounds of low-variance terms) down to 1e-3, the best bet after ~40 million rounds of terms
#: with scaled variance 1/4 at alpha = 0.01 (after that the bound keeps shrinking, more slowly).
MIXTURE_LAMBDAS = np.geomspace(0.9, 1e-3, 12)
_PSI = -np.log1p(-MIXTURE_LAMBDAS) - MIXTURE_LAMBDAS
_LOG_WEIGHT = -math.log(MIXTURE_LAMBDAS.size)
_TOLERANCE = 1e-9  # relative slack for terms computed in floating point at their floor


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < alpha < 1.0:
        raise InvalidConfigError("alpha", f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


class LowerConfidenceSequence:
    """Anytime-valid lower bound on the running mean of terms bounded below (see module docs).

    Parameters
    ----------
    floor : float
        Every term is ``>= floor``.
    ceiling : float
        Every conditional mean is ``<= ceiling`` (``> floor``); terms may exceed it.
    alpha : float
        ``P(the bound ever exceeds the running mean) <= alpha``.
    prior_mean : float, optional
        Centre used before any data (default: midway between floor and ceiling).
    shape : tuple of int
        Shape of independent streams updated together (``()``: one stream).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cs = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.05)
    >>> bounds = []
    >>> for _ in range(5):
    ...     cs.update(rng.binomial(1, 0.3, size=400).astype(float))
    ...     bounds.append(round(float(cs.bound()), 3))
    >>> cs.n, round(float(cs.mean()), 3), bounds
    (2000, 0.303, [0.271, 0.27, 0.273, 0.275, 0.268])
    """

    def __init__(self, *, floor: float, ceiling: float, alpha: float, prior_mean: float | None = None,
                 shape: tuple[int, ...] = ()) -> None:
        if not (math.isfinite(floor) and math.isfinite(ceiling) and ceiling > floor):
            raise InvalidConfigError("ceiling", f"ceiling must be finite and > floor {floor!r}, got {ceiling!r}")
        self.floor, self.ceiling = float(floor), float(ceiling)
        self.alpha = _check_alpha(alpha)
        self.scale = self.ceiling - self.floor
        prior = 0.5 if prior_mean is None else (float(prior_mean) - self.floor) / self.scale
        self._prior = min(max(prior, 0.0), 1.0)
        self.n = 0
        self._sum = np.zeros(shape)
        self._var = np.zeros(shape)
        self._last = np.zeros(shape)  # the last bound (scaled): where the next root search starts

    def update(self, terms: np.ndarray) -> None:
        """Add a batch of terms, shape ``shape + (n_batch,)``, in round order.

        Raises
        ------
        InvalidFeedbackError
            If a term is below ``floor`` or not finite (nothing is added).
        """
        y = (np.asarray(terms, dtype=np.float64) - self.floor) / self.scale
        if y.shape[:-1] != self._sum.shape:
            raise InvalidFeedbackError("terms", f"terms must have shape {self._sum.shape} + (n_batch,), got {y.shape}")
        bad = ~((y >= -_TOLERANCE) & (y < math.inf))
        if bad.any():
            value = float(np.asarray(terms).ravel()[np.flatnonzero(bad.ravel())[0]])
            raise InvalidFeedbackError("terms", f"terms must be finite and >= {self.floor:g}, got {value!r}")
        b = y.shape[-1]
        if b == 0:
            return
        np.maximum(y, 0.0, out=y)
        cum = np.cumsum(y, axis=-1)
        before = np.concatenate([np.zeros(y.shape[:-1] + (1,)), cum[..., :-1]], axis=-1) + self._sum[..., None]
        centre = np.clip((self._prior + before) / (self.n + 1 + np.arange(b)), 0.0, 1.0)  # predictable
        self._var = self._var + ((y - centre) ** 2).sum(axis=-1)
        self._sum = self._sum + cum[..., -1]
        self.n += b

    def mean(self) -> np.ndarray:
        """The running mean of the terms (``nan`` before any)."""
        return self.floor + self.scale * self._sum / self.n if self.n else np.full(self._sum.shape, math.nan)

    def bound(self) -> np.ndarray:
        """The lower confidence bound now (``floor`` before enough data), shape ``shape``."""
        if self.n == 0:
            return np.full(self._sum.shape, self.floor)[()]
        lam = MIXTURE_LAMBDAS
        base = _LOG_WEIGHT + lam * self._sum[..., None] - _PSI * self._var[..., None]
        target = math.log(1.0 / self.alpha)

        def newton_step(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # F(u) and F(u) / -F'(u)
            e = base - lam * u[..., None]
            top = e.max(axis=-1)
            p = np.exp(e - top[..., None])
            z = p.sum(axis=-1)
            f = top + np.log(z) - target
            return f, f * z / (p * lam).sum(axis=-1)

        # u = n * (scaled mean). F is convex and decreasing: Newton's iterates from any start are
        # left of the root after one step and then increase to it. Start at the last root.
        positive = newton_step(np.zeros(self._sum.shape))[0] > 0  # else the bound is the floor
        u = np.where(positive, self._last * self.n, 0.0)
        for _ in range(200):
            step = np.where(positive, newton_step(u)[1], 0.0)
            u = np.maximum(u + step, 0.0)
            if not (np.abs(step) > 1e-12 * self.n).any():
                break
        self._last = np.minimum(u / self.n, 1.0)
        return (self.floor + self.scale * self._last)[()]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _out(x: np.ndarray) -> float | np.ndarray:
    """A float for one stream, the array for several."""
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class SequenceBounds:
    """A confidence sequence at one look: the IPS ``estimate`` and the bounds ``[low, high]``
    (floats, or arrays of the streams' shape from :class:`OffPolicyCS` with ``shape``).

    Examples
    --------
    >>> SequenceBounds(0.1, -0.05, 0.2).to_dict()
    {'estimate': 0.1, 'low': -0.05, 'high': 0.2}
    """

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready numbers (``None`` for not-a-number)."""
        return {"estimate": _num(self.estimate), "low": _num(self.low), "high": _num(self.high)}


class OffPolicyCS:
    """Confidence sequences for a candidate's value, a baseline's value and their difference.

    Each of the three is two-sided: a lower and an upper :class:`LowerConfidenceSequence`
    at level ``alpha_side`` each (the caller splits its alpha; see :mod:`ope.monitor`).

    Parameters
    ----------
    value_range : (float, float)
        Known range ``[lo, hi]`` of the outcome (reward or metric) of every round.
    alpha_side : float
        Error of each one-sided sequence.
    max_weight : float, optional
        Known bound on both importance weights (see the module docs); None: not assumed.
    values : bool
        Also keep the two value sequences (False: the difference only).
    shape : tuple of int
        Independent streams updated together (simulations).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> cs = OffPolicyCS(value_range=(0.0, 1.0), alpha_side=0.01, max_weight=10.0)
    >>> a = rng.integers(0, 2, 5000)                   # uniform logging over 2 actions
    >>> r = rng.binomial(1, np.where(a == 1, 0.7, 0.5)).astype(float)
    >>> cs.update(w_candidate=2.0 * (a == 1), w_baseline=2.0 * (a == 0), outcomes=r)
    >>> d = cs.difference()
    >>> round(d.estimate, 3), round(d.low, 3), round(d.high, 3)
    (0.163, 0.113, 0.228)
    >>> {k: round(v, 3) for k, v in cs.value("candidate").to_dict().items()}
    {'estimate': 0.691, 'low': 0.639, 'high': 0.737}
    """

    def __init__(self, *, value_range: tuple[float, float], alpha_side: float, max_weight: float | None = None,
                 values: bool = True, shape: tuple[int, ...] = ()) -> None:
        lo, hi = (float(v) for v in value_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InvalidConfigError("value_range",
                                     f"value_range must be finite (lo, hi) with lo < hi, got {value_range!r}")
        if max_weight is not None and not (math.isfinite(max_weight) and max_weight >= 1.0):
            raise InvalidConfigError("max_weight", f"max_weight must be a finite number >= 1, got {max_weight!r}")
        self.lo, self.hi, self.max_weight = lo, hi, max_weight
        span, mid = hi - lo, (lo + hi) / 2.0
        floor = -span if max_weight is None else -max_weight * span / 2.0

        def seq(f: float, c: float, prior: float) -> LowerConfidenceSequence:
            return LowerConfidenceSequence(floor=f, ceiling=c, alpha=alpha_side, prior_mean=prior, shape=shape)

        self._diff = (seq(floor, span, 0.0), seq(floor, span, 0.0))
        self._values = ((seq(lo, hi, mid), seq(-hi, -lo, -mid)), (seq(lo, hi, mid), seq(-hi, -lo, -mid))) \
            if values else None
        self._sums = np.zeros((2,) + tuple(shape))

    @property
    def n(self) -> int:
        """Rounds seen."""
        return self._diff[0].n

    def update(self, *, w_candidate: np.ndarray, w_baseline: np.ndarray, outcomes: np.ndarray) -> None:
        """Add a batch of rounds: arrays of shape ``shape + (n_batch,)``, weights in
        ``[0, max_weight]``, outcomes in ``value_range`` (else nothing is added)."""
        wc, wb, r = (np.asarray(v, dtype=np.float64) for v in (w_candidate, w_baseline, outcomes))
        lo, hi = self.lo, self.hi
        top = math.inf if self.max_weight is None else self.max_weight * (1.0 + _TOLERANCE)
        for name, x, a, b in (("w_candidate", wc, 0.0, top), ("w_baseline", wb, 0.0, top), ("outcomes", r, lo, hi)):
            bad = ~((x >= a) & (x <= b))
            if bad.any():
                value = float(x[bad].ravel()[0])
                raise InvalidFeedbackError(name, f"{name} must be in [{a:g}, {b:g}], got {value!r}")
        if self.max_weight is None:
            lower = wc * (r - lo) + wb * (hi - r) - (hi - lo)
            upper = wb * (r - lo) + wc * (hi - r) - (hi - lo)  # lower side of baseline - candidate
        else:
            lower = (wc - wb) * (r - (lo + hi) / 2.0)
            upper = -lower
        self._diff[0].update(lower)
        self._diff[1].update(upper)
        if self._values is not None:
            for (low_seq, up_seq), w in zip(self._values, (wc, wb)):
                low_seq.update(lo + w * (r - lo))
                up_seq.update(w * (hi - r) - hi)
        self._sums = self._sums + np.stack([(wc * r).sum(axis=-1), (wb * r).sum(axis=-1)])

    def _estimate(self, i: int) -> np.ndarray:
        return (self._sums[i] / self.n if self.n else np.full(self._sums[i].shape, math.nan))[()]

    def difference(self) -> SequenceBounds:
        """IPS estimate and bounds of candidate - baseline."""
        span = self.hi - self.lo
        low = np.maximum(self._diff[0].bound(), -span)
        high = np.minimum(-self._diff[1].bound(), span)
        return SequenceBounds(_out(self._estimate(0) - self._estimate(1)), _out(low), _out(high))

    def value(self, which: str) -> SequenceBounds:
        """IPS estimate and bounds of the ``"candidate"``'s or the ``"baseline"``'s value."""
        if self._values is None:
            raise InvalidConfigError("values", "this OffPolicyCS keeps the difference only (values=False)")
        if which not in ("candidate", "baseline"):
            raise InvalidConfigError("which", f"which must be 'candidate' or 'baseline', got {which!r}")
        i = ("candidate", "baseline").index(which)
        low_seq, up_seq = self._values[i]
        return SequenceBounds(_out(self._estimate(i)), _out(np.maximum(low_seq.bound(), self.lo)),
                              _out(np.minimum(-up_seq.bound(), self.hi)))
