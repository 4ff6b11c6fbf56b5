"""A Vowpal Wabbit contextual-bandit policy: an alternative learner behind the Router API.

VW runs ``--cb_explore_adf``: every feasible profile is an action with its own features
(namespace ``a``: ``id<name>``, ``cost_usd``, ``latency_ms``, ``tag<tag>``); the request is the
shared example (namespace ``s``: numeric fields as floats, string fields as categorical
``<key><value>`` features, booleans as 1; namespace ``t``: the task type, or the caller's
``task_probs``, as weights). Quadratic interactions ``s x a`` and ``t x a`` let VW learn a value
per (request, profile). Budgets and allow-lists are applied as action masking *before* VW
scores: infeasible profiles are not passed to VW at all and get probability 0.

The pmf VW returns is the logged distribution; the executed profile is drawn from it (the
Router draws it). Learning uses VW's convention: cost = -reward, with the logged propensity.
State persists through VW's own serialisation (``serialize()`` bytes), also when pickled.

>>> import banditroute as br
>>> from banditroute.policies.vw import VWConfig, VWPolicy
>>> profiles = [br.Profile("small", cost_usd=0.0004, latency_ms=400),
...             br.Profile("large", cost_usd=0.012, latency_ms=2500)]
>>> policy = VWPolicy(profiles, config=VWConfig(exploration="epsilon", epsilon=0.1), seed=0)
>>> router = br.Router(profiles, task_types=["chat", "code"], learner=policy, exploration=0.0, seed=0)
>>> d = router.decide({"task_type": "code", "tenant": "acme"})
>>> round(sum(d.probabilities.values()), 12), d.propensity == d.probabilities[d.profile]
(1.0, True)
>>> router.record(d.id, quality=1.0)
'applied'
>>> policy.n_learned_
1
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import vw_binding as vw
from ..beliefs.state import take
from ..config.profiles import Budget, Profile, check_number
from ..errors import ConfigError, InvalidOutcomeError
from .base import Feedback, Policy, PolicyQuery
from .vw_features import _hashed, action_namespaces, shared_namespaces

__all__ = ["VWConfig", "VWPolicy", "shared_namespaces", "action_namespaces"]

_SEED_BOUND = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class VWConfig:
    """Configuration of a :class:`VWPolicy`.

    Parameters
    ----------
    exploration : {"squarecb", "epsilon", "cover", "bag", "regcb", "softmax"}
        VW's exploration algorithm (``--squarecb`` by default).
    epsilon : float
        Uniform exploration of ``epsilon`` (also the floor for ``cover`` and ``bag``).
    gamma_scale : float
        SquareCB's greediness scale (``--gamma_scale``; larger explores less).
    cover, bag : int
        Number of policies for ``--cover`` / ``--bag``.
    softmax_lambda : float
        Inverse temperature of ``--softmax``.
    interactions : tuple of str
        Quadratic interactions between namespaces (``s`` request, ``t`` task, ``a`` profile).
    cb_type : {"mtr", "ips", "dr", "dm"}
        VW's cost estimator; ``"sm"`` is refused (it does not learn in VW 9.9).
    learning_rate : float, optional
        ``-l``; VW's default otherwise.
    bits : int
        Hash table size ``2**bits`` (``-b``).
    extra_args : tuple of str
        Further VW options, passed as given.

    >>> VWConfig().args()[:3]
    ['--cb_explore_adf', '--squarecb', '--gamma_scale']
    >>> VWConfig(exploration="thompson")
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: vw.exploration must be one of squarecb, epsilon, cover, bag, regcb, softmax, got 'thompson'
    """

    exploration: str = "squarecb"
    epsilon: float = 0.05
    gamma_scale: float = 10.0
    cover: int = 4
    bag: int = 5
    softmax_lambda: float = 10.0
    interactions: tuple[str, ...] = ("sa", "ta")
    cb_type: str = "mtr"
    learning_rate: float | None = None
    bits: int = 18
    extra_args: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.exploration not in vw.EXPLORATIONS:
            raise ConfigError("vw.exploration", self.exploration, f"must be one of {', '.join(vw.EXPLORATIONS)}")
        check_number("vw.epsilon", self.epsilon, lo=0.0, hi=1.0)
        check_number("vw.gamma_scale", self.gamma_scale, lo=0.0, lo_open=True)
        check_number("vw.softmax_lambda", self.softmax_lambda, lo=0.0)
        for name in ("cover", "bag"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"vw.{name}", value, "must be an integer >= 1")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 8 <= self.bits <= 30:
            raise ConfigError("vw.bits", self.bits, "must be an integer in [8, 30]")
        if self.cb_type not in ("mtr", "ips", "dr", "dm"):
            raise ConfigError("vw.cb_type", self.cb_type, "must be one of mtr, ips, dr, dm")
        if self.learning_rate is not None:
            check_number("vw.learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        for name in ("interactions", "extra_args"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"vw.{name}", value, "must be a tuple of strings")
        for q in self.interactions:
            if len(q) < 2 or not set(q) <= set("sta"):
                raise ConfigError("vw.interactions", q, "must combine the namespaces s, t and a (e.g. 'sa')")

    def args(self) -> list[str]:
        """VW command-line options (the seed is added by the policy)."""
        out = vw.cb_explore_args(self.exploration, epsilon=self.epsilon, gamma_scale=self.gamma_scale,
                                 cover=self.cover, bag=self.bag, softmax_lambda=self.softmax_lambda)
        out += ["--cb_type", self.cb_type, "-b", str(self.bits)]
        for q in self.interactions:
            out += ["--interactions", q]
        if self.learning_rate is not None:
            out += ["-l", f"{self.learning_rate:g}"]
        return out + list(self.extra_args)


class VWPolicy(Policy):
    """Vowpal Wabbit ``--cb_explore_adf`` policy over profiles; a Router ``learner``.

    Parameters
    ----------
    profiles : sequence of Profile
        The actions, in the router's order (profiles added later are appended).
    config : VWConfig
    budget : Budget, optional
        Used by :meth:`probabilities` / :meth:`action_distribution` (standalone use, e.g. as a
        shadow or OPE candidate) together with the profiles' allow-lists; inside a Router the
        router's own mask is used instead.
    seed : int, optional
        Seeds VW (``--random_seed``); fresh entropy when None.

    Attributes
    ----------
    n_learned_ : int
        Outcomes learned from.
    """

    def __init__(self, profiles: Sequence[Profile], *, config: VWConfig | None = None,
                 budget: Budget | None = None, seed: int | None = None):
        if isinstance(profiles, Profile) or not isinstance(profiles, Sequence) or not profiles:
            raise ConfigError("profiles", profiles, "must be a non-empty sequence of Profile")
        for i, p in enumerate(profiles):
            if not isinstance(p, Profile):
                raise ConfigError(f"profiles[{i}]", p, "must be a Profile")
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ConfigError("profiles", names, "must have unique names")
        config = VWConfig() if config is None else config
        if not isinstance(config, VWConfig):
            raise ConfigError("config", config, "must be a VWConfig")
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError("budget", budget, "must be a Budget")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError("seed", seed, "must be a non-negative integer or None")
        self.config = config
        self.budget = budget
        self._profiles: list[Profile] = list(profiles)
        vw_seed = int(np.random.default_rng(seed).integers(0, _SEED_BOUND))
        self._start(vw.workspace([*config.args(), "--random_seed", str(vw_seed)]))
        self.n_learned_ = 0

    def _start(self, ws) -> None:
        self._ws = ws
        self._hasher = vw.FeatureHasher(self.config.bits)
        self._buffer = vw.ADFBuffer(ws)
        for p in self._profiles:
            self._buffer.add_action(_hashed(self._hasher, action_namespaces(p)))
        self._lock = threading.RLock()

    # -- the Policy interface (inside a Router) -------------------------------------------------
    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        return self.distribution(query.context, query.task_probs, query.feasible), np.zeros_like(query.feasible)

    def update(self, feedback: Feedback) -> None:
        self.learn(feedback.context, feedback.k, feedback.reward, feedback.propensity)

    @property
    def profiles(self) -> list[str]:
        """Profile names, in action order."""
        return [p.name for p in self._profiles]

    def add_profile(self, profile: Profile) -> None:
        """Append an action; VW gives it exploratory traffic until its value is learned."""
        if not isinstance(profile, Profile):
            raise ConfigError("profile", profile, "must be a Profile")
        with self._lock:
            if profile.name in self.profiles:
                raise ConfigError("profile.name", profile.name, "is already a profile of this policy")
            self._profiles.append(profile)
            self._buffer.add_action(_hashed(self._hasher, action_namespaces(profile)))

    def distribution(self, context: Mapping, task_probs=None, feasible=None) -> np.ndarray:
        """VW's pmf over the profiles (action order), 0 where ``feasible`` is False.

        ``task_probs`` (the router's task-type posterior) is not used: the task features come
        from the context (``task_type`` or ``task_probs``) so that :meth:`learn`, which sees
        only the context, uses the same features.
        """
        n = len(self._profiles)
        mask = np.ones(n, dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
        if mask.shape != (n,):
            raise ConfigError("feasible", mask.shape, f"must have shape ({n},)")
        chosen = np.flatnonzero(mask).tolist()
        out = np.zeros(n)
        if not chosen:
            return out
        with self._lock:
            self._buffer.set_shared(_hashed(self._hasher, shared_namespaces(context)))
            out[chosen] = vw.pmf_array(self._buffer.pmf(chosen), len(chosen))
        return out

    def learn(self, context: Mapping, k: int, reward: float, propensity: float) -> None:
        """Learn one outcome: profile ``k`` earned ``reward`` when played with ``propensity``
        (VW cost = -reward). Learns over all current profiles (VW's default ``mtr`` updates
        only the played action's regressor, so the decision's mask does not matter)."""
        n = len(self._profiles)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
            raise InvalidOutcomeError("k", k, f"must be a profile index in [0, {n})")
        reward = check_number("reward", reward, error=InvalidOutcomeError)
        # VW silently ignores a label with probability <= 0: refuse it instead.
        propensity = check_number("propensity", propensity, lo=0.0, hi=1.0, lo_open=True, error=InvalidOutcomeError)
        with self._lock:
            self._buffer.set_shared(_hashed(self._hasher, shared_namespaces(context)))
            self._buffer.learn(list(range(n)), int(k), -reward, propensity)
            self.n_learned_ += 1

    # -- standalone use: shadow / canary candidate, OPE ----------------------------------------
    def feasible(self, context: Mapping) -> np.ndarray:
        """Budget and allow-list mask for ``context`` (as the Router computes it)."""
        b = self.budget
        mask = np.ones(len(self._profiles), dtype=bool)
        for i, p in enumerate(self._profiles):
            if b is not None and ((b.max_cost_usd is not None and p.cost_usd > b.max_cost_usd)
                                  or (b.max_latency_ms is not None and p.latency_ms > b.max_latency_ms)):
                mask[i] = False
            elif p.allow:
                for key, allowed in p.allow.items():
                    value = context.get(key)
                    try:
                        ok = key in context and value in allowed
                    except TypeError:
                        ok = False
                    if not ok:
                        mask[i] = False
                        break
        return mask

    def probabilities(self, context: Mapping) -> dict[str, float]:
        """``{profile: p}`` for one request, without learning (for shadow/canary use).

        >>> import banditroute as br
        >>> p = VWPolicy([br.Profile("a"), br.Profile("b", allow={"tenant": ["acme"]})], seed=0)
        >>> p.probabilities({"tenant": "globex"})
        {'a': 1.0, 'b': 0.0}
        """
        mask = self.feasible(context)
        if not mask.any():
            raise ConfigError("profiles", None, "has no feasible profile for this request")
        return dict(zip(self.profiles, self.distribution(context, None, mask).tolist()))

    def action_distribution(self, contexts, profiles: Sequence[str]) -> np.ndarray:
        """Action distribution of shape (n_contexts, len(profiles)) for offline evaluation,
        without learning. ``contexts`` is a sequence of mappings or a polars DataFrame (nulls
        are absent fields). Profiles this policy does not know get 0; a feasible profile of
        this policy missing from ``profiles`` is an error.

        >>> import banditroute as br
        >>> p = VWPolicy([br.Profile("a"), br.Profile("b")], config=VWConfig(exploration="epsilon"), seed=0)
        >>> p.action_distribution([{"task_type": "chat"}], ["b", "a", "c"]).round(3).tolist()
        [[0.5, 0.5, 0.0]]
        """
        if hasattr(contexts, "iter_rows"):
            contexts = [{k: v for k, v in row.items() if v is not None} for row in contexts.iter_rows(named=True)]
        names = self.profiles
        columns = {name: j for j, name in enumerate(profiles)}
        out = np.zeros((len(contexts), len(profiles)))
        for i, context in enumerate(contexts):
            mask = self.feasible(context)
            missing = [n for n, m in zip(names, mask) if m and n not in columns]
            if missing:
                raise ConfigError("profiles", missing, "must include every profile the policy can play")
            pmf = self.distribution(context, None, mask)
            for name, p in zip(names, pmf.tolist()):
                if p:
                    out[i, columns[name]] = p
        return out

    def learn_feedback(self, contexts, actions, rewards, propensities, action_names: Sequence[str]) -> int:
        """Learn offline from logged rounds (e.g. an ``ope.LoggedFeedback``'s fields).

        ``actions`` index ``action_names``; rounds whose action this policy does not know are
        skipped. Returns the number of rounds learned from.
        """
        if hasattr(contexts, "iter_rows"):
            contexts = [{k: v for k, v in row.items() if v is not None} for row in contexts.iter_rows(named=True)]
        index = {n: i for i, n in enumerate(self.profiles)}
        to_k = [index.get(str(n), -1) for n in action_names]
        n = 0
        for context, a, r, p in zip(contexts, np.asarray(actions).tolist(), np.asarray(rewards).tolist(),
                                    np.asarray(propensities).tolist()):
            k = to_k[a]
            if k >= 0:
                self.learn(context, k, r, p)
                n += 1
        return n

    # -- persistence ------------------------------------------------------------------------------
    def model_bytes(self) -> bytes:
        """The VW model, as VW serialises it (loadable by VW's own tools)."""
        with self._lock:
            return self._ws.serialize()

    def save_model(self, path: str | os.PathLike) -> None:
        """Write the VW model file (``vw -i`` can read it)."""
        data = self.model_bytes()
        with open(path, "wb") as fh:
            fh.write(data)

    @classmethod
    def load_model(cls, path: str | os.PathLike, profiles: Sequence[Profile], *,
                   config: VWConfig | None = None, budget: Budget | None = None) -> "VWPolicy":
        """A policy over ``profiles`` (same order as when saved) from a VW model file."""
        with open(path, "rb") as fh:
            data = fh.read()
        policy = cls.__new__(cls)
        policy.__setstate__({"config": config or VWConfig(), "budget": budget, "profiles": list(profiles),
                             "model": data, "n_learned_": 0})
        return policy

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The VW model (its own serialisation, as bytes) and ``n_learned_``."""
        return {"model": np.frombuffer(self.model_bytes(), dtype=np.uint8).copy(),
                "n_learned": np.array(self.n_learned_, dtype=np.int64)}

    def load_state_arrays(self, arrays) -> None:
        """Continue from a model of :meth:`state_arrays` (VW reads its options from the model)."""
        model = take(arrays, "model", None, np.uint8, owner="policy")
        n_learned = int(take(arrays, "n_learned", (), np.int64, owner="policy"))
        if model.ndim != 1 or n_learned < 0:
            raise ConfigError("policy.model", model.shape, "must be the bytes of a VW model")
        with self._lock:
            self._start(vw.load(model.tobytes()))
            self.n_learned_ = n_learned

    def settings(self) -> dict:
        """The profiles (in action order), the :class:`VWConfig` and the budget (see :meth:`from_settings`)."""
        return {"profiles": tuple(self._profiles), "config": self.config, "budget": self.budget}

    @classmethod
    def from_settings(cls, settings) -> VWPolicy:
        """A fresh policy from :meth:`settings` (its model comes from :meth:`load_state_arrays`)."""
        return cls(list(settings["profiles"]), config=settings["config"], budget=settings["budget"])

    def __getstate__(self) -> dict:
        return {"config": self.config, "budget": self.budget, "profiles": list(self._profiles),
                "model": self.model_bytes(), "n_learned_": self.n_learned_}

    def __setstate__(self, state: dict) -> None:
        self.config = state["config"]
        self.budget = state["budget"]
        self._profiles = list(state["profiles"])
        self.n_learned_ = state["n_learned_"]
        self._start(vw.load(state["model"]))

    def __repr__(self) -> str:
        return (f"VWPolicy(profiles={self.profiles}, exploration={self.config.exploration!r}, "
                f"n_learned_={self.n_learned_})")
