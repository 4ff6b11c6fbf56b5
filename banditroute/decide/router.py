"""The Router: the one object the library, the CLI and the service use.

>>> import banditroute as br
>>> router = br.Router([br.Profile("small", cost_usd=0.0004, latency_ms=400),
...                     br.Profile("large", cost_usd=0.0120, latency_ms=2500)],
...                    task_types=["chat", "code"], seed=0)
>>> d = router.decide({"task_type": "code", "tenant": "acme"})
>>> d.profile in ("small", "large"), round(sum(d.probabilities.values()), 12)
(True, 1.0)
>>> d.propensity == d.probabilities[d.profile]
True
>>> router.record(d.id, quality=1.0, cost_usd=0.0009, latency_ms=640)
'applied'
>>> router.record(d.id, quality=1.0)
'duplicate'
"""

from __future__ import annotations

import json
import os
import threading
import time
from bisect import bisect_right
from collections import deque
from itertools import repeat
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import polars as pl

from .frame import plan_frame
from ..beliefs.beta import BetaBelief
from ..config.profiles import Objective, Profile, check_number
from .decision import Decision, make_decision
from ..beliefs.drift import PageHinkley
from ..policies.linear import LinearTS
from ..errors import ConfigError, InvalidOutcomeError, NoFeasibleProfileError, UnknownDecisionError
from ..policies.bank import GreedyPolicy, ThompsonPolicy
from .request import TaskSpace
from .persistence import RouterPersistence, open_log
from .rollout import Rollout, RolloutControls
from ..config.settings import RouterConfig, load_config

__all__ = ["Router"]


class _Entry:
    """A cached decision distribution for one (task, feasibility) key."""

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


class Router(RolloutControls, RouterPersistence):
    """Routes requests across profiles by Thompson sampling, logging exact propensities.

    Parameters
    ----------
    profiles : sequence of Profile
    **settings
        Keyword-only settings of :class:`banditroute.config.settings.RouterConfig`: ``task_types``,
        ``objective``, ``budget``, ``policy``, ``exploration``, ``discount``, ``prior``, ``n_draws``,
        ``refresh_every``, ``reliability_floor``, ``floor_confidence``, ``fallback``,
        ``decision_timeout_ms``, ``log_dir``, ``durability``, ``log_journal``, ``wait_window_s``,
        ``max_pending``, ``policy_version``, ``seed``; ``task_model``, a
        :class:`~banditroute.decide.request.TaskClassifier` for requests without a task-type label;
        and ``learner``, an alternative contextual learner (e.g. Vowpal Wabbit) with
        ``distribution(context, task_probs, feasible) -> pmf``,
        ``learn(context, k, reward, propensity)`` and ``add_profile(profile)``: the router
        still validates, masks, applies its exploration floor (if > 0), draws, logs the exact
        propensity and keeps the Beta beliefs for reporting; the learner scores and learns.
    """

    def __init__(self, profiles: Sequence[Profile], *, task_model=None, learner=None, **settings):
        task_types = settings.pop("task_types", None)
        if task_types is not None:
            if isinstance(task_types, str) or not isinstance(task_types, Sequence):
                raise ConfigError("task_types", task_types, "must be a list of task-type names")
            settings["task_types"] = tuple(task_types)
        if isinstance(settings.get("features"), Mapping):
            settings["features"] = tuple(settings["features"].items())
        if settings.get("log_dir") is not None and isinstance(settings["log_dir"], os.PathLike):
            settings["log_dir"] = os.fspath(settings["log_dir"])
        if isinstance(profiles, Profile) or not isinstance(profiles, Sequence):
            raise ConfigError("profiles", profiles, "must be a sequence of Profile")
        self.config = RouterConfig(profiles=tuple(profiles), **settings)
        if learner is not None and not all(callable(getattr(learner, m, None))
                                           for m in ("distribution", "learn", "add_profile")):
            raise ConfigError("learner", learner, "must have distribution(), learn() and add_profile()")
        if self.config.policy == "linear":
            if learner is not None:
                raise ConfigError("learner", learner, "must not be given with policy='linear' (it is the learner)")
            cfg = self.config
            learner = LinearTS(len(cfg.profiles), cfg.task_types, cfg.features, n_draws=cfg.n_draws,
                               discount=cfg.discount, refresh_every=cfg.refresh_every,
                               seed=np.random.SeedSequence(cfg.seed).spawn(3)[2])
        self._learner = learner
        self._init_state(task_model)
        self._log = open_log(self.config)
        self._writer_id = self._log.writer_id if self._log else os.urandom(6).hex()
        self._issued = {self._writer_id: 0}

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str | os.PathLike, **overrides) -> "Router":
        """Build a router from a TOML file (see :func:`banditroute.config.settings.load_config`)."""
        profiles, settings = load_config(path)
        from_file = set(settings)
        settings.update(overrides)
        try:
            return cls(profiles, **settings)
        except ConfigError as exc:  # a cross-field check: report it against the file's key
            key = exc.field.split("[")[0].split(".")[0]
            if key not in from_file:
                raise
            section = "" if key in ("objective", "budget", "prior") else "router."
            raise exc.renamed(f"{Path(path).name}: {section}{exc.field}") from None

    def _init_state(self, task_model) -> None:
        cfg = self.config
        seeds = np.random.SeedSequence(cfg.seed).spawn(2)
        self._rng = np.random.default_rng(seeds[0])
        self._tasks = TaskSpace(cfg.task_types, task_model)
        alpha0, beta0 = self._priors(cfg.profiles)
        self._belief = BetaBelief(alpha0, beta0, n_draws=cfg.n_draws, discount=cfg.discount,
                                  refresh_every=cfg.refresh_every, seed=seeds[1])
        policy_class = GreedyPolicy if cfg.policy == "greedy" else ThompsonPolicy
        self._policy = policy_class(self._belief, exploration=cfg.exploration,
                                    reliability_floor=cfg.reliability_floor,
                                    floor_confidence=cfg.floor_confidence)
        self._drift = None
        if cfg.drift is not None:
            self._drift = PageHinkley(self._belief.shape, delta=cfg.drift.delta, threshold=cfg.drift.threshold,
                                      min_samples=cfg.drift.min_samples)
        self.drift_events: list[dict] = []
        # decision id -> (profile index, task, ts_us[, context JSON, propensity] for learners)
        self._pending: dict[str, tuple] = {}
        self._recorded: set[str] = set()  # pending decisions that already have their outcome
        self._pending_order: deque[str] = deque()
        self._rollout = Rollout()
        self._seq = 0
        self._lock = threading.RLock()
        self._derive()

    def _priors(self, profiles) -> tuple[np.ndarray, np.ndarray]:
        priors = [[p.prior_for(t, self.config.prior) for t in self.config.task_types] for p in profiles]
        return (np.array([[b.alpha for b in row] for row in priors], dtype=np.float64),
                np.array([[b.beta for b in row] for row in priors], dtype=np.float64))

    def _derive(self) -> None:
        """Per-profile arrays derived from the configuration (recomputed when it changes)."""
        cfg = self.config
        obj, budget = cfg.objective, cfg.budget
        self._names = [p.name for p in cfg.profiles]
        self._index = {n: i for i, n in enumerate(self._names)}
        self._offset = np.array([obj.cost * p.cost_usd + obj.latency * p.latency_ms for p in cfg.profiles])
        self._static_excluded = {}
        for p in cfg.profiles:
            if budget.max_cost_usd is not None and p.cost_usd > budget.max_cost_usd:
                self._static_excluded[p.name] = f"cost_usd {p.cost_usd:g} > budget.max_cost_usd {budget.max_cost_usd:g}"
            elif budget.max_latency_ms is not None and p.latency_ms > budget.max_latency_ms:
                self._static_excluded[p.name] = (f"latency_ms {p.latency_ms:g} > budget.max_latency_ms "
                                                 f"{budget.max_latency_ms:g}")
        self._static_excluded_json = json.dumps(self._static_excluded, separators=(",", ":"))
        self._static_feasible = np.array([n not in self._static_excluded for n in self._names])
        self._allow = [(i, key, allowed) for i, p in enumerate(cfg.profiles) if p.allow
                       for key, allowed in p.allow.items() if p.name not in self._static_excluded]
        self._one_hot = [np.eye(len(cfg.task_types))[t] for t in range(len(cfg.task_types))]
        self._one_hot_lists = [row.tolist() for row in self._one_hot]
        self._one_hot_views = [MappingProxyType(dict(zip(cfg.task_types, row))) for row in self._one_hot_lists]
        self._policy_version = cfg.policy_version or cfg.fingerprint()
        if self._learner is not None and cfg.policy_version is None and cfg.policy != "linear":
            self._policy_version = f"{type(self._learner).__name__.lower()}-{self._policy_version.split('-', 2)[-1]}"
        self._cache: dict = {}
        self._cache_version = -1

    def add_profile(self, profile: Profile) -> None:
        """Add a profile; it starts from its prior (diffuse unless it carries one)."""
        with self._lock:
            if not isinstance(profile, Profile):
                raise ConfigError("profile", profile, "must be a Profile")
            if profile.name in self._index:
                raise ConfigError("profile.name", profile.name, "is already a profile of this router")
            if self._learner is not None:
                self._learner.add_profile(profile)
            self.config = replace(self.config, profiles=self.config.profiles + (profile,))
            alpha0, beta0 = self._priors([profile])
            self._belief.add_profile(alpha0, beta0)
            if self._drift is not None:
                self._drift.add_profile()
            self._derive()

    # -- deciding ---------------------------------------------------------------------------
    @property
    def profiles(self) -> list[str]:
        """Names of the profiles, in the order used by ``probabilities`` arrays."""
        return list(self._names)

    @property
    def task_types(self) -> list[str]:
        return list(self.config.task_types)

    @property
    def objective(self) -> Objective:
        return self.config.objective

    @property
    def policy_version(self) -> str:
        return self._policy_version

    @property
    def task_model(self):
        """The task-type classifier for requests without a label (None: labels required)."""
        return self._tasks.task_model

    @property
    def writer_id(self) -> str:
        """This router's writer id: the prefix of every decision id it issues."""
        return self._writer_id

    @property
    def log_writer(self):
        """The :class:`~banditroute.logs.store.LogWriter` this router logs through (None without a log)."""
        return self._log

    @property
    def lock(self):
        """The router's re-entrant lock: hold it to make several calls one atomic step."""
        return self._lock

    @property
    def log_position(self) -> int:
        """Log rows sequenced so far by this writer (the next row's ``seq``)."""
        return self._seq

    def _feasibility(self, context: Mapping) -> tuple[tuple, np.ndarray]:
        failing = tuple(i for i, key, allowed in self._allow
                        if not _allowed(context.get(key, _ABSENT), allowed))
        if not failing:
            return failing, self._static_feasible
        mask = self._static_feasible.copy()
        mask[list(failing)] = False
        return failing, mask

    def _entry(self, task, context: Mapping) -> _Entry:
        if self._learner is not None:
            failing, mask = self._feasibility(context)
            return self._compute(task, mask, failing, context)
        if self._cache_version != self._policy.version:
            self._cache.clear()
            self._cache_version = self._policy.version
        failing, mask = self._feasibility(context)
        key = (task if isinstance(task, int) else task.tobytes(), failing)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._compute(task, mask, failing, context)
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[key] = entry
        return entry

    def _compute(self, task, mask, failing, context) -> _Entry:
        excluded = dict(self._static_excluded)
        for i in failing:
            keys = [key for j, key, allowed in self._allow if j == i and not _allowed(context.get(key, _ABSENT), allowed)]
            # the reason names the fields, not their values: entries are cached per failing set
            excluded[self._names[i]] = "not in the allow-list for " + ", ".join(keys)
        if self._learner is not None:
            pmf, below = self._learner_distribution(task, mask, context), ()
        else:
            pmf, below = self._policy.distribution(task, mask, self._offset, self.config.objective.quality)
            below = np.flatnonzero(below)
        for i in below:
            excluded[self._names[i]] = (f"reliability below floor {self.config.reliability_floor:g} with "
                                        f"probability > {self.config.floor_confidence:g}")
        if pmf is None:
            return self._fallback_entry(excluded, "no feasible profile")
        static = not failing and not len(below)  # the usual case: the exclusions' JSON is made once
        return _Entry(pmf, self._names, excluded, self._expected(task),
                      excluded_json=self._static_excluded_json if static else None)

    def _learner_distribution(self, task, mask: np.ndarray, context: Mapping) -> np.ndarray | None:
        n_feasible = int(mask.sum())
        if n_feasible == 0:
            return None
        w = self._one_hot[task] if isinstance(task, int) else task
        pmf = np.asarray(self._learner.distribution(context, w, mask.copy()), dtype=np.float64)
        # a learner that guarantees a distribution over the feasible profiles (our LinearTS: a
        # share of draws) is not re-checked on every decision; any other one is
        if not getattr(self._learner, "returns_valid_pmf", False) and (
                pmf.shape != mask.shape or not np.all(np.isfinite(pmf)) or np.any(pmf < 0)
                or np.any(pmf[~mask] > 0) or abs(pmf.sum() - 1.0) > 1e-6):
            raise ConfigError("learner.distribution", pmf.tolist(),
                              "must return non-negative probabilities over the feasible profiles summing to 1")
        eps = self.config.exploration
        if eps == 0.0:
            return pmf / pmf.sum()
        return (1.0 - eps) * pmf / pmf.sum() + (eps / n_feasible) * mask

    def _expected(self, task) -> list:
        """Posterior mean reliability of every profile under the request's task posterior
        (logged with the decision as ``expected_quality``: the router's prediction, for calibration)."""
        means = self._belief.mean()
        return (means[:, task] if isinstance(task, int) else means @ task).tolist()

    def _fallback_entry(self, excluded: dict, why: str) -> _Entry:
        fallback = self.config.fallback
        if fallback is None:
            detail = "; ".join(f"{k}: {v}" for k, v in excluded.items())
            raise NoFeasibleProfileError("profiles", None, f"has no feasible profile for this request ({detail}) "
                                         "and no fallback is configured")
        pmf = np.zeros(len(self._names))
        pmf[self._index[fallback]] = 1.0
        return _Entry(pmf, self._names, excluded, [None] * len(self._names), fallback_reason=why)

    def _resolve(self, context) -> tuple[str, object, _Entry]:
        text, task = self._tasks.parse(context)
        ceiling = self.config.decision_timeout_ms
        start = time.perf_counter() if ceiling is not None else 0.0
        entry = self._entry(task, context)
        if self._rollout.active:
            pmf, shadow = self._rollout.apply(context, entry.pmf, self._names)
            entry = _Entry(pmf, self._names, dict(entry.excluded), entry.expected, entry.fallback_reason, shadow)
        if ceiling is not None:
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if elapsed_ms > ceiling:
                entry = self._fallback_entry({}, f"decision took {elapsed_ms:.3f} ms > decision_timeout_ms {ceiling:g}")
        return text, task, entry

    def probabilities(self, context: Mapping) -> dict[str, float]:
        """The distribution ``decide(context)`` would draw from now; no side effects."""
        with self._lock:
            return dict(self._resolve(context)[2].probs)

    def decide(self, context: Mapping) -> Decision:
        """Choose a profile for one request and log the decision with its exact propensity."""
        with self._lock:
            text, task, entry = self._resolve(context)
            k = bisect_right(entry.cdf, self._rng.random() * entry.cdf[-1])
            return self._issue(text, task, entry, k, time.time_ns() // 1000)

    def decide_batch(self, contexts: Sequence[Mapping] | pl.DataFrame) -> list[Decision]:
        """Decide for many requests at once; the same decisions as calling ``decide`` on each
        in order (one uniform draw per request, in order), logged as one batch.

        ``contexts`` is a sequence of mappings, or a polars DataFrame with one column per
        field (the vectorised path: validation, JSON encoding and the draws run column-wise;
        a null is an absent field for allow-lists and is logged as JSON null).
        """
        with self._lock:
            if isinstance(contexts, pl.DataFrame):
                frame = plan_frame(self, contexts)
                if frame is None:  # a case only the row path handles (it also raises the exact error)
                    contexts = [{k: v for k, v in row.items() if v is not None}
                                for row in contexts.iter_rows(named=True)]
                else:
                    return self._issue_many(*frame)
            resolved = [self._resolve(c) for c in contexts]
            if not resolved:
                return []
            texts, tasks, entries = (list(col) for col in zip(*resolved))
            u = self._rng.random(len(entries)).tolist()
            ks = [bisect_right(e.cdf, ui * e.cdf[-1]) for e, ui in zip(entries, u)]
            return self._issue_many(texts, tasks, entries, ks)

    def _issue_many(self, texts, tasks, entries, ks) -> list[Decision]:
        n = len(entries)
        if n == 0:
            return []
        # Column-wise with C-level map/zip: this loop runs hundreds of thousands of times a second.
        ts = time.time_ns() // 1000
        first, self._seq = self._seq, self._seq + n
        ids = list(map(f"{self._writer_id}-".__add__, map(str, range(first, first + n))))
        if self._learner is None:
            self._pending.update(zip(ids, zip(ks, tasks, repeat(ts))))
        else:
            self._pending.update(zip(ids, zip(ks, tasks, repeat(ts), texts,
                                              [e.pmf_list[k] for e, k in zip(entries, ks)])))
        self._pending_order.extend(ids)
        self._evict(ts)
        chosen = list(map(self._names.__getitem__, ks))
        propensities = [e.pmf_list[k] for e, k in zip(entries, ks)]
        if all(type(t) is int for t in tasks):
            task_lists = list(map(self._one_hot_lists.__getitem__, tasks))
            task_views = list(map(self._one_hot_views.__getitem__, tasks))
        else:
            task_lists = list(map(self._task_list, tasks))
            task_views = list(map(self._task_view, tasks))
        fallback = [e.fallback_reason for e in entries]
        if self._log is not None:
            self._log.append_columns("decisions", [
                ids, [ts] * n, [self._writer_id] * n, range(first, first + n), [self._policy_version] * n,
                texts, [self.config.task_types] * n, task_lists, [self._names] * n,
                [e.pmf_list for e in entries], chosen, propensities, [e.excluded_json for e in entries], fallback,
                [e.shadow_json for e in entries], [e.expected[k] for e, k in zip(entries, ks)]])
        return list(map(make_decision, zip(ids, chosen, propensities, [e.probs for e in entries], task_views,
                                           repeat(self._policy_version), [e.excluded for e in entries], fallback)))

    def _issue(self, text: str, task, entry: _Entry, k: int, ts: int) -> Decision:
        seq = self._seq
        self._seq = seq + 1
        did = f"{self._writer_id}-{seq}"
        name = self._names[k]
        propensity = entry.pmf_list[k]
        self._pending[did] = (k, task, ts) if self._learner is None else (k, task, ts, text, propensity)
        self._pending_order.append(did)
        self._evict(ts)
        if self._log is not None:
            self._log.append("decisions", (did, ts, self._writer_id, seq, self._policy_version, text,
                                           self.config.task_types, self._task_list(task), self._names,
                                           entry.pmf_list, name, propensity, entry.excluded_json,
                                           entry.fallback_reason, entry.shadow_json, entry.expected[k]))
        return make_decision((did, name, propensity, entry.probs, self._task_view(task), self._policy_version,
                              entry.excluded, entry.fallback_reason))

    def _task_list(self, task) -> list:
        return self._one_hot_lists[task] if isinstance(task, int) else task.tolist()

    def _task_view(self, task) -> Mapping:
        if isinstance(task, int):
            return self._one_hot_views[task]
        return MappingProxyType(dict(zip(self.config.task_types, task.tolist())))

    def _evict(self, now_us: int) -> None:
        # A deque keeps the issue order: popping a dict's first key in a loop is quadratic.
        pending, order = self._pending, self._pending_order
        horizon = now_us - int(self.config.wait_window_s * 1e6)
        limit = self.config.max_pending
        recorded = self._recorded
        excess = len(pending) - limit
        if excess > 1:  # a batch past the bound: drop the oldest in C-level loops, not one by one
            victims = [order.popleft() for _ in range(excess)]
            deque(map(pending.__delitem__, victims), maxlen=0)
            recorded.difference_update(victims)
        while order and (len(pending) > limit or pending[order[0]][2] < horizon):
            oldest = order.popleft()
            del pending[oldest]
            recorded.discard(oldest)

    def action_distribution(self, contexts, profiles: Sequence[str]) -> np.ndarray:
        """Action distribution of shape (n_contexts, len(profiles)) for offline evaluation.

        ``contexts`` is a sequence of mappings or a polars DataFrame (nulls are treated as
        absent fields). Profiles the router does not know get probability 0; a profile the
        router would play that is missing from ``profiles`` is an error.
        """
        if isinstance(contexts, pl.DataFrame):
            contexts = [{k: v for k, v in row.items() if v is not None} for row in contexts.iter_rows(named=True)]
        columns = [self._index.get(p, -1) for p in profiles]
        missing = sorted(set(self._names) - set(profiles))
        with self._lock:
            entries = [self._resolve(c)[2] for c in contexts]
        out = np.zeros((len(entries), len(profiles)))
        if not entries:
            return out
        pmf = np.stack([e.pmf for e in entries])
        if missing and pmf[:, [self._index[m] for m in missing]].max() > 0:
            raise ConfigError("profiles", missing, "must include every profile the router can play")
        known = [j for j, c in enumerate(columns) if c >= 0]
        out[:, known] = pmf[:, [columns[j] for j in known]]
        return out

    # -- learning ---------------------------------------------------------------------------
    def record(self, decision_id: str, *, quality: float | None = None, cost_usd: float | None = None,
               latency_ms: float | None = None) -> str:
        """Join an outcome to its decision, update the posterior and log it.

        Returns ``"applied"`` (posterior updated), ``"duplicate"`` (this decision already has an
        outcome: nothing changes, nothing is logged) or ``"late"`` (the decision left the
        pending window: the outcome is logged with that status but does not update the
        posterior, exactly as the logs' join and the replay treat it). An id this router
        never issued raises :class:`UnknownDecisionError`. ``quality`` is in [0, 1]; without
        it the outcome is logged but teaches nothing. Missing ``cost_usd`` / ``latency_ms``
        are taken from the profile's configuration in the logged reward.
        """
        quality = _check_outcome("quality", quality, 0.0, 1.0)
        cost_usd = _check_outcome("cost_usd", cost_usd, 0.0, None)
        latency_ms = _check_outcome("latency_ms", latency_ms, 0.0, None)
        with self._lock:
            if not isinstance(decision_id, str):
                raise UnknownDecisionError("decision_id", decision_id, "must be a decision id string")
            entry = self._pending.get(decision_id)
            reward = None
            if entry is None:
                if not self._issued_here(decision_id):
                    raise UnknownDecisionError("decision_id", decision_id, "was not issued by this router")
                status = "late"
                if quality is not None and cost_usd is not None and latency_ms is not None:
                    reward = self.config.objective.reward(quality=quality, cost_usd=cost_usd, latency_ms=latency_ms)
            elif decision_id in self._recorded:
                return "duplicate"
            else:
                status = "applied"
                self._recorded.add(decision_id)
                k, task = entry[0], entry[1]
                profile = self.config.profiles[k]
                if quality is not None:
                    reward = self.config.objective.reward(
                        quality=quality, cost_usd=profile.cost_usd if cost_usd is None else cost_usd,
                        latency_ms=profile.latency_ms if latency_ms is None else latency_ms)
                    w = self._one_hot[task] if isinstance(task, int) else task
                    self._learn_outcome(k, w, quality)
                    if self._learner is not None:
                        if hasattr(self._learner, "learn_task"):  # learners that use the task posterior
                            self._learner.learn_task(json.loads(entry[3]), w, k, reward, entry[4])
                        else:
                            self._learner.learn(json.loads(entry[3]), k, reward, entry[4])
                    for candidate in self._rollout.candidates():
                        if isinstance(candidate, Router):
                            candidate._learn(profile.name, dict(zip(self.config.task_types, w.tolist())), quality)
            if self._log is not None:
                seq = self._seq
                self._seq += 1
                self._log.append("outcomes", (decision_id, time.time_ns() // 1000, self._writer_id, seq,
                                              quality, cost_usd, latency_ms, reward, status))
            return status

    def _learn(self, profile: str, task_probs: Mapping[str, float], quality: float) -> None:
        """Learn from an outcome of a decision made elsewhere (as a shadow or canary candidate)."""
        with self._lock:
            k = self._index.get(profile)
            if k is None:
                return
            w = np.array([task_probs.get(t, 0.0) for t in self.config.task_types])
            if w.sum() > 0:
                self._learn_outcome(k, w / w.sum(), quality)

    def _learn_outcome(self, k: int, w: np.ndarray, quality: float, *, log_events: bool = True) -> None:
        """The posterior update of one outcome, and drift-triggered recalibration (the live
        path and the replay both come through here, so they agree)."""
        self._belief.update(k, w, quality)
        if self._drift is None:
            return
        for (k, t), kind, stat in self._drift.update(k, w, quality):
            self._belief.shrink(k, t, self.config.drift.keep)
            event = {"profile": self._names[k], "task_type": self.config.task_types[t], "change": kind,
                     "statistic": stat, "n_updates": self._belief.n_updates_}
            self.drift_events.append(event)
            if log_events:
                self._event("drift", f"{event['profile']}/{event['task_type']}", None, "drift-detector",
                            f"Page-Hinkley {kind} statistic {stat:.2f} > threshold {self.config.drift.threshold:g}; "
                            f"kept {self.config.drift.keep:g} of the evidence")

    def issued(self, decision_id: str) -> bool:
        """Whether this router issued ``decision_id`` (its outcome can be recorded here)."""
        return isinstance(decision_id, str) and self._issued_here(decision_id)

    def _issued_here(self, decision_id: str) -> bool:
        writer, _, seq = decision_id.rpartition("-")
        issued = self._issued.get(writer)
        return issued is not None and seq.isdigit() and (int(seq) < (self._seq if writer == self._writer_id else issued))

    # -- state (persistence and the log: banditroute.decide.persistence) ---------------------------
    def beliefs(self, *, level: float = 0.95) -> pl.DataFrame:
        """Posterior per (profile, task type): mean, credible interval, effective n, alpha, beta."""
        with self._lock:
            return self._belief.summary(self._names, list(self.config.task_types), level=level)

    def evidence(self) -> tuple[np.ndarray, np.ndarray]:
        """Evidence beyond the prior, ``(alpha - alpha0, beta - beta0)``, each of shape
        (n_profiles, n_task_types) in ``profiles`` x ``task_types`` order. Without discounting
        it is a sum over outcomes, so replicas can add theirs up."""
        with self._lock:
            b = self._belief
            return b.alpha_ - b.alpha0_, b.beta_ - b.beta0_

    def set_evidence(self, alpha_evidence: np.ndarray, beta_evidence: np.ndarray) -> None:
        """Replace the evidence beyond the prior (e.g. by state merged across replicas)."""
        alpha_evidence = np.asarray(alpha_evidence, dtype=np.float64)
        beta_evidence = np.asarray(beta_evidence, dtype=np.float64)
        with self._lock:
            shape = self._belief.shape
            for name, ev in (("alpha_evidence", alpha_evidence), ("beta_evidence", beta_evidence)):
                if ev.shape != shape or not np.all(np.isfinite(ev)) or np.any(ev < 0):
                    raise ConfigError(name, ev.shape, f"must be a finite, non-negative array of shape {shape}")
            self._belief.set_evidence(alpha_evidence, beta_evidence)


_ABSENT = object()


def _allowed(value, allowed: frozenset) -> bool:
    try:
        return value in allowed
    except TypeError:  # unhashable value
        return False


def _check_outcome(name: str, value, lo: float, hi: float | None):
    if value is None:
        return None
    return check_number(name, value, lo=lo, hi=hi, error=InvalidOutcomeError)
