"""Feasibility: which profiles may serve a request before any policy scores them.

Router-wide budgets exclude a profile for every request (its configured cost or latency is
over the limit); a profile's allow-list (``allow = {"region": ["eu"]}``) excludes it for the
requests whose field is absent or not allowed. Every exclusion carries its reason, logged with
the decision (column ``excluded``).

>>> from banditroute.config.profiles import Budget, Profile
>>> f = Feasibility([Profile("a", cost_usd=0.01), Profile("b", allow={"region": ["eu"]})],
...                 Budget(max_cost_usd=0.001))
>>> failing, mask = f.of({"region": "us"})
>>> mask.tolist(), f.excluded({"region": "us"}, failing)
([False, False], {'a': 'cost_usd 0.01 > budget.max_cost_usd 0.001', 'b': 'not in the allow-list for region'})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Feasibility", "allowed"]

_ABSENT = object()


class Feasibility:
    """The static exclusions (budgets) and allow-list rules of a router's profiles."""

    def __init__(self, profiles: Sequence, budget):
        self.names = [p.name for p in profiles]
        self.static_excluded: dict[str, str] = {}
        for p in profiles:
            if budget.max_cost_usd is not None and p.cost_usd > budget.max_cost_usd:
                self.static_excluded[p.name] = f"cost_usd {p.cost_usd:g} > budget.max_cost_usd {budget.max_cost_usd:g}"
            elif budget.max_latency_ms is not None and p.latency_ms > budget.max_latency_ms:
                self.static_excluded[p.name] = (f"latency_ms {p.latency_ms:g} > budget.max_latency_ms "
                                                f"{budget.max_latency_ms:g}")
        self.static_excluded_json = json.dumps(self.static_excluded, separators=(",", ":"))
        self.static_feasible = np.array([n not in self.static_excluded for n in self.names])
        #: (profile index, context field, allowed values) of every allow-list rule that matters
        self.rules = [(i, key, values) for i, p in enumerate(profiles) if p.allow
                      for key, values in p.allow.items() if p.name not in self.static_excluded]

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
        out = dict(self.static_excluded)
        for i in failing:
            keys = [key for j, key, values in self.rules if j == i and not allowed(context.get(key, _ABSENT), values)]
            out[self.names[i]] = "not in the allow-list for " + ", ".join(keys)
        return out


def allowed(value, values: frozenset) -> bool:
    """Whether a context value passes an allow-list (an unhashable value never does)."""
    try:
        return value in values
    except TypeError:
        return False
