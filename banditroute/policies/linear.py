"""Contextual Thompson sampling: a Bayesian linear model of the reward per profile (LinTS).

For request features ``x`` (the task-type posterior, and each numeric feature interacted with
it, so every task type gets its own intercept and slopes), profile ``k``'s reward is modelled
as ``x . theta_k + noise``, noise ~ N(0, sigma^2), prior theta_k ~ N(0, I / lambda). The
posterior is Gaussian with precision ``A_k = lambda I + sum x x^T / sigma^2`` and mean
``A_k^-1 b_k``, ``b_k = sum x r / sigma^2``: sufficient statistics updated incrementally by
each outcome (Agrawal & Goyal, 2013, "Thompson Sampling for Contextual Bandits with Linear
Payoffs").

As for the Beta belief, the router decides from a *bank* of ``M`` posterior draws
``theta_m,k = mean_k + L_k z_m,k`` (``L_k L_k^T = A_k^-1``, the standard normals ``z`` fixed
at construction), so the probability of each profile is exactly the share of draws it wins;
only the profiles an update touched are recomputed, every ``refresh_every`` outcomes. The bank
is stored in float32, laid out ``(dim, n_profiles, n_draws)`` so that scoring a request is one
contiguous matrix-vector product; the pmf is computed in that same float32 arithmetic, so it is
exactly the share of the stored bank's draws each profile wins (rounding the draws to float32
moves them by ~1e-7, far below the Monte Carlo error ``sqrt(p(1-p)/M)`` of the bank itself). With
``discount < 1`` the statistics forget: ``A <- lambda I + discount (A - lambda I)``,
``b <- discount b`` at every outcome.

It plugs into :class:`~banditroute.decide.router.Router` as its learner (``policy="linear"`` with
``features={"prompt_tokens": 1000.0}``, a feature name and the scale it is divided by).

>>> import numpy as np
>>> lin = LinearTS(2, ["chat"], (("tokens", 1000.0),), n_draws=500, seed=0)
>>> for _ in range(200):
...     lin.learn({"tokens": 100}, 0, 1.0, 0.5)
...     lin.learn({"tokens": 100}, 1, 0.0, 0.5)
>>> pmf = lin.distribution({"tokens": 100}, np.array([1.0]), np.array([True, True]))
>>> pmf.round(2).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..beliefs.state import generator_state, set_generator_state, take
from ..errors import ConfigError, InvalidRequestError
from .base import Feedback, Policy, PolicyQuery, PolicySetup

__all__ = ["LinearTS"]


class LinearTS(Policy, name="linear"):
    """Bayesian linear regression of the reward per profile, decided through a draw bank.

    Parameters
    ----------
    n_profiles : int
    task_types : sequence of str
    features : sequence of (name, scale)
        Numeric request fields and the scale each is divided by (a missing field counts as 0).
    n_draws : int
        Bank size ``M``.
    prior_precision : float
        ``lambda``.
    noise_sd : float
        ``sigma``.
    discount : float in (0, 1]
    refresh_every : int
    seed : int, SeedSequence or None
    """

    def __init__(self, n_profiles: int, task_types: Sequence[str], features: Sequence[tuple[str, float]], *,
                 n_draws: int = 1024, prior_precision: float = 1.0, noise_sd: float = 0.5, discount: float = 1.0,
                 refresh_every: int = 16, seed=None):
        self.task_types = list(task_types)
        self.features = tuple((str(n), float(s)) for n, s in features)
        self.n_tasks = len(self.task_types)
        self.dim = self.n_tasks * (1 + len(self.features))
        self.n_draws = int(n_draws)
        self.prior_precision = float(prior_precision)
        self.inv_noise_var = 1.0 / float(noise_sd) ** 2
        self.discount = float(discount)
        self.refresh_every = int(refresh_every)
        self._rng = np.random.default_rng(seed)
        self.A_ = np.repeat(np.eye(self.dim)[None] * self.prior_precision, n_profiles, axis=0)
        self.b_ = np.zeros((n_profiles, self.dim))
        self._z = self._rng.standard_normal((n_profiles, self.n_draws, self.dim))
        self.bank_ = np.zeros((self.dim, n_profiles, self.n_draws), dtype=np.float32)
        self._dirty = np.ones(n_profiles, dtype=bool)
        self._since_refresh = 0
        self.n_updates_ = 0
        self.refresh()

    def featurize(self, context: Mapping, task_probs: np.ndarray) -> np.ndarray:
        """``x = [p(t|x), p(t|x) * f_1 / scale_1, ...]``, shape (dim,)."""
        values = []
        for name, scale in self.features:
            v = context.get(name, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidRequestError(f"context.{name}", v, "must be a finite number (a contextual feature)")
            values.append(v / scale)
        p = np.asarray(task_probs, dtype=np.float64)
        return np.multiply.outer(np.array([1.0, *values]), p).ravel()

    @property
    def theta_(self) -> np.ndarray:
        """The bank of coefficient draws, shape (n_profiles, n_draws, dim) (a float32 view)."""
        return self.bank_.transpose(1, 2, 0)

    version_prefix = "ts-linear"
    #: :meth:`distribution` always returns a share of draws over the feasible profiles
    exact = True
    supports_drift = False  # its statistics forget through ``discount`` instead

    @classmethod
    def build(cls, setup: PolicySetup) -> "LinearTS":
        cfg = setup.config
        return cls(len(cfg.profiles), cfg.task_types, cfg.features, n_draws=cfg.n_draws, discount=cfg.discount,
                   refresh_every=cfg.refresh_every, seed=setup.seed)

    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        return self.distribution(query.context, query.task_probs, query.feasible), np.zeros_like(query.feasible)

    def update(self, feedback: Feedback) -> None:
        self.learn_task(feedback.context, feedback.task_probs, feedback.k, feedback.reward, feedback.propensity)

    def distribution(self, context: Mapping, task_probs: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        """Share of the bank's draws each feasible profile wins for this request (ties go to
        the first profile, as ``argmax``)."""
        x = self.featurize(context, task_probs).astype(np.float32)
        _, n_profiles, n_draws = self.bank_.shape
        u = (x @ self.bank_.reshape(self.dim, -1)).reshape(n_profiles, n_draws)  # one gemv; (K, M)
        if not feasible.all():
            u[~feasible] = -np.inf
        wins = u == u.max(axis=0)
        counts = wins.sum(axis=1)
        if counts.sum() != n_draws:  # a draw with tied maxima (rare in float32): first maximiser wins
            counts = np.bincount(u.argmax(axis=0), minlength=n_profiles)
        return counts / n_draws

    def learn(self, context: Mapping, k: int, reward: float, propensity: float) -> None:
        """One outcome (the learner protocol); the task posterior is read from the context."""
        self.learn_task(context, self._task_probs(context), k, reward, propensity)

    def learn_task(self, context: Mapping, task_probs: np.ndarray, k: int, reward: float, propensity: float) -> None:
        """One outcome with the task posterior the decision used: a rank-one update of profile
        ``k``'s sufficient statistics (the router's :meth:`update` calls this)."""
        x = self.featurize(context, task_probs)
        if self.discount < 1.0:
            prior = np.eye(self.dim) * self.prior_precision
            self.A_ = prior + self.discount * (self.A_ - prior)
            self.b_ *= self.discount
            self._dirty[:] = True
        self.A_[k] += np.outer(x, x) * self.inv_noise_var
        self.b_[k] += x * (reward * self.inv_noise_var)
        self._dirty[k] = True
        self.n_updates_ += 1
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            self.refresh()

    def _task_probs(self, context: Mapping) -> np.ndarray:
        # Without the decision's posterior: an explicit label or task_probs, else uniform.
        label = context.get("task_type")
        if label in self.task_types:
            return np.eye(self.n_tasks)[self.task_types.index(label)]
        probs = context.get("task_probs")
        if isinstance(probs, Mapping):
            return np.array([float(probs.get(t, 0.0)) for t in self.task_types])
        return np.full(self.n_tasks, 1.0 / self.n_tasks)

    def refresh(self) -> None:
        """Recompute the draws of the profiles touched since the last refresh."""
        self._since_refresh = 0
        for k in np.flatnonzero(self._dirty):
            cov = np.linalg.inv(self.A_[k])
            cov = (cov + cov.T) / 2
            mean = cov @ self.b_[k]
            self.bank_[:, k, :] = (mean + self._z[k] @ np.linalg.cholesky(cov).T).T
        self._dirty[:] = False

    def mean(self) -> np.ndarray:
        """Posterior mean coefficients, shape (n_profiles, dim)."""
        return np.linalg.solve(self.A_, self.b_[..., None])[..., 0]

    def add_profile(self, profile=None) -> None:
        self.A_ = np.concatenate([self.A_, np.eye(self.dim)[None] * self.prior_precision])
        self.b_ = np.vstack([self.b_, np.zeros((1, self.dim))])
        self._z = np.concatenate([self._z, self._rng.standard_normal((1, self.n_draws, self.dim))])
        self.bank_ = np.concatenate([self.bank_, np.zeros((self.dim, 1, self.n_draws), dtype=np.float32)], axis=1)
        self._dirty = np.append(self._dirty, True)
        self.refresh()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The sufficient statistics ``A_``, ``b_``, the fixed normals of the bank and the bank
        itself, the counters and the generator's state: a restored policy continues exactly."""
        return {"A": self.A_.copy(), "b": self.b_.copy(), "z": self._z.copy(), "bank": self.bank_.copy(),
                "dirty": self._dirty.copy(),
                "counters": np.array([self.n_updates_, self._since_refresh], dtype=np.int64),
                "rng": generator_state(self._rng)}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` of a policy with the same profiles, features and ``n_draws``."""
        n_profiles, owner = self.b_.shape[0], "policy"
        got = {"A": take(arrays, "A", self.A_.shape, np.float64, owner=owner),
               "b": take(arrays, "b", self.b_.shape, np.float64, owner=owner),
               "z": take(arrays, "z", self._z.shape, np.float64, owner=owner),
               "bank": take(arrays, "bank", self.bank_.shape, np.float32, owner=owner),
               "dirty": take(arrays, "dirty", (n_profiles,), np.bool_, owner=owner)}
        counters = take(arrays, "counters", (2,), np.int64, owner=owner)
        words = take(arrays, "rng", (6,), np.uint64, owner=owner)
        if np.any(counters < 0):
            raise ConfigError(f"{owner}.counters", counters.tolist(), "must be non-negative")
        set_generator_state(self._rng, words, owner=owner)
        self.A_, self.b_, self._z, self.bank_, self._dirty = got["A"], got["b"], got["z"], got["bank"], got["dirty"]
        self.n_updates_, self._since_refresh = (int(c) for c in counters)

    def __setstate__(self, state: dict) -> None:
        if "theta_" in state:  # pickled before the float32 (dim, n_profiles, n_draws) bank
            state["bank_"] = np.ascontiguousarray(state.pop("theta_").transpose(2, 0, 1), dtype=np.float32)
        self.__dict__.update(state)
