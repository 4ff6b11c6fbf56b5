"""Feasibility: which profiles may serve a request before any policy scores them.

A profile's allow-list (``allow = {"region": ["eu"]}``) excludes it for the requests whose
field is absent or not allowed; a budget (the router's, or one request's) excludes the profiles
whose *expected* cost or latency for the request (the learned posterior mean, see
:mod:`banditroute.decide.usage`) is over its limit. Every exclusion carries its reason, logged
with the decision (column ``excluded``).

>>> import numpy as np
>>> from banditroute.config.profiles import Budget, Profile
>>> f = Feasibility([Profile("a", cost_usd=0.01), Profile("b", allow={"region": ["eu"]})])
>>> failing, mask = f.of({"region": "us"})
>>> mask.tolist(), f.excluded({"region": "us"}, failing)
([True, False], {'b': 'not in the allow-list for region'})
>>> over_budget(["a", "b"], np.array([0.01, 0.0]), np.array([900.0, 100.0]), Budget(max_cost_usd=0.001), "budget")
{0: 'expected cost_usd 0.01 > budget.max_cost_usd 0.001'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Feasibility", "allowed", "over_budget"]

_ABSENT = object()


class Feasibility:
    """The allow-list rules of a router's profiles."""

    def __init__(self, profiles: Sequence):
        self.names = [p.name for p in profiles]
        self.static_feasible = np.ones(len(self.names), dtype=bool)
        #: (profile index, context field, allowed values) of every allow-list rule
        self.rules = [(i, key, values) for i, p in enumerate(profiles) if p.allow for key, values in p.allow.items()]

    def of(self, context: Mapping) -> tuple[tuple, np.ndarray]:
        """``(failing, mask)``: the profiles whose allow-list the request fails, and the mask."""
        failing = tuple(i for i, key, values in self.rules if not allowed(context.get(key, _ABSENT), values))
        if not failing:
            return failing, self.static_feasible
        mask = self.static_feasible.copy()
        mask[list(failing)] = False
        return failing, mask

    def excluded(self, context: Mapping, failing: tuple) -> dict[str, str]:
        """Every excluded profile with its reason (names the fields, not their values: the
        reasons are cached per failing set)."""
        out = {}
        for i in failing:
            keys = [key for j, key, values in self.rules if j == i and not allowed(context.get(key, _ABSENT), values)]
            out[self.names[i]] = "not in the allow-list for " + ", ".join(keys)
        return out


def over_budget(names: list[str], cost: np.ndarray, latency: np.ndarray, budget, scope: str) -> dict[int, str]:
    """``{profile index: reason}`` of the profiles whose expected ``cost`` / ``latency`` (arrays
    of shape (n_profiles,)) exceed ``budget``; ``scope`` names the budget in the reason
    (``"budget"``: the router's, ``"request budget"``: the request's)."""
    out = {}
    if budget.max_cost_usd is not None:
        for k in np.flatnonzero(cost > budget.max_cost_usd):
            out[int(k)] = f"expected cost_usd {cost[k]:.4g} > {scope}.max_cost_usd {budget.max_cost_usd:g}"
    if budget.max_latency_ms is not None:
        for k in np.flatnonzero(latency > budget.max_latency_ms):
            out.setdefault(int(k), f"expected latency_ms {latency[k]:.4g} > {scope}.max_latency_ms "
                                   f"{budget.max_latency_ms:g}")
    return out


def allowed(value, values: frozenset) -> bool:
    """Whether a context value passes an allow-list (an unhashable value never does)."""
    try:
        return value in values
    except TypeError:
        return False
