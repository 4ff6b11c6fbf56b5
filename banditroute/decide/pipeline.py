"""The decision pipeline: from a validated context to the exact distribution it is drawn from.

For one request::

    context -> task-type posterior (TaskSpace) -> allow-lists (Feasibility)
            -> expected cost and latency (Usage) -> the router's and the request's budgets,
               cooldowns, the profiles an escalation chain already tried
            -> policy proposal (cost and latency scenarios in the utility) -> reliability floor
               -> exploration floor -> pmf (Policy.pmf) -> onboarding cap (OnboardingCaps)
            -> rollout stage (shadow pmfs logged; canary mixture drawn from) -> fallback, timeout

The result is an :class:`Entry`: the pmf with everything logged beside it. A policy that
declares itself ``cacheable`` is asked once per key (task, failing allow-lists, request budget,
tried profiles, cooldowns) until its ``version``, the learned costs' or the onboarding set's
changes; the entries are shared by every decision drawn from them.
"""

from __future__ import annotations

import json
import time
from itertools import repeat
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import polars as pl

from ..errors import ConfigError, NoFeasibleProfileError
from .decision import ProbabilityRow
from .feasibility import Feasibility, over_budget
from ..policies.base import PolicyQuery, pmf_rows

__all__ = ["Entry", "Rows", "DecisionPipeline"]

_CACHE_SIZE = 4096


class Entry:
    """A decision distribution for one (task, feasibility) key, and what is logged with it."""

    __slots__ = ("pmf", "pmf_list", "cdf", "probs", "excluded", "excluded_json", "fallback_reason", "shadow_json",
                 "expected")

    def __init__(self, pmf, names, excluded, expected, fallback_reason=None, shadow_json=None, excluded_json=None):
        self.pmf = pmf
        self.expected = expected  # posterior mean reliability of each profile for this request
        self.pmf_list = pmf.tolist()
        self.cdf = np.cumsum(pmf).tolist()
        # Read-only views: shared by every Decision drawn from this entry, safe from callers.
        self.probs = MappingProxyType(dict(zip(names, self.pmf_list)))
        self.excluded = MappingProxyType(excluded)
        self.excluded_json = excluded_json or json.dumps(excluded, separators=(",", ":"))
        self.fallback_reason = fallback_reason
        self.shadow_json = shadow_json


class Rows:
    """The entries of many requests as columns (what issuing a batch reads from each entry):
    the lists of pmfs, probability mappings, exclusions (and their JSON), fallback reasons,
    shadow JSON and expected qualities, one element per request."""

    __slots__ = ("pmf_lists", "probs", "excluded", "excluded_json", "fallback_reason", "shadow_json", "expected")

    def __init__(self, pmf_lists, probs, excluded, excluded_json, fallback_reason, shadow_json, expected):
        self.pmf_lists, self.probs, self.excluded, self.excluded_json = pmf_lists, probs, excluded, excluded_json
        self.fallback_reason, self.shadow_json, self.expected = fallback_reason, shadow_json, expected

    @classmethod
    def of(cls, entries: list) -> "Rows":
        return cls([e.pmf_list for e in entries], [e.probs for e in entries], [e.excluded for e in entries],
                   [e.excluded_json for e in entries], [e.fallback_reason for e in entries],
                   [e.shadow_json for e in entries], [e.expected for e in entries])


class DecisionPipeline:
    """The steps of one decision over a router's configuration, task space, beliefs, policy and
    rollout stage (each owned elsewhere; the pipeline owns the cache)."""

    def __init__(self, config, tasks, belief, policy, rollout, usage, onboarding):
        self.tasks = tasks
        self.belief = belief
        self.policy = policy
        self.rollout = rollout
        self.usage = usage
        self.onboarding = onboarding
        self.configure(config)

    def configure(self, config) -> None:
        """Derive the per-profile arrays of a (new) configuration and empty the cache."""
        self.config = config
        self.names = [p.name for p in config.profiles]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.feasibility = Feasibility(config.profiles)
        self._cache: dict = {}
        self._cache_version = None

    @property
    def cacheable(self) -> bool:
        return self.policy.cacheable

    def resolve(self, context, budget=None, tried: tuple = (), why: str | None = None) -> tuple[str, object, Entry]:
        """Validate a context; return its JSON text, its task and the entry to draw from (under
        the request's ``budget``, without the profiles ``tried`` by an escalation chain)."""
        text, task = self.tasks.parse(context)
        return (text, task, self.staged(task, context, budget, tried, why))

    def staged(self, task, context, budget=None, tried: tuple = (), why: str | None = None) -> Entry:
        """The entry to draw from for a parsed request: production's, then the rollout stage (for
        a first choice only: an escalation is production's choice among the untried profiles)."""
        ceiling = self.config.decision_timeout_ms
        start = time.perf_counter() if ceiling is not None else 0.0
        entry = self.entry(task, context, budget, tried, why)
        if self.rollout.active and not tried:  # production alone escalates: a canary decides first choices
            pmf, shadow = self.rollout.apply(context, entry.pmf, self.names)
            entry = Entry(pmf, self.names, dict(entry.excluded), entry.expected, entry.fallback_reason, shadow)
        if ceiling is not None:
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if elapsed_ms > ceiling:
                entry = self.fallback({}, f"decision took {elapsed_ms:.3f} ms > decision_timeout_ms {ceiling:g}",
                                      tried)
        return entry

    def action_distribution(self, contexts, profiles) -> np.ndarray:
        """The pmf of each context (no draw, nothing logged) as an array of shape
        (n_contexts, len(profiles)); see ``Router.action_distribution``."""
        if isinstance(contexts, pl.DataFrame):
            contexts = [{k: v for k, v in row.items() if v is not None} for row in contexts.iter_rows(named=True)]
        columns = [self.index.get(p, -1) for p in profiles]
        missing = sorted(set(self.names) - set(profiles))
        entries = [self.resolve(c)[2] for c in contexts]
        out = np.zeros((len(entries), len(profiles)))
        if not entries:
            return out
        pmf = np.stack([e.pmf for e in entries])
        if missing and pmf[:, [self.index[m] for m in missing]].max() > 0:
            raise ConfigError("profiles", missing, "must include every profile the router can play")
        known = [j for j, c in enumerate(columns) if c >= 0]
        out[:, known] = pmf[:, [columns[j] for j in known]]
        return out

    def entry(self, task, context: Mapping, budget=None, tried: tuple = (), why: str | None = None) -> Entry:
        """The production entry (before the rollout stage) for a task and a context."""
        failing, mask = self.feasibility.of(context)
        cooling = self.usage.cooling(time.time()) if self.config.cooldown is not None else ()
        if not self.policy.cacheable:
            return self._compute(task, mask, failing, context, budget, tried, why, cooling)
        version = (self.policy.version, self.usage.version, self.onboarding.version)
        if self._cache_version != version:
            self._cache.clear()
            self._cache_version = version
        key = (self.tasks.key(task), failing, None if budget is None else (budget.max_cost_usd, budget.max_latency_ms),
               tried, why, cooling)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._compute(task, mask, failing, context, budget, tried, why, cooling)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = entry
        return entry

    def clear_cache(self) -> None:
        """Forget the cached entries (they are recomputed on the next decision)."""
        self._cache.clear()

    def _compute(self, task, mask, failing, context, budget, tried, why, cooling) -> Entry:
        query, excluded = self.query(task, mask, failing, context, budget, tried, why, cooling)
        pmf, below = self.policy.pmf(query)
        cfg = self.config
        for i in np.flatnonzero(below):
            excluded[self.names[i]] = (f"reliability below floor {cfg.reliability_floor:g} with "
                                       f"probability > {cfg.floor_confidence:g}")
        if pmf is None:
            return self.fallback(excluded, "no feasible profile", tried)
        return Entry(self.onboarding.cap(pmf), self.names, excluded, self.expected(task))

    def query(self, task, mask, failing, context, budget=None, tried: tuple = (), why=None,
              cooling: tuple = ()) -> tuple[PolicyQuery, dict]:
        """The policy's view of one request, and the profiles excluded so far with the reasons."""
        cfg = self.config
        excluded = self.feasibility.excluded(context, failing)
        cost, latency = self.usage.expected(task)
        out: dict[int, str] = over_budget(self.names, cost, latency, cfg.budget, "budget")
        if budget is not None:
            for k, reason in over_budget(self.names, cost, latency, budget, "request budget").items():
                out.setdefault(k, reason)
        for k, _ in cooling:
            out[k] = self.usage.cooling_reason(k)
        for k in tried:
            out[k] = f"already tried in this escalation chain ({why})"
        if out:
            mask = mask.copy()
            mask[list(out)] = False
            excluded.update((self.names[k], reason) for k, reason in sorted(out.items()))
        obj = cfg.objective
        draws = self.usage.penalty_draws(task, obj) if self.policy.uses_scenarios else None
        return PolicyQuery(task, self.tasks.probs(task), mask, context, obj.cost * cost + obj.latency * latency,
                           obj.quality, cfg.exploration, draws), excluded

    def rows(self, frame: pl.DataFrame, tasks: np.ndarray, groups: list) -> tuple[Rows, np.ndarray] | None:
        """The entries of every row of ``frame`` for a ``batchable`` policy, the rows scored at
        once: ``groups`` lists, per (task, failing allow-lists) key, ``(rows, context of one row)``.
        Returns them as :class:`Rows` with their cumulative pmfs (n, n_profiles), or None when the
        policy needs the row path. Row i holds what :meth:`entry` gives for request i."""
        n = frame.height
        cooling = self.usage.cooling(time.time()) if self.config.cooldown is not None else ()
        feasible = np.zeros((n, len(self.names)), dtype=bool)
        made = []
        for rows, context in groups:
            task = int(tasks[rows[0]])
            failing, mask = self.feasibility.of(context)
            query, excluded = self.query(task, mask, failing, context, None, (), None, cooling)
            feasible[rows] = query.feasible
            made.append((rows, task, excluded))
        weights = self.policy.propose_frame(frame, self.tasks.probs_rows(tasks), feasible)
        if weights is None:
            return None
        pmfs, ok = pmf_rows(weights, feasible, self.config.exploration)
        if self.onboarding.active:
            pmfs[ok] = np.array([self.onboarding.cap(p) for p in pmfs[ok]])
        cdf = np.cumsum(pmfs, axis=1)
        pmf_lists = pmfs.tolist()
        probs = list(map(ProbabilityRow, repeat(self.index, n), pmf_lists))
        fallback_rows = [None] * n
        columns = [[None] * n, [None] * n, [None] * n]  # excluded, its JSON, expected quality
        for rows, task, excluded in made:
            values = (MappingProxyType(excluded), json.dumps(excluded, separators=(",", ":")), self.expected(task))
            fallback = None
            for column, value in zip(columns, values):
                if len(made) == 1:
                    column[:] = [value] * n
                else:
                    for i in rows.tolist():
                        column[i] = value
            excluded_rows, json_rows, expected_rows = columns
            for i in rows[~ok[rows]].tolist():  # no feasible profile: the fallback's entry
                fallback = fallback or self.fallback(dict(excluded), "no feasible profile")
                excluded_rows[i], json_rows[i], fallback_rows[i], expected_rows[i] = (
                    fallback.excluded, fallback.excluded_json, fallback.fallback_reason, fallback.expected)
                pmf_lists[i], probs[i], cdf[i] = fallback.pmf_list, fallback.probs, fallback.cdf
        excluded_rows, json_rows, expected_rows = columns
        return Rows(pmf_lists, probs, excluded_rows, json_rows, fallback_rows, [None] * n, expected_rows), cdf

    def expected(self, task) -> list:
        """Posterior mean reliability of every profile under the request's task posterior
        (logged with the decision as ``expected_quality``: the router's prediction, for calibration)."""
        means = self.belief.mean()
        return (means[:, task] if type(task) is int else means @ task).tolist()

    def fallback(self, excluded: dict, why: str, tried: tuple = ()) -> Entry:
        """The entry that plays the configured fallback profile (or the error without one, or
        when an escalation chain already tried it)."""
        fallback = self.config.fallback
        if fallback is None or self.index[fallback] in tried:
            detail = "; ".join(f"{k}: {v}" for k, v in excluded.items())
            rule = ("no fallback is configured" if fallback is None else
                    f"the fallback {fallback!r} was already tried in this escalation chain")
            raise NoFeasibleProfileError("profiles", problem=f"has no feasible profile for this request ({detail}) "
                                         f"and {rule}")
        pmf = np.zeros(len(self.names))
        pmf[self.index[fallback]] = 1.0
        return Entry(pmf, self.names, excluded, [None] * len(self.names), fallback_reason=why)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}  # entries hold read-only views that do not pickle; recomputed on demand
        state["_cache_version"] = None
        return state
