"""The simulator's verifier, and the escalation cascade it drives.

In production a caller often checks an answer before using it (the code's tests run, a judge
grades it, a schema validates it) and, when it fails, asks the router for another profile:
``router.escalate(decision_id, reason="verifier_failed")``. The simulator plays that caller
when it is given a :class:`Verifier` (``Simulator(..., verifier=Verifier())``):

* the verifier is exact about the simulated quality: an answer **passes** when its quality is
  at least ``threshold``. With binary quality (the default) a good answer (1) passes and a bad
  one (0) fails, whatever the threshold in (0, 1]; with graded quality (a Beta grade with the
  profile's reliability as its mean) the threshold cuts the grade. So the probability that
  profile ``k`` passes on a request is its reliability (binary), or ``1 - I_t(4 rel, 4 (1 - rel))``
  (graded; ``I`` the regularised incomplete beta function): ``Simulator.pass_probability``.
* :meth:`Simulator.cascade <banditroute.sim.simulator.Simulator.cascade>` escalates each failed
  answer of a submitted batch, executes the child decision on the same request (its outcome
  arrives with the request's delay, like the first one's), verifies it, and escalates again,
  up to the router's ``max_escalations``. Every call's outcome is recorded by the caller as
  usual (the parent's failed quality, the child's own), so the router learns from all of them.

:class:`Cascade` is what one batch went through; :class:`CascadeStats` adds the batches up:
the first-choice pass rate, the pass rate after the cascade, the calls and the cost per request.

>>> v = Verifier(threshold=0.5)
>>> import numpy as np
>>> v.passes(np.array([0.0, 0.49, 0.5, 1.0])).tolist()
[False, False, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decide.escalation import check_reason
from ..errors import ConfigError, InvalidRequestError
from ._checks import _check_float
from .records import Outcomes

__all__ = ["Verifier", "Cascade", "CascadeStats"]


@dataclass(frozen=True, kw_only=True)
class Verifier:
    """Passes an answer whose quality is at least ``threshold``; escalates the others.

    Parameters
    ----------
    threshold : float in (0, 1]
        The lowest quality that passes (binary quality: any value passes exactly the good answers).
    reason : str
        The escalation's reason, logged with the child decision.

    >>> Verifier(threshold=0.0)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: verifier.threshold must be > 0, got 0.0
    """

    threshold: float = 0.5
    reason: str = "verifier_failed"

    def __post_init__(self) -> None:
        _check_float("verifier.threshold", self.threshold, lo=0.0, hi=1.0, lo_open=True)
        try:
            check_reason(self.reason)
        except InvalidRequestError as exc:
            raise ConfigError("verifier.reason", self.reason, exc.problem) from None

    def passes(self, quality: np.ndarray) -> np.ndarray:
        """Whether each answer passes: bool array of the shape of ``quality``."""
        return np.asarray(quality) >= self.threshold


@dataclass(frozen=True, kw_only=True, eq=False)
class Cascade:
    """What the verifier and the escalations did to a batch of requests.

    ``first_passed``, ``passed``, ``n_calls``, ``cost_usd`` and ``latency_ms`` have one entry
    per request (shape ``(n,)``): whether the first answer passed, whether the last one did,
    how many profiles were called, and the sums of their cost and latency (the calls run one
    after the other). ``children`` are the escalated calls' outcomes (``tickets``: the child
    decision ids), ``n_exhausted`` the chains that stopped before ``max_escalations`` because
    no untried profile was left to escalate to.
    """

    first_passed: np.ndarray
    passed: np.ndarray
    n_calls: np.ndarray
    cost_usd: np.ndarray
    first_cost_usd: np.ndarray
    latency_ms: np.ndarray
    children: Outcomes
    n_exhausted: int = 0

    def __len__(self) -> int:
        return int(self.passed.shape[0])


@dataclass(kw_only=True)
class CascadeStats:
    """Per-request totals of the cascades so far (a :class:`~banditroute.sim.simulator.Simulator`
    keeps one, ``cascade_stats_``).

    >>> s = CascadeStats()
    >>> s.add(Cascade(first_passed=np.array([True, False]), passed=np.array([True, True]),
    ...               n_calls=np.array([1, 2]), cost_usd=np.array([0.001, 0.005]),
    ...               first_cost_usd=np.array([0.001, 0.002]), latency_ms=np.array([300.0, 900.0]),
    ...               children=None))
    >>> d = s.to_dict()
    >>> d["first_pass_rate"], d["pass_rate"], d["calls_per_request"], d["n_escalations"]
    (0.5, 1.0, 1.5, 1)
    """

    n_requests: int = 0
    n_first_passed: int = 0
    n_passed: int = 0
    n_calls: int = 0
    n_exhausted: int = 0
    cost_usd: float = 0.0
    first_cost_usd: float = 0.0
    latency_ms: float = 0.0

    def add(self, c: Cascade) -> None:
        self.n_requests += len(c)
        self.n_first_passed += int(c.first_passed.sum())
        self.n_passed += int(c.passed.sum())
        self.n_calls += int(c.n_calls.sum())
        self.n_exhausted += c.n_exhausted
        self.cost_usd += float(c.cost_usd.sum())
        self.first_cost_usd += float(c.first_cost_usd.sum())
        self.latency_ms += float(c.latency_ms.sum())

    def to_dict(self) -> dict:
        """Rates and means per request (None before any request): ``first_pass_rate``,
        ``pass_rate`` (after the cascade), ``calls_per_request``, ``cost_per_request_usd`` (all
        calls), ``first_cost_per_request_usd`` (the first calls alone), ``latency_per_request_ms``,
        and the counts ``n_requests``, ``n_escalations``, ``n_exhausted``."""
        n = self.n_requests

        def per(x):
            return x / n if n else None

        return {"n_requests": n, "first_pass_rate": per(self.n_first_passed), "pass_rate": per(self.n_passed),
                "calls_per_request": per(self.n_calls), "cost_per_request_usd": per(self.cost_usd),
                "first_cost_per_request_usd": per(self.first_cost_usd),
                "latency_per_request_ms": per(self.latency_ms), "n_escalations": self.n_calls - n,
                "n_exhausted": self.n_exhausted}
