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

import difflib
import inspect
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import polars as pl

from ..beliefs.beta import BetaBelief
from ..beliefs.drift import PageHinkley
from ..config.mechanisms import Cooldown, CostLearning, Onboarding, request_budget
from ..config.profiles import BetaPrior, Budget, DriftConfig, Objective, Profile, prior_arrays
from ..config.settings import RouterConfig, build_from_file
from ..errors import ConfigError, UnknownParameterError
from ..policies.base import Policy, PolicySetup
from ..policies.choice import choose, default_exploration, version_prefix
from .decision import Decision
from .escalation import Escalations, check_reason
from .issue import Issuer
from .ledger import Ledger, open_log
from .onboarding import OnboardingCaps
from .outcomes import OutcomeClaim, Outcomes
from .pending import PendingWindow
from .pipeline import DecisionPipeline
from .request import TaskClassifier, TaskSpace
from .usage import Usage
from .rollout import Rollout
from .router_rollout import RolloutCommands
from .router_state import StateMethods

__all__ = ["Router"]


class Router(RolloutCommands, StateMethods):
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

    exploration : float or None
        The exploration floor (see RouterConfig); None: the policy's default, 0.02, or 0.01 for
        the contextual policies ``"linear"`` and ``"squarecb"`` (their own exploration spreads
        the pmf; the floor costs up to its size in reward).

    Every other parameter is a setting of :class:`~banditroute.config.settings.RouterConfig`
    (documented there), with the same default.
    """

    def __new__(cls, *args, **kwargs):
        unknown = sorted(set(kwargs) - _PARAMETERS)
        if unknown:  # Python's own TypeError names neither Router nor the name meant
            close = difflib.get_close_matches(unknown[0], sorted(_PARAMETERS), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownParameterError(unknown[0], kwargs[unknown[0]], f"is not a parameter of Router{hint}")
        return super().__new__(cls)

    def __init__(self, profiles: Sequence[Profile], *, task_types: Sequence[str] = ("default",),
                 objective: Objective = Objective(), budget: Budget = Budget(), prior: BetaPrior = BetaPrior(),
                 policy: str = "thompson", features: Mapping[str, float] | tuple = (), exploration: float | None = None,
                 discount: float = 1.0, n_draws: int = 1024, refresh_every: int = 16,
                 drift: DriftConfig | None = None, reliability_floor: float | None = None,
                 floor_confidence: float = 0.95, fallback: str | None = None, wait_window_s: float = 3600.0,
                 decision_timeout_ms: float | None = None, log_dir: str | os.PathLike | None = None,
                 durability: str = "group", log_journal: bool = False, log_table: str = "parquet",
                 max_pending: int = 200_000, policy_version: str | None = None, seed: int | None = None,
                 cost_learning: CostLearning = CostLearning(), max_escalations: int = 2,
                 onboarding: Onboarding | None = None, cooldown: Cooldown | None = None,
                 error_quality: float | None = None, task_model: TaskClassifier | None = None, learner=None):
        if isinstance(task_types, str) or not isinstance(task_types, Sequence):
            raise ConfigError("task_types", task_types, "must be a list of task-type names")
        if isinstance(profiles, Profile) or not isinstance(profiles, Sequence):
            raise ConfigError("profiles", profiles, "must be a sequence of Profile")
        if exploration is None:  # the policy's own default floor
            exploration = default_exploration(policy, learner)
        self.config = cfg = RouterConfig(
            profiles=tuple(profiles), task_types=tuple(task_types), objective=objective, budget=budget, prior=prior,
            policy=policy, features=tuple(features.items()) if isinstance(features, Mapping) else features,
            exploration=exploration, discount=discount, n_draws=n_draws, refresh_every=refresh_every, drift=drift,
            reliability_floor=reliability_floor, floor_confidence=floor_confidence, fallback=fallback,
            decision_timeout_ms=decision_timeout_ms, log_table=log_table,
            log_dir=os.fspath(log_dir) if isinstance(log_dir, os.PathLike) else log_dir, durability=durability,
            log_journal=log_journal, wait_window_s=wait_window_s, max_pending=max_pending,
            policy_version=policy_version, seed=seed, cost_learning=cost_learning, max_escalations=max_escalations,
            onboarding=onboarding, cooldown=cooldown, error_quality=error_quality)
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
        self._usage = Usage(cfg)
        self._onboarding = OnboardingCaps(cfg.onboarding)
        self._pipeline = DecisionPipeline(cfg, self._tasks, self._belief, self._policy, self._rollout, self._usage,
                                          self._onboarding)
        self._pending = PendingWindow(wait_window_s=cfg.wait_window_s, max_pending=cfg.max_pending)
        self._issuer = Issuer(self._pipeline, self._pending, self._ledger, self._rng)
        self._escalations = Escalations(cfg.max_escalations, cfg.max_pending)
        self._outcomes = Outcomes(cfg, self._tasks, self._belief, self._drift, self._policy, self._pending,
                                  self._ledger, self._rollout, self._usage, self._onboarding)
        self._lock = threading.RLock()

    def _version(self) -> str:
        """The policy version stamped on the log rows (changes with the decision-shaping settings)."""
        return self.config.policy_version or f"{self._version_prefix}-{self.config.fingerprint()}"

    @classmethod
    def from_config(cls, path: str | os.PathLike, **overrides) -> "Router":
        """Build a router from a TOML file (see :func:`banditroute.config.settings.load_config`)."""
        return build_from_file(cls, path, overrides)

    def add_profile(self, profile: Profile, *, onboard: bool = True) -> None:
        """Add a profile; it starts from its prior (diffuse unless it carries one). With
        ``onboarding`` set (and ``onboard``), its probability is capped until it has earned its share."""
        with self._lock:
            if not isinstance(profile, Profile):
                raise ConfigError("profile", profile, "must be a Profile")
            if not isinstance(onboard, bool):
                raise ConfigError("onboard", onboard, "must be true or false")
            if profile.name in self._pipeline.index:
                raise ConfigError("profile.name", profile.name, "is already a profile of this router")
            self._policy.add_profile(profile)
            self.config = replace(self.config, profiles=self.config.profiles + (profile,))
            self._belief.add_profile(*prior_arrays([profile], self.config.task_types, self.config.prior))
            if self._drift is not None:
                self._drift.add_profile()
            self._usage.add_profile(profile, len(self.config.task_types), self.config)
            self._pipeline.configure(self.config)
            self._outcomes.config = self.config
            self._ledger.policy_version = self._version()
            if onboard and self.config.onboarding is not None:
                self._onboard([profile.name])

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
    def probabilities(self, context: Mapping, *, budget: Budget | Mapping | None = None) -> dict[str, float]:
        """The distribution ``decide(context, budget=budget)`` would draw from now; no side effects."""
        with self._lock:
            return dict(self._pipeline.resolve(context, request_budget(budget))[2].probs)

    def decide(self, context: Mapping, *, budget: Budget | Mapping | None = None) -> Decision:
        """Choose a profile for one request and log the decision with its exact propensity.

        ``budget`` (a :class:`Budget` or a mapping with ``max_cost_usd`` / ``max_latency_ms``)
        excludes, for this request, the profiles whose expected cost or latency is over it
        (probability 0, the reason in ``Decision.excluded``); the fallback rule applies when
        nothing fits. Budgets compare the learned posterior mean (see ``cost_learning``)."""
        with self._lock:
            return self._issuer.one(*self._pipeline.resolve(context, request_budget(budget)))

    def escalate(self, decision_id: str, *, reason: str = "verifier_failed",
                 budget: Budget | Mapping | None = None) -> Decision:
        """Decide again for the request of ``decision_id`` after its answer failed (a verifier, a
        judge, a failed call): a new decision with ``parent_id`` = ``decision_id``, drawn among the
        profiles the chain has not tried (the tried ones at probability 0), with its own exact
        propensity, logged. Give the request's ``budget`` again if it had one. Raises
        :class:`EscalationError` beyond ``max_escalations`` or for a decision already escalated,
        :class:`UnknownDecisionError` for a decision no longer pending, and
        :class:`NoFeasibleProfileError` when every profile was tried (and no untried fallback).
        See :mod:`banditroute.decide.escalation`."""
        with self._lock:
            reason, budget = check_reason(reason), request_budget(budget)
            chain = self._escalations.chain(decision_id, self._pending, self.issued(decision_id))
            parent = self._pending.get(decision_id)
            entry = self._pipeline.staged(parent.task, json.loads(parent.context), budget, chain.tried, reason)
            child = self._issuer.one(parent.context, parent.task, entry, parent_id=decision_id)
            self._escalations.add(decision_id, chain, child.id, self._pipeline.index[child.profile])
            return child

    @property
    def n_escalations(self) -> int:
        """Escalations issued by this router so far."""
        return self._escalations.count

    def decide_batch(self, contexts: Sequence[Mapping] | pl.DataFrame, *,
                     budget: Budget | Mapping | None = None) -> list[Decision]:
        """Decide for many requests at once; the same decisions as calling ``decide`` on each
        in order (one uniform draw per request, in order), logged as one batch.

        ``contexts`` is a sequence of mappings, or a polars DataFrame with one column per
        field (the vectorised path: validation, JSON encoding and the draws run column-wise;
        a null is an absent field for allow-lists and is logged as JSON null). ``budget``
        applies to every request (see :meth:`decide`).
        """
        with self._lock:
            return self._issuer.many(contexts, request_budget(budget))

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
               latency_ms: float | None = None, error: str | None = None) -> str:
        """Join an outcome to its decision, log it, then update the posterior.

        Returns ``"applied"`` (posterior updated), ``"duplicate"`` (this decision already has an
        outcome: nothing changes, nothing is logged) or ``"late"`` (the decision left the
        pending window: the outcome is logged with that status but does not update the
        posterior, exactly as the logs' join and the replay treat it). An id this router
        never issued raises :class:`UnknownDecisionError`. ``quality`` is in [0, 1]; without
        it the outcome is logged but teaches nothing. Missing ``cost_usd`` / ``latency_ms``
        are taken from the profile's configuration in the logged reward; given, they teach the
        learned cost and latency. ``error`` (``"rate_limited"``, ``"timeout"``, ``"server_error"``,
        ...) records a failed call: logged in column ``error``, counted against the profile's
        availability (and its ``cooldown``), a judgement of quality only with ``error_quality``.
        If the log cannot take the row (:class:`LogError`), nothing changed and a retry starts afresh.
        """
        with self._lock:
            claim = self.begin_record(decision_id, quality=quality, cost_usd=cost_usd, latency_ms=latency_ms,
                                      error=error)
            self._outcomes.settle(claim, committed=True)
            return claim.status

    def begin_record(self, decision_id: str, *, quality: float | None = None, cost_usd: float | None = None,
                     latency_ms: float | None = None, error: str | None = None) -> OutcomeClaim:
        """:meth:`record`'s first step, for a caller that commits the log itself (the service):
        the outcome is claimed and its row appended; nothing is learned until
        :meth:`settle_record` says whether the row was committed."""
        with self._lock:
            return self._outcomes.begin(decision_id, quality, cost_usd, latency_ms, error)

    def settle_record(self, claim: OutcomeClaim, *, committed: bool) -> None:
        """Apply a :meth:`begin_record` outcome whose row is durable, or drop it (a retry starts afresh)."""
        with self._lock:
            self._outcomes.settle(claim, committed=committed)

    def withdraw(self, decision_id: str) -> bool:
        """Forget a pending decision whose log row could not be committed (the caller got an error)."""
        with self._lock:
            self._escalations.withdraw(decision_id)
            return self._pending.discard(decision_id)

    def learn_many(self, ks: np.ndarray, task_probs: np.ndarray, quality: np.ndarray, feedback=None, *,
                   cost=None, latency=None, failed=None) -> int:
        """Learn applied outcomes in order (the beliefs, with drift recalibration, and with
        ``feedback`` the policy; the learned cost, latency and availability): the replay's way
        in, the same updates as ``record`` (see ``Outcomes.learn_many``). Returns how many taught
        the beliefs (those with a quality)."""
        with self._lock:
            return self._outcomes.learn_many(ks, task_probs, quality, feedback, cost=cost, latency=latency, failed=failed)

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
        """Posterior per (profile, task type): reliability (mean, credible interval, effective n,
        alpha, beta); learned cost and latency (``cost_mean``, ``cost_sd`` (of the mean), ``cost_n``,
        ``latency_*``); ``availability`` (probability a call answers), ``failed_calls`` and
        ``cooldown_until`` (epoch seconds a cooldown ends; null when none);
        ``onboarding`` (still under the onboarding cap)."""
        with self._lock:
            frame = self._belief.summary(self.profiles, list(self.config.task_types), level=level)
            n_tasks = len(self.config.task_types)
            onboarding = np.repeat([n in self._onboarding.names(self.profiles) for n in self.profiles], n_tasks)
            frame = frame.with_columns(**{k: pl.Series(v) for k, v in self._usage.summary_columns(n_tasks).items()},
                                       onboarding=pl.Series(onboarding))
            return frame.with_columns(pl.col("cooldown_until").fill_nan(None))  # null: no cooldown now

    @property
    def n_updates(self) -> int:
        """Outcomes the Beta beliefs learned from."""
        return self._belief.n_updates_

    def refresh(self) -> None:
        """Redraw the posterior bank now for every cell with new evidence (otherwise it is
        redrawn every ``refresh_every`` outcomes)."""
        with self._lock:
            self._belief.refresh()
            self._usage.refresh()

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

    def __getstate__(self) -> dict:
        with self._lock:
            state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()



# help(Router) and inspect.signature show __init__'s parameters, not __new__'s (*args, **kwargs)
Router.__signature__ = inspect.signature(Router.__init__).replace(
    parameters=list(inspect.signature(Router.__init__).parameters.values())[1:])
_PARAMETERS = frozenset(Router.__signature__.parameters)
