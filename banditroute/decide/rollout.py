"""Shadow and canary stages: candidate policies next to production on live traffic.

*Shadow*: a candidate's action distribution is computed for every request and logged with the
decision (column ``shadow``: JSON ``{name: [p aligned with profiles]}``); it never changes what
is executed. *Canary*: a fraction ``f`` of traffic is decided by the candidate. The router draws
the executed profile from the mixture ``(1 - f) * pi_production + f * pi_candidate`` and logs
that mixture as the probabilities, so the logged propensity is the true probability of the
executed profile and canary traffic stays valid for off-policy evaluation.

A candidate is anything with ``probabilities(context) -> {profile: p}`` (another
:class:`~banditroute.decide.router.Router` with ``log_dir=None``, a static table, a wrapped VW
policy). A Router candidate also learns from every applied outcome.

>>> import numpy as np
>>> class Static:
...     def probabilities(self, context):
...         return {"large": 1.0}
>>> rollout = Rollout()
>>> rollout.start_canary("table", Static(), 0.25)
>>> pmf, shadow = rollout.apply({}, np.array([0.5, 0.5]), ["small", "large"])
>>> pmf.tolist(), shadow
([0.375, 0.625], '{"table":[0.0,1.0]}')
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import numpy as np

from ..config.profiles import check_number
from ..errors import ConfigError

__all__ = ["Rollout", "RolloutControls"]


class Rollout:
    """The shadow candidates and the canary of one router."""

    def __init__(self):
        self.shadows: dict[str, object] = {}
        self.canary: tuple[str, object, float] | None = None

    @property
    def active(self) -> bool:
        return bool(self.shadows) or self.canary is not None

    def add_shadow(self, name: str, policy) -> None:
        _check_policy(name, policy)
        if name in self.shadows or (self.canary and self.canary[0] == name):
            raise ConfigError("name", name, "is already a shadow or canary policy")
        self.shadows[name] = policy

    def remove_shadow(self, name: str) -> None:
        if name not in self.shadows:
            raise ConfigError("name", name, f"is not a shadow policy (shadows: {sorted(self.shadows)})")
        del self.shadows[name]

    def start_canary(self, name: str, policy, fraction: float) -> None:
        _check_policy(name, policy)
        if self.canary is not None:
            raise ConfigError("canary", self.canary[0], "is already running: promote or roll it back first")
        if name in self.shadows:
            raise ConfigError("name", name, "is already a shadow policy")
        self.canary = (name, policy, check_number("fraction", fraction, lo=0.0, hi=1.0))

    def set_fraction(self, fraction: float) -> None:
        if self.canary is None:
            raise ConfigError("canary", None, "is not running")
        name, policy, _ = self.canary
        self.canary = (name, policy, check_number("fraction", fraction, lo=0.0, hi=1.0))

    def stop_canary(self) -> tuple[str, object, float]:
        if self.canary is None:
            raise ConfigError("canary", None, "is not running")
        canary, self.canary = self.canary, None
        return canary

    def candidates(self):
        """Every candidate policy, shadow and canary."""
        yield from self.shadows.values()
        if self.canary is not None:
            yield self.canary[1]

    def apply(self, context: Mapping, production: np.ndarray, names: list[str]) -> tuple[np.ndarray, str]:
        """The pmf to draw from (production, or the canary mixture) and the shadow column's JSON."""
        logged = {name: _pmf(name, policy, context, names) for name, policy in self.shadows.items()}
        pmf = production
        if self.canary is not None:
            name, policy, fraction = self.canary
            candidate = _pmf(name, policy, context, names)
            logged[name] = candidate
            pmf = (1.0 - fraction) * production + fraction * candidate
        return pmf, json.dumps({k: v.tolist() for k, v in logged.items()}, separators=(",", ":"))


def _check_policy(name: str, policy) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError("name", name, "must be a non-empty string")
    if not callable(getattr(policy, "probabilities", None)):
        raise ConfigError("policy", policy, "must have probabilities(context) -> {profile: p}")


def _pmf(name: str, policy, context: Mapping, names: list[str]) -> np.ndarray:
    probs = policy.probabilities(context)
    out = np.zeros(len(names))
    index = {n: i for i, n in enumerate(names)}
    for profile, p in probs.items():
        if p and profile not in index:
            raise ConfigError(f"{name}.probabilities", profile, f"is not a profile of this router {names}")
        if p:
            out[index[profile]] = p
    if not np.all(out >= 0) or abs(out.sum() - 1.0) > 1e-9:
        raise ConfigError(f"{name}.probabilities", dict(probs), "must be non-negative and sum to 1")
    return out / out.sum()


class RolloutControls:
    """The Router's rollout commands (mixed into :class:`~banditroute.decide.router.Router`).

    Every command is recorded as an event row (who, what, why) in the log's ``events`` table
    and flushed at once.
    """

    def add_shadow(self, name: str, policy, *, who: str = "", why: str = "") -> None:
        """Compute ``policy``'s distribution on every request and log it (column ``shadow``)
        next to the decision, without changing what is executed."""
        with self._lock:
            self._rollout.add_shadow(name, policy)
            self._event("shadow_start", name, None, who, why)

    def remove_shadow(self, name: str, *, who: str = "", why: str = "") -> None:
        with self._lock:
            self._rollout.remove_shadow(name)
            self._event("shadow_stop", name, None, who, why)

    def start_canary(self, name: str, policy, *, fraction: float, who: str, why: str) -> None:
        """Let ``policy`` decide a ``fraction`` of traffic; the logged propensity is the mixture
        probability, exactly. Recorded as an event (who, what, why) in the log."""
        with self._lock:
            self._rollout.start_canary(name, policy, fraction)
            self._event("canary_start", name, fraction, who, why)

    def set_canary_fraction(self, fraction: float, *, who: str, why: str) -> None:
        with self._lock:
            self._rollout.set_fraction(fraction)
            self._event("canary_fraction", self._rollout.canary[0], fraction, who, why)

    def promote(self, *, who: str, why: str):
        """Promote the canary: it decides all traffic from now on (fraction 1). Returns it."""
        with self._lock:
            self._rollout.set_fraction(1.0)
            name, policy, _ = self._rollout.canary
            self._event("promote", name, 1.0, who, why)
            return policy

    def rollback(self, *, who: str, why: str) -> None:
        """Stop the canary: production decides all traffic again."""
        with self._lock:
            name, _, fraction = self._rollout.stop_canary()
            self._event("rollback", name, fraction, who, why)

    def _event(self, event: str, policy: str, fraction, who: str, why: str) -> None:
        for field, value in (("who", who), ("why", why)):
            if not isinstance(value, str):
                raise ConfigError(field, value, "must be a string")
        if self._log is not None:
            seq = self._seq
            self._seq += 1
            self._log.append("events", (time.time_ns() // 1000, self._writer_id, seq, event, policy,
                                        None if fraction is None else float(fraction), who, why,
                                        self._policy_version))
            self._log.flush()  # rare and important: durable at once

