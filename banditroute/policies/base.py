"""The one interface of every routing policy: a template that turns a policy's proposal into
the exact pmf the router draws from and logs.

A policy supplies one hook, :meth:`Policy.propose`: non-negative weights over the feasible
profiles of one request (and the profiles its own reliability floor excludes). The base class
owns the steps every policy shares, in :meth:`Policy.pmf`:

1. drop the profiles the policy excluded from the feasible set;
2. check the weights (unless the policy declares ``exact``: valid by construction);
3. normalise them and mix in the exploration floor, over the feasible profiles::

       pmf[k] = (1 - eps) * w[k] / sum(w)  +  eps * 1[k feasible] / n_feasible

A policy that learns supplies :meth:`Policy.update` (one outcome) and, when it keeps per-profile
state, :meth:`Policy.add_profile`. What a policy can do is declared as class attributes
(``exact``, ``cacheable``, ``learns``, ``supports_drift``), never probed. A subclass with a ``name`` is
registered (``class ThompsonPolicy(BankPolicy, name="thompson")``) and can be chosen with
``Router(policy=name)``; it then builds itself from the router's settings in :meth:`Policy.build`.

>>> import numpy as np
>>> class Cheapest(Policy):
...     exact = True
...     def propose(self, query):
...         w = np.where(query.offset == query.offset[query.feasible].min(), 1.0, 0.0) * query.feasible
...         return w, np.zeros_like(query.feasible)
>>> q = PolicyQuery(0, np.ones(1), np.array([True, True, False]), {}, np.array([2.0, 1.0, 0.0]), 1.0, 0.1)
>>> pmf, below = Cheapest().pmf(q)
>>> pmf.tolist()
[0.05, 0.9500000000000001, 0.0]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import numpy as np

from ..errors import ConfigError

__all__ = ["Policy", "PolicyQuery", "Feedback", "PolicySetup", "registered", "pmf_rows"]

_REGISTRY: dict[str, type["Policy"]] = {}


class PolicyQuery(NamedTuple):
    """One request as a policy sees it."""

    task: object  #: the task type's index (int), or the task-type posterior (array)
    task_probs: np.ndarray  #: the task-type posterior, shape (n_task_types,)
    feasible: np.ndarray  #: boolean mask of the profiles budgets and allow-lists leave
    context: Mapping  #: the request's (validated) context
    offset: np.ndarray  #: per-profile expected penalty ``w_c * cost_usd + w_l * latency_ms`` (learned means)
    quality_weight: float  #: ``w_q``
    exploration: float  #: the router's exploration floor ``eps``
    #: scenarios of the penalty (learned cost and latency), shape (n_draws, n_profiles), or None:
    #: a policy that draws scenarios (Thompson sampling) uses them; others use ``offset``, their mean
    offset_draws: np.ndarray | None = None


class Feedback(NamedTuple):
    """One applied outcome, as a policy learns from it."""

    context: Mapping
    task_probs: np.ndarray
    k: int  #: index of the executed profile
    quality: float
    reward: float
    propensity: float


class PolicySetup(NamedTuple):
    """What a registered policy is built from (see :meth:`Policy.build`)."""

    config: object  #: the router's :class:`~banditroute.config.settings.RouterConfig`
    belief: object  #: the router's :class:`~banditroute.beliefs.beta.BetaBelief`
    seed: object  #: a ``numpy.random.SeedSequence`` for the policy's own draws


class Policy(ABC):
    """Base class of routing policies (see the module docstring)."""

    #: registry name (``Router(policy=name)``); None for policies handed over as objects
    name: ClassVar[str | None] = None
    #: the policy version's prefix in the log (``policy_version``) when built by name
    version_prefix: ClassVar[str] = "policy"
    #: ``propose`` returns valid weights by construction (non-negative, zero outside the
    #: feasible profiles, not all zero): they are not re-checked on every decision
    exact: ClassVar[bool] = False
    #: the pmf depends only on (task, feasible set) until :attr:`version` changes: the router
    #: caches it per key
    cacheable: ClassVar[bool] = False
    #: works with drift recalibration of the Beta beliefs
    supports_drift: ClassVar[bool] = True
    #: keeps a model of its own that :meth:`update` teaches (the router then keeps each pending
    #: decision's context and propensity for it); False for policies reading the shared beliefs
    learns: ClassVar[bool] = True
    #: reads :attr:`PolicyQuery.offset_draws` (scenarios of the learned cost and latency); the
    #: pipeline computes them only for a policy that does
    uses_scenarios: ClassVar[bool] = False
    #: the router's exploration floor when ``Router(exploration=...)`` is not given
    default_exploration: ClassVar[float] = 0.02
    #: :meth:`propose_frame` scores a DataFrame of requests at once (the vectorised ``decide_batch``)
    batchable: ClassVar[bool] = False

    def __init_subclass__(cls, *, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name = name
        if name is not None:
            if name in _REGISTRY:
                raise TypeError(f"a policy named {name!r} is already registered ({_REGISTRY[name].__name__})")
            _REGISTRY[name] = cls

    @classmethod
    def build(cls, setup: PolicySetup) -> "Policy":
        """The policy for a router's settings: ``cls()`` unless a policy needs more."""
        return cls()

    @abstractmethod
    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(weights, below)``: non-negative weights of shape (n_profiles,), zero outside
        ``query.feasible`` and outside ``~below``, and the boolean mask ``below`` of feasible
        profiles the policy's own reliability floor excludes (all False without one)."""

    def propose_frame(self, frame, task_probs: np.ndarray, feasible: np.ndarray) -> np.ndarray | None:
        """Weights of many requests at once, shape (n, n_profiles): row i is what :meth:`propose`
        returns for row i of the polars DataFrame ``frame`` (task posteriors ``task_probs`` of
        shape (n, n_task_types), feasible masks of shape (n, n_profiles)), bit for bit; None
        when some row needs :meth:`propose` (a ``batchable`` policy implements it; the policy's
        own floor excludes nothing on this path)."""
        return None

    def update(self, feedback: Feedback) -> None:
        """Learn from one applied outcome (policies that read shared beliefs need not)."""

    def add_profile(self, profile) -> None:
        """A profile was added to the router (appended as the last index)."""

    # -- state as data (a snapshot: banditroute.decide.snapshot) -------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The policy's learned state as named numeric arrays (never objects), restored by
        :meth:`load_state_arrays` into a policy built with the same settings. A policy that does
        not learn keeps none (``{}``); one that learns implements both methods, or cannot be
        stored as data and says so (:class:`ConfigError`)."""
        if self.learns:
            raise ConfigError("policy", type(self).__name__, "cannot export its learned state as arrays "
                              "(it does not implement state_arrays/load_state_arrays): save the router "
                              "with format='pickle', and load only files you wrote")
        return {}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned; every array is checked before anything changes."""
        if arrays or self.learns:
            raise ConfigError("policy", type(self).__name__, f"cannot load stored state arrays {sorted(arrays)}")

    def settings(self) -> dict | None:
        """What :meth:`from_settings` rebuilds this policy from, when it was handed to a router as
        an object (``Router(learner=...)``): numbers, strings and banditroute's settings objects
        (``Profile``, ``Budget``, ...), which a snapshot stores as data. None (the default): not
        rebuildable from data (a policy chosen by name is rebuilt from the router's settings)."""
        return None

    @classmethod
    def from_settings(cls, settings: Mapping) -> Policy:
        """A new policy from :meth:`settings` (its learned state then comes from :meth:`load_state_arrays`)."""
        raise ConfigError("policy", cls.__name__, "cannot be rebuilt from stored settings")

    @property
    def version(self) -> int:
        """Changes whenever :meth:`propose` could return something else for the same query
        (read only when ``cacheable``)."""
        return 0

    def pmf(self, query: PolicyQuery) -> tuple[np.ndarray | None, np.ndarray]:
        """The exact distribution over profiles for one request, and the floor's exclusions.

        The pmf is None when no profile is left feasible."""
        if not query.feasible.any():
            return None, query.feasible
        weights, below = self.propose(query)
        feasible = query.feasible & ~below if below.any() else query.feasible
        n_feasible = int(feasible.sum())
        if n_feasible == 0:
            return None, below
        if n_feasible == 1:
            return feasible.astype(np.float64), below
        weights = np.asarray(weights, dtype=np.float64)
        if not self.exact:
            _check(type(self).__name__, weights, feasible)
        total = weights.sum()
        eps = query.exploration
        if eps == 0.0:
            return weights / total, below
        return (1.0 - eps) * (weights / total) + (eps / n_feasible) * feasible, below


def pmf_rows(weights: np.ndarray, feasible: np.ndarray, exploration: float) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`Policy.pmf`'s last steps for many rows of exact weights (shape (n, n_profiles)),
    with the same floating-point operations row by row: ``(pmfs, ok)``, ``ok`` False for a row
    with no feasible profile (its pmf row is then zeros)."""
    n_feasible = feasible.sum(axis=1)
    ok = n_feasible > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        if exploration == 0.0:
            pmfs = weights / weights.sum(axis=1, keepdims=True)
        else:
            pmfs = ((1.0 - exploration) * (weights / weights.sum(axis=1, keepdims=True))
                    + (exploration / n_feasible)[:, None] * feasible)
    single = n_feasible == 1
    if single.any():
        pmfs[single] = feasible[single]
    pmfs[~ok] = 0.0
    return pmfs, ok


def registered() -> dict[str, type[Policy]]:
    """The policies that can be chosen by name, ``{name: class}``."""
    return dict(_REGISTRY)


def _check(owner: str, weights: np.ndarray, feasible: np.ndarray) -> None:
    if (weights.shape != feasible.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0)
            or np.any(weights[~feasible] > 0) or not weights.sum() > 0):
        raise ConfigError(f"{owner}.propose", weights.tolist(),
                          "must return non-negative weights over the feasible profiles, not all zero")
