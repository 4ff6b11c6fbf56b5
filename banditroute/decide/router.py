"""The Router: the one object the library, the CLI and the service use.

A thin façade over parts that own their state: the task space (``request``), the decision
pipeline (``pipeline``: feasibility, the policy, the cache, the rollout stage, fallback), the
pending window (``pending``), the ledger of log rows (``ledger``), the Beta beliefs with drift
recalibration (``banditroute.beliefs``) and the policy (``banditroute.policies``).

>>> import banditroute as br
>>> router = br.Router([br.Profile("small", cost_usd=0.0004, latency_ms=400),
...                     br.Profile("large", cost_usd=0.0120, latency_ms=2500)],
...                    task_types=["chat", "code"], seed=0)
>>> d = router.decide({"task_type": "code", "tenant": "acme"})
>>> d.profile in ("small", "large"), round(sum(d.probabilities.values()), 12)
(True, 1.0)
>>> d.propensity == d.probabilities[d.profile], router.record(d.id, quality=1.0, cost_usd=0.0009, latency_ms=640)
(True, 'applied')
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import polars as pl

from ..beliefs.beta import BetaBelief
from ..beliefs.drift import PageHinkley
from ..config.profiles import BetaPrior, Budget, DriftConfig, Objective, Profile, prior_arrays
from ..config.settings import RouterConfig, build_from_file
from ..errors import ConfigError
from ..logs.replay import replay as replay_logs
from ..policies.base import Policy, PolicySetup
from ..policies.choice import choose, version_prefix
from . import persistence
from .decision import Decision
from .issue import Issuer
from .ledger import Ledger, open_log
from .outcomes import OutcomeClaim, Outcomes
from .pending import PendingWindow
from .pipeline import DecisionPipeline
from .request import TaskClassifier, TaskSpace
from .rollout import Rollout

__all__ = ["Router"]


class Router:
    """Routes requests across profiles by Thompson sampling, logging exact propensities.

    Parameters
    ----------
    profiles : sequence of Profile
    task_model : TaskClassifier, optional
        Gives the task-type posterior of requests without a ``task_type`` label.
    learner : Policy or object, optional
        A policy object instead of the one named by ``policy`` (e.g. a
        :class:`~banditroute.policies.vw.VWPolicy`), or any learner with
        ``distribution(context, task_probs, feasible) -> pmf``,
        ``learn(context, k, reward, propensity)`` and ``add_profile(profile)`` (it scores and
        learns; the router validates, masks, floors, draws, logs and keeps the Beta beliefs).

    Every other parameter is a setting of :class:`~banditroute.config.settings.RouterConfig`
    (documented there), with the same default.
    """

    def __init__(self, profiles: Sequence[Profile], *, task_types: Sequence[str] = ("default",),
                 objective: Objective = Objective(), budget: Budget = Budget(), prior: BetaPrior = BetaPrior(),
                 policy: str = "thompson", features: Mapping[str, float] | tuple = (), exploration: float = 0.02,
                 discount: float = 1.0, n_draws: int = 1024, refresh_every: int = 16,
                 drift: DriftConfig | None = None, reliability_floor: float | None = None,
                 floor_confidence: float = 0.95, fallback: str | None = None,
                 decision_timeout_ms: float | None = None, log_dir: str | os.PathLike | None = None,
                 durability: str = "group", log_journal: bool = False, wait_window_s: float = 3600.0,
                 max_pending: int = 200_000, policy_version: str | None = None, seed: int | None = None,
                 task_model: TaskClassifier | None = None, learner=None):
        if isinstance(task_types, str) or not isinstance(task_types, Sequence):
            raise ConfigError("task_types", task_types, "must be a list of task-type names")
        if isinstance(profiles, Profile) or not isinstance(profiles, Sequence):
            raise ConfigError("profiles", profiles, "must be a sequence of Profile")
        self.config = cfg = RouterConfig(
            profiles=tuple(profiles), task_types=tuple(task_types), objective=objective, budget=budget, prior=prior,
            policy=policy, features=tuple(features.items()) if isinstance(features, Mapping) else features,
            exploration=exploration, discount=discount, n_draws=n_draws, refresh_every=refresh_every, drift=drift,
            reliability_floor=reliability_floor, floor_confidence=floor_confidence, fallback=fallback,
            decision_timeout_ms=decision_timeout_ms,
            log_dir=os.fspath(log_dir) if isinstance(log_dir, os.PathLike) else log_dir, durability=durability,
            log_journal=log_journal, wait_window_s=wait_window_s, max_pending=max_pending,
            policy_version=policy_version, seed=seed)
        seeds = np.random.SeedSequence(cfg.seed).spawn(3)
        self._rng = np.random.default_rng(seeds[0])
        self._tasks = TaskSpace(cfg.task_types, task_model)
        alpha0, beta0 = prior_arrays(cfg.profiles, cfg.task_types, cfg.prior)
        self._belief = BetaBelief(alpha0, beta0, n_draws=cfg.n_draws, discount=cfg.discount,
                                  refresh_every=cfg.refresh_every, seed=seeds[1])
        self._drift = None
        if cfg.drift is not None:
            self._drift = PageHinkley(self._belief.shape, delta=cfg.drift.delta, threshold=cfg.drift.threshold,
                                      min_samples=cfg.drift.min_samples)
        self._policy: Policy = choose(cfg, learner, PolicySetup(cfg, self._belief, seeds[2]))
        self._version_prefix = version_prefix(cfg, learner)
        self._ledger = Ledger(open_log(cfg), policy_version=self._version())
        self._rollout = Rollout(self._ledger.event)
        self._pipeline = DecisionPipeline(cfg, self._tasks, self._belief, self._policy, self._rollout)
        self._pending = PendingWindow(wait_window_s=cfg.wait_window_s, max_pending=cfg.max_pending)
        self._issuer = Issuer(self._pipeline, self._pending, self._ledger, self._rng, keep_context=self._policy.learns)
        self._outcomes = Outcomes(cfg, self._tasks, self._belief, self._drift, self._policy, self._pending,
                                  self._ledger, self._rollout)
        self._lock = threading.RLock()

    def _version(self) -> str:
        """The policy version stamped on the log rows (changes with the decision-shaping settings)."""
        return self.config.policy_version or f"{self._version_prefix}-{self.config.fingerprint()}"

    @classmethod
    def from_config(cls, path: str | os.PathLike, **overrides) -> "Router":
        """Build a router from a TOML file (see :func:`banditroute.config.settings.load_config`)."""
        return build_from_file(cls, path, overrides)

    def add_profile(self, profile: Profile) -> None:
        """Add a profile; it starts from its prior (diffuse unless it carries one)."""
        with self._lock:
            if not isinstance(profile, Profile):
                raise ConfigError("profile", profile, "must be a Profile")
            if profile.name in self._pipeline.index:
                raise ConfigError("profile.name", profile.name, "is already a profile of this router")
            self._policy.add_profile(profile)
            self.config = replace(self.config, profiles=self.config.profiles + (profile,))
            self._belief.add_profile(*prior_arrays([profile], self.config.task_types, self.config.prior))
            if self._drift is not None:
                self._drift.add_profile()
            self._pipeline.configure(self.config)
            self._outcomes.config = self.config
            self._ledger.policy_version = self._version()

    # -- what the router is -------------------------------------------------------------------
    @property
    def profiles(self) -> list[str]:
        """Names of the profiles, in the order used by ``probabilities`` arrays."""
        return list(self._pipeline.names)

    @property
    def task_types(self) -> list[str]:
        return list(self.config.task_types)

    @property
    def objective(self) -> Objective:
        return self.config.objective

    @property
    def policy_version(self) -> str:
        return self._ledger.policy_version

    @property
    def policy(self) -> Policy:
        """The policy that scores profiles (a learner given as an object is wrapped)."""
        return self._policy

    @property
    def task_model(self):
        """The task-type classifier for requests without a label (None: labels required)."""
        return self._tasks.task_model

    @property
    def writer_id(self) -> str:
        """This router's writer id: the prefix of every decision id it issues."""
        return self._ledger.writer_id

    @property
    def log_writer(self):
        """The :class:`~banditroute.logs.store.LogWriter` this router logs through (None without a log)."""
        return self._ledger.writer

    @property
    def lock(self):
        """The router's re-entrant lock: hold it to make several calls one atomic step."""
        return self._lock

    @property
    def log_position(self) -> int:
        """Log rows sequenced so far by this writer (the next row's ``seq``)."""
        return self._ledger.seq

    @property
    def settled_position(self) -> int:
        """The log position below which every outcome row is settled (an applied one is in the beliefs)."""
        return self._outcomes.settled_position(self._ledger.seq)

    @property
    def n_pending(self) -> int:
        """Decisions in the pending window (their outcome can still update the posterior)."""
        return len(self._pending)

    # -- deciding -------------------------------------------------------------------------------
    def probabilities(self, context: Mapping) -> dict[str, float]:
        """The distribution ``decide(context)`` would draw from now; no side effects."""
        with self._lock:
            return dict(self._pipeline.resolve(context)[2].probs)

    def decide(self, context: Mapping) -> Decision:
        """Choose a profile for one request and log the decision with its exact propensity."""
        with self._lock:
            return self._issuer.one(*self._pipeline.resolve(context))

    def decide_batch(self, contexts: Sequence[Mapping] | pl.DataFrame) -> list[Decision]:
        """Decide for many requests at once; the same decisions as calling ``decide`` on each
        in order (one uniform draw per request, in order), logged as one batch.

        ``contexts`` is a sequence of mappings, or a polars DataFrame with one column per
        field (the vectorised path: validation, JSON encoding and the draws run column-wise;
        a null is an absent field for allow-lists and is logged as JSON null).
        """
        with self._lock:
            return self._issuer.many(contexts)

    def action_distribution(self, contexts, profiles: Sequence[str]) -> np.ndarray:
        """Action distribution of shape (n_contexts, len(profiles)) for offline evaluation.

        ``contexts`` is a sequence of mappings or a polars DataFrame (nulls are treated as
        absent fields). Profiles the router does not know get probability 0; a profile the
        router would play that is missing from ``profiles`` is an error.
        """
        with self._lock:
            return self._pipeline.action_distribution(contexts, profiles)

    # -- learning -------------------------------------------------------------------------------
    def record(self, decision_id: str, *, quality: float | None = None, cost_usd: float | None = None,
               latency_ms: float | None = None) -> str:
        """Join an outcome to its decision, log it, then update the posterior.

        Returns ``"applied"`` (posterior updated), ``"duplicate"`` (this decision already has an
        outcome: nothing changes, nothing is logged) or ``"late"`` (the decision left the
        pending window: the outcome is logged with that status but does not update the
        posterior, exactly as the logs' join and the replay treat it). An id this router
        never issued raises :class:`UnknownDecisionError`. ``quality`` is in [0, 1]; without
        it the outcome is logged but teaches nothing. Missing ``cost_usd`` / ``latency_ms``
        are taken from the profile's configuration in the logged reward. If the log cannot
        take the row (:class:`LogError`), nothing changed and a retry starts afresh.
        """
        with self._lock:
            claim = self.begin_record(decision_id, quality=quality, cost_usd=cost_usd, latency_ms=latency_ms)
            self._outcomes.settle(claim, committed=True)
            return claim.status

    def begin_record(self, decision_id: str, *, quality: float | None = None, cost_usd: float | None = None,
                     latency_ms: float | None = None) -> OutcomeClaim:
        """:meth:`record`'s first step, for a caller that commits the log itself (the service):
        the outcome is claimed and its row appended; nothing is learned until
        :meth:`settle_record` says whether the row was committed."""
        with self._lock:
            return self._outcomes.begin(decision_id, quality, cost_usd, latency_ms)

    def settle_record(self, claim: OutcomeClaim, *, committed: bool) -> None:
        """Apply a :meth:`begin_record` outcome whose row is durable, or drop it (a retry starts afresh)."""
        with self._lock:
            self._outcomes.settle(claim, committed=committed)

    def withdraw(self, decision_id: str) -> bool:
        """Forget a pending decision whose log row could not be committed (the caller got an error)."""
        with self._lock:
            return self._pending.discard(decision_id)

    def learn_many(self, ks: np.ndarray, task_probs: np.ndarray, quality: np.ndarray, feedback=None) -> None:
        """Learn applied outcomes in order (the beliefs, with drift recalibration, and with
        ``feedback`` the policy): the replay's way in, the same updates as ``record``."""
        with self._lock:
            self._outcomes.learn_many(ks, task_probs, quality, feedback)

    def learn(self, feedback) -> int:
        """Learn logged rounds (an ``ope.LoggedFeedback``; see ``Outcomes.learn_logged``): how ``ope``
        evaluates a Router candidate progressively. Returns the number of rounds learned."""
        with self._lock:
            return self._outcomes.learn_logged(feedback)

    @property
    def drift_events(self) -> list[dict]:
        """Drift recalibrations so far: profile, task type, change, statistic, n_updates."""
        return self._outcomes.drift_events

    def learn_elsewhere(self, profile: str, task_probs: Mapping[str, float], quality: float) -> None:
        """Learn from an outcome of a decision made elsewhere (as a shadow or canary candidate)."""
        with self._lock:
            self._outcomes.learn_elsewhere(profile, task_probs, quality)

    def issued(self, decision_id: str) -> bool:
        """Whether this router issued ``decision_id`` (its outcome can be recorded here)."""
        return isinstance(decision_id, str) and self._ledger.issued(decision_id)

    # -- beliefs --------------------------------------------------------------------------------
    def beliefs(self, *, level: float = 0.95) -> pl.DataFrame:
        """Posterior per (profile, task type): mean, credible interval, effective n, alpha, beta."""
        with self._lock:
            return self._belief.summary(self.profiles, list(self.config.task_types), level=level)

    @property
    def n_updates(self) -> int:
        """Outcomes the Beta beliefs learned from."""
        return self._belief.n_updates_

    def refresh(self) -> None:
        """Redraw the posterior bank now for every cell with new evidence (otherwise it is
        redrawn every ``refresh_every`` outcomes)."""
        with self._lock:
            self._belief.refresh()

    def evidence(self) -> tuple[np.ndarray, np.ndarray]:
        """Evidence beyond the prior, ``(alpha - alpha0, beta - beta0)``, each of shape
        (n_profiles, n_task_types) in ``profiles`` x ``task_types`` order. Without discounting
        it is a sum over outcomes, so replicas can add theirs up."""
        with self._lock:
            b = self._belief
            return b.alpha_ - b.alpha0_, b.beta_ - b.beta0_

    def set_evidence(self, alpha_evidence: np.ndarray, beta_evidence: np.ndarray) -> None:
        """Replace the evidence beyond the prior (e.g. by state merged across replicas)."""
        with self._lock:
            self._belief.set_evidence(alpha_evidence, beta_evidence)

    # -- rollout: shadow and canary candidates (each command is an event row in the log) ------
    def add_shadow(self, name: str, policy, *, who: str = "", why: str = "") -> None:
        """Compute ``policy``'s distribution on every request and log it (column ``shadow``)
        next to the decision, without changing what is executed."""
        with self._lock:
            self._rollout.command("shadow_start", name, policy=policy, who=who, why=why,
                                  learns=isinstance(policy, Router))

    def remove_shadow(self, name: str, *, who: str = "", why: str = "") -> None:
        with self._lock:
            self._rollout.command("shadow_stop", name, who=who, why=why)

    def start_canary(self, name: str, policy, *, fraction: float, who: str, why: str) -> None:
        """Let ``policy`` decide a ``fraction`` of traffic; the logged propensity is the mixture
        probability, exactly. Recorded as an event (who, what, why) in the log."""
        with self._lock:
            self._rollout.command("canary_start", name, policy=policy, fraction=fraction, who=who, why=why,
                                  learns=isinstance(policy, Router))

    def set_canary_fraction(self, fraction: float, *, who: str, why: str) -> None:
        with self._lock:
            self._rollout.command("canary_fraction", None, fraction=fraction, who=who, why=why)

    def promote(self, *, who: str, why: str):
        """Promote the canary: it decides all traffic from now on (fraction 1). Returns it."""
        with self._lock:
            return self._rollout.command("promote", None, who=who, why=why)

    def rollback(self, *, who: str, why: str) -> None:
        """Stop the canary: production decides all traffic again."""
        with self._lock:
            self._rollout.command("rollback", None, who=who, why=why)

    # -- state and the log ----------------------------------------------------------------------
    def replay(self, log_dir: str | os.PathLike) -> int:
        """Rebuild this (fresh) router's beliefs from the outcomes logged under ``log_dir``;
        see :func:`banditroute.logs.replay.replay`. Returns the number of outcomes applied."""
        with self._lock:
            return replay_logs(self, log_dir)

    def resume(self, log_dir: str | os.PathLike | None = None, *, beliefs: bool = True, snapshot: bool = True) -> dict:
        """Continue, before the first decision, where the routers that logged under ``log_dir``
        (default: this router's) stopped: the beliefs become the newest valid snapshot of the log
        and the outcomes logged after it (all without one, or ``snapshot=False``; none with
        ``beliefs=False``); the dead writers' decisions in the wait window are pending here again
        (see :mod:`~banditroute.decide.persistence`). Returns what was taken over."""
        with self._lock:
            return persistence.resume(self, log_dir, beliefs=beliefs, snapshots=snapshot)

    def snapshot(self, log_dir: str | os.PathLike | None = None, *, keep: int = 2) -> os.PathLike:
        """Write what a replay of ``log_dir`` (default: this router's log) learns now, and the log
        position it covers, to ``<log_dir>/_snapshots/`` for :meth:`resume`; keep the newest ``keep``."""
        return persistence.snapshot(self, log_dir, keep=keep)

    def use_log_writer(self, writer) -> None:
        """Log through ``writer`` (e.g. one a service commits in groups); before any decision."""
        with self._lock:
            self._ledger.use_writer(writer)

    def flush(self) -> None:
        """Make every decision and outcome so far durable on disk."""
        if self._ledger.writer is not None:
            self._ledger.writer.flush()

    def close(self) -> None:
        """Flush the log and release it (and the writers taken over by :meth:`resume`)."""
        if self._ledger.writer is not None:
            self._ledger.writer.close()
        self._ledger.release()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, path: str | os.PathLike, *, format: str = "data") -> None:
        """Write the settings and state to ``path`` atomically, as data (loading it runs no code);
        ``format="pickle"``: a pickle (loading one runs its code: only files you wrote)."""
        persistence.save(self, path, format=format)

    @classmethod
    def load(cls, path: str | os.PathLike, *, log_dir: str | os.PathLike | None | object = ..., task_model=None,
             format: str = "data") -> "Router":
        """Load :meth:`save`'s file: logs to the saved ``log_dir`` (or the given one; None: no log) under
        a new writer id, and takes the outcomes of the saved pending decisions."""
        return persistence.load(cls, path, log_dir=log_dir, task_model=task_model, format=format)

    def __getstate__(self) -> dict:
        with self._lock:
            state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

