"""Anytime-valid canary monitoring: promote, roll back or continue after every batch.

A canary is looked at again and again; a fixed-horizon interval re-computed after every batch
promotes a candidate no better than production far more often than its ``alpha``
(``benchmarks/bench_monitor.py``). :class:`CanaryMonitor` keeps *confidence sequences*
(:mod:`ope.confseq`), which hold at every look at once, for the candidate's off-policy value,
the baseline's, their paired difference (candidate - baseline) and the paired difference on
each guardrail metric (cost_usd, latency_ms, quality, ...). See ``docs/monitor.md``.

Decisions, re-taken after every :meth:`CanaryMonitor.update` until one is final:

``"promote"``  the difference's lower bound is above ``margin``, and every guardrail has
               shown non-inferiority (its bound is within its margin; with
               ``require_non_inferiority=False``: no guardrail has failed);
``"rollback"`` a guardrail failed (its bound is beyond its margin: for cost, the lower bound
               of candidate - baseline above the allowed increase), or the primary difference's
               upper bound is below ``-|margin|`` (the candidate is clearly worse);
``"continue"`` otherwise. Promote and rollback are final: later batches update the numbers only.

Alpha is split by Bonferroni: ``k = 3 + n_guardrails`` two-sided sequences (candidate value,
baseline value, primary difference, one difference per guardrail), each side at
``alpha / (2k)``. With probability ``>= 1 - alpha`` every reported bound holds at every look,
so a false promotion (or rollback) has probability ``<= alpha`` whenever the monitor stops.

Assumptions: rewards and guardrail metrics lie in known ranges (``reward_range``,
``metric_ranges``; values outside are refused); logged propensities are exact (a canary logs
``(1 - f) pi_prod + f pi_cand``); ``max_weight``, if given, bounds both importance weights for
every action (a canary: ``1 / min(f, 1 - f)``; larger weights are refused). It is never
estimated from data: a running maximum of past weights does not bound the next one. Without it
the sequences use terms that need no weight bound (valid, wider). With policies that learn
during the canary the sequences cover the running average of the per-round values.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> f = 0.1                                           # a 10% canary over 4 profiles
>>> prod, cand = np.full(4, 0.25), np.array([0.0, 0.0, 0.2, 0.8])
>>> logging = (1 - f) * prod + f * cand
>>> quality = np.array([0.4, 0.5, 0.55, 0.6])         # candidate +0.0775 better
>>> monitor = CanaryMonitor(MonitorOptions(max_weight=1 / f))
>>> for batch in range(40):
...     a = rng.choice(4, size=250, p=logging)
...     res = monitor.update(candidate_probs=cand[a], baseline_probs=prod[a], propensities=logging[a],
...                          rewards=rng.binomial(1, quality[a]).astype(float))
>>> res.decision, res.decided_at_round, res.n_rounds, res.alpha_per_side
('promote', 1750, 10000, 0.008333333333333333)
>>> print(res.reason)
reward: candidate - baseline lower bound 0.000406... > margin 0 after 1,750 rounds
(each bound at alpha 0.05 / 6, Bonferroni)
>>> res.to_dict()["difference"]
{'estimate': 0.0708..., 'low': 0.0465..., 'high': 0.0994...}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ope.confseq import OffPolicyCS, SequenceBounds
from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.gate_options import DIRECTIONS, Guardrail

__all__ = ["CanaryMonitor", "MonitorOptions", "MonitorResult", "SequenceBounds", "GuardrailStatus", "DECISIONS"]

DECISIONS = ("continue", "promote", "rollback")


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise InvalidConfigError(name, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _range(name: str, value: Any) -> tuple[float, float]:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) for v in value)
    if not (ok and math.isfinite(value[0]) and math.isfinite(value[1]) and value[1] > value[0]):
        raise InvalidConfigError(name, f"{name} must be a known range (lo, hi) with lo < hi, got {value!r}")
    return float(value[0]), float(value[1])


def _guardrail(metric: Any, spec: Any) -> Guardrail:
    if isinstance(spec, Guardrail):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return Guardrail(metric=metric, margin=spec[0], direction=spec[1])
    if metric not in DIRECTIONS:
        raise InvalidConfigError(f"guardrails[{metric!r}]", f"guardrails[{metric!r}] needs a direction: pass "
                                 f"(margin, 'higher') or (margin, 'lower'), got {spec!r}")
    return Guardrail(metric=metric, margin=spec, direction=DIRECTIONS[metric])


@dataclass(frozen=True, kw_only=True)
class MonitorOptions:
    """Options of :class:`CanaryMonitor`, validated once.

    Parameters
    ----------
    alpha : float in (0, 0.5)
        Probability, over the whole canary, that any reported bound fails (Bonferroni-split).
    margin : float
        Promote when candidate - baseline is shown > ``margin``; roll back when shown < ``-|margin|``.
    reward_range : (float, float)
        Known range of the per-round reward.
    max_weight : float >= 1, optional
        Known bound on the candidate's and the baseline's importance weights.
    guardrails : mapping metric -> margin, (margin, direction) or Guardrail, optional
        As for :func:`ope.gate`; ``margin`` is the largest tolerated degradation per round.
    metric_ranges : mapping metric -> (float, float)
        Known range of every guardrail metric per round (required for each guardrail).
    require_non_inferiority : bool
        Promote only once every guardrail has shown non-inferiority (default); False: unless
        a guardrail has failed.

    Examples
    --------
    >>> opts = MonitorOptions(guardrails={"cost_usd": 0.001}, metric_ranges={"cost_usd": (0, 0.05)})
    >>> opts.n_sequences, opts.alpha_per_side, opts.guardrail_list[0].direction
    (4, 0.00625, 'lower')
    >>> MonitorOptions(guardrails={"cost_usd": 0.001})
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: metric_ranges['cost_usd'] must be a known range (lo, hi) with lo < hi, got None
    """

    alpha: float = 0.05
    margin: float = 0.0
    reward_range: tuple[float, float] = (0.0, 1.0)
    max_weight: float | None = None
    guardrails: Mapping[str, Any] | None = None
    metric_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    require_non_inferiority: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < _finite("alpha", self.alpha) < 0.5:
            raise InvalidConfigError("alpha", f"alpha must be in (0, 0.5), got {self.alpha!r}")
        _finite("margin", self.margin)
        _range("reward_range", self.reward_range)
        if self.max_weight is not None and _finite("max_weight", self.max_weight) < 1.0:
            raise InvalidConfigError("max_weight",
                                     f"max_weight must be >= 1 (weights average 1), got {self.max_weight!r}")
        if self.guardrails is not None and not isinstance(self.guardrails, Mapping):
            raise InvalidConfigError("guardrails",
                                     f"guardrails must be a mapping metric -> margin, got {self.guardrails!r}")
        if not isinstance(self.metric_ranges, Mapping):
            raise InvalidConfigError("metric_ranges", f"metric_ranges must be a mapping metric -> (lo, hi), "
                                     f"got {self.metric_ranges!r}")
        for g in self.guardrail_list:
            _range(f"metric_ranges[{g.metric!r}]", self.metric_ranges.get(g.metric))
        if not isinstance(self.require_non_inferiority, bool):
            raise InvalidConfigError("require_non_inferiority", "require_non_inferiority must be a bool, "
                                     f"got {self.require_non_inferiority!r}")

    @property
    def guardrail_list(self) -> tuple[Guardrail, ...]:
        """The guardrails as :class:`ope.gate_options.Guardrail`, in the order given."""
        return tuple(_guardrail(m, s) for m, s in (self.guardrails or {}).items())

    @property
    def n_sequences(self) -> int:
        """Two-sided sequences sharing ``alpha``: 3 + one per guardrail."""
        return 3 + len(self.guardrails or {})

    @property
    def alpha_per_side(self) -> float:
        """``alpha / (2 * n_sequences)``: the error of each one-sided bound (Bonferroni)."""
        return self.alpha / (2 * self.n_sequences)


@dataclass(frozen=True)
class GuardrailStatus:
    """A guardrail at the current look: ``"pass"`` (non-inferiority shown), ``"fail"``
    (inferiority shown) or ``"pending"``.

    Examples
    --------
    >>> g = GuardrailStatus("cost_usd", "lower", 0.001, SequenceBounds(0.002, 0.0015, 0.003), "fail")
    >>> g.to_dict()["status"], g.to_dict()["difference"]["low"]
    ('fail', 0.0015)
    """

    metric: str
    direction: str
    margin: float
    difference: SequenceBounds
    status: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(vars(self), difference=self.difference.to_dict())


@dataclass(frozen=True)
class MonitorResult:
    """The monitor's state after a look: the decision, why, and every number behind it.

    ``decided_at_round`` is the number of rounds seen when promote/rollback was first
    declared (None while continuing); ``reason`` is the sentence written then.

    Examples
    --------
    >>> r = CanaryMonitor().result()
    >>> r.decision, r.n_rounds, r.to_dict()["difference"]
    ('continue', 0, {'estimate': None, 'low': -1.0, 'high': 1.0})
    """

    decision: str
    reason: str
    n_rounds: int
    n_batches: int
    alpha: float
    alpha_per_side: float
    n_sequences: int
    margin: float
    candidate: SequenceBounds
    baseline: SequenceBounds
    difference: SequenceBounds
    guardrails: tuple[GuardrailStatus, ...]
    failed_guardrail: str | None
    decided_at_round: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, e.g. the ``why`` of a rollback event."""
        out = {k: getattr(self, k) for k in ("decision", "reason", "n_rounds", "n_batches", "alpha", "alpha_per_side",
                                             "n_sequences", "margin", "failed_guardrail", "decided_at_round")}
        out.update(candidate=self.candidate.to_dict(), baseline=self.baseline.to_dict(),
                   difference=self.difference.to_dict(), guardrails=[g.to_dict() for g in self.guardrails])
        return out


def _vector(name: str, values: Any, n: int | None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidFeedbackError(name, f"{name} must be numeric, got {exc}") from None
    if array.ndim != 1:
        raise InvalidFeedbackError(name, f"{name} must be 1-dimensional, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise InvalidFeedbackError(name, f"{name} has length {array.shape[0]} but candidate_probs has length {n}")
    return array


def _check_in(name: str, x: np.ndarray, lo: float, hi: float, *, open_low: bool = False) -> None:
    bad = ~((x > lo) if open_low else (x >= lo)) | ~(x <= hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidFeedbackError(name, f"{name} must be in {'(' if open_low else '['}{lo:g}, {hi:g}], "
                                   f"got {float(x[i])!r} at round {i}")


class CanaryMonitor:
    """Anytime-valid promote / rollback / continue decisions for a canary (see module docs).

    ``options`` defaults to ``MonitorOptions()`` (alpha 0.05, margin 0, rewards in [0, 1]).
    State: ``n_rounds_``, ``n_batches_``, ``decision_`` (``"continue"`` until promote or
    rollback is declared, then that for good) and ``decided_at_round_``.

    Examples
    --------
    >>> m = CanaryMonitor(MonitorOptions(max_weight=2.0))
    >>> m.update(candidate_probs=[1.0], baseline_probs=[0.0], propensities=[0.2], rewards=[1.0])
    Traceback (most recent call last):
    ...
    ope.errors.InvalidFeedbackError: candidate_probs / propensities must be <= max_weight 2, got 5 at round 0
    """

    def __init__(self, options: MonitorOptions | None = None) -> None:
        if options is not None and not isinstance(options, MonitorOptions):
            raise InvalidConfigError("options", f"options must be a MonitorOptions, got {type(options).__name__}")
        self.options = MonitorOptions() if options is None else options
        o = self.options
        self._primary = OffPolicyCS(value_range=o.reward_range, alpha_side=o.alpha_per_side, max_weight=o.max_weight)
        self._rails = [(g, OffPolicyCS(value_range=tuple(o.metric_ranges[g.metric]), alpha_side=o.alpha_per_side,
                                       max_weight=o.max_weight, values=False)) for g in o.guardrail_list]
        self.n_rounds_ = 0
        self.n_batches_ = 0
        self.decision_ = "continue"
        self.decided_at_round_: int | None = None
        self._reason = "no decision yet"

    def update(self, *, candidate_probs: Any, baseline_probs: Any, propensities: Any, rewards: Any,
               metrics: Mapping[str, Any] | None = None) -> MonitorResult:
        """Add one batch of logged rounds and re-take the decision.

        ``candidate_probs``, ``baseline_probs`` (in [0, 1]: the probability the candidate / the
        baseline gives the logged action), ``propensities`` (in (0, 1]: the logged one),
        ``rewards`` (in ``reward_range``) have shape (n_rounds,); ``metrics`` maps every
        guardrail metric to its values (in its ``metric_ranges``), other keys are ignored.

        Returns the :class:`MonitorResult`; raises :class:`~ope.errors.InvalidFeedbackError`
        naming the field, the value and the round (the batch is then not added).
        """
        o = self.options
        pc = _vector("candidate_probs", candidate_probs, None)
        n = pc.shape[0]
        pb, p, r = (_vector(k, v, n) for k, v in (("baseline_probs", baseline_probs), ("propensities", propensities),
                                                    ("rewards", rewards)))
        for name, x, lo, hi in (("candidate_probs", pc, 0, 1), ("baseline_probs", pb, 0, 1), ("propensities", p, 0, 1),
                                ("rewards", r, *o.reward_range)):
            _check_in(name, x, lo, hi, open_low=name == "propensities")
        wc, wb = pc / p, pb / p
        if o.max_weight is not None:
            for name, w in (("candidate_probs", wc), ("baseline_probs", wb)):
                over = w > o.max_weight * (1.0 + 1e-9)  # float slack
                if over.any():
                    i = int(np.flatnonzero(over)[0])
                    raise InvalidFeedbackError(name, f"{name} / propensities must be <= max_weight {o.max_weight:g}, "
                                               f"got {w[i]:g} at round {i}")
        metrics = {} if metrics is None else metrics
        if not isinstance(metrics, Mapping):
            raise InvalidFeedbackError("metrics", f"metrics must be a mapping metric -> values, got {metrics!r}")
        columns = []
        for g, _ in self._rails:
            if g.metric not in metrics:
                raise InvalidFeedbackError("metrics", f"metrics must include the guardrail metric {g.metric!r}, "
                                           f"got {sorted(metrics)}")
            name = f"metrics[{g.metric!r}]"
            y = _vector(name, metrics[g.metric], n)
            _check_in(name, y, *o.metric_ranges[g.metric])
            columns.append(y)
        self._primary.update(w_candidate=wc, w_baseline=wb, outcomes=r)
        for (_, cs), y in zip(self._rails, columns):
            cs.update(w_candidate=wc, w_baseline=wb, outcomes=y)
        self.n_rounds_ += n
        self.n_batches_ += 1
        result = self.result()
        if self.decision_ == "continue" and result.decision != "continue":
            self.decision_, self.decided_at_round_, self._reason = result.decision, self.n_rounds_, result.reason
            result = self.result()
        return result

    def result(self) -> MonitorResult:
        """The numbers now, and the decision (final once promote or rollback was declared)."""
        o = self.options
        diff = self._primary.difference()
        rails = tuple(self._status(g, cs) for g, cs in self._rails)
        failed = next((g.metric for g in rails if g.status == "fail"), None)
        decision, reason = self.decision_, self._reason
        if decision == "continue":
            decision, reason = self._decide(diff, rails, failed)
        return MonitorResult(
            decision=decision, reason=reason, n_rounds=self.n_rounds_, n_batches=self.n_batches_, alpha=o.alpha,
            alpha_per_side=o.alpha_per_side, n_sequences=o.n_sequences, margin=float(o.margin),
            candidate=self._primary.value("candidate"), baseline=self._primary.value("baseline"),
            difference=diff, guardrails=rails, failed_guardrail=failed, decided_at_round=self.decided_at_round_)

    @staticmethod
    def _status(g: Guardrail, cs: OffPolicyCS) -> GuardrailStatus:
        bounds = cs.difference()
        t = g.threshold
        if g.direction == "lower":
            status = "fail" if bounds.low > t else "pass" if bounds.high < t else "pending"
        else:
            status = "fail" if bounds.high < t else "pass" if bounds.low > t else "pending"
        return GuardrailStatus(g.metric, g.direction, float(g.margin), bounds, status)

    def _decide(self, diff: SequenceBounds, rails: tuple[GuardrailStatus, ...], failed: str | None) -> tuple[str, str]:
        o, n = self.options, self.n_rounds_
        where = f"after {n:,} rounds (each bound at alpha {o.alpha:g} / {2 * o.n_sequences}, Bonferroni)"
        if failed is not None:
            g = next(g for g in rails if g.metric == failed)
            lower = g.direction == "lower"
            edge, side, word = (g.difference.low, "lower", ">") if lower else (g.difference.high, "upper", "<")
            return "rollback", (f"guardrail {g.metric}: candidate - baseline {side} bound {edge:.6g} {word} "
                                f"{g.margin if lower else -g.margin:g} (allowed {'increase' if lower else 'decrease'} "
                                f"{g.margin:g}) {where}")
        worse = -abs(float(o.margin))
        if diff.high < worse:
            return "rollback", f"reward: candidate - baseline upper bound {diff.high:.6g} < {worse:g} {where}"
        pending = [g.metric for g in rails if g.status != "pass"] if o.require_non_inferiority else []
        if diff.low > o.margin:
            shown = f"reward: candidate - baseline lower bound {diff.low:.6g} > margin {o.margin:g}"
            return ("continue", f"{shown}, but not yet shown non-inferior: {', '.join(pending)} {where}") if pending \
                else ("promote", f"{shown} {where}")
        return "continue", f"no decision yet {where}"
