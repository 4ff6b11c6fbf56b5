"""Synthetic logged bandit data with a known policy value (for tests and benchmarks).

Contexts ``x ~ N(0, I)``; expected reward ``mu(x, k) = sigmoid(x . theta_k + b_k)``;
rewards Bernoulli(mu) (or mu plus Gaussian noise). The logging policy is a softmax
of a random linear score with inverse temperature ``logging_beta`` (0: uniform) and
an exploration floor; the target policy is a softmax of ``mu`` with inverse
temperature ``target_beta`` (``inf``: greedy). The true value of the target is
``E_x[sum_k pi_e(k | x) mu(x, k)]``, computed by Monte Carlo on a large sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback

__all__ = ["SyntheticProblem", "SyntheticBandit"]


def _softmax(scores: np.ndarray, beta: float) -> np.ndarray:
    if math.isinf(beta):
        out = np.zeros_like(scores)
        out[np.arange(scores.shape[0]), scores.argmax(axis=1)] = 1.0
        return out
    z = beta * (scores - scores.max(axis=1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class SyntheticBandit:
    """One sample of synthetic logged data.

    Attributes
    ----------
    feedback : LoggedFeedback
    expected_rewards : numpy.ndarray, shape (n_rounds, n_actions)
        The true ``mu(x_i, k)`` (a perfect reward model).
    logging : numpy.ndarray, shape (n_rounds, n_actions)
        The logging policy's distribution.
    target : numpy.ndarray, shape (n_rounds, n_actions)
        The target policy's distribution.
    """

    feedback: LoggedFeedback
    expected_rewards: np.ndarray
    logging: np.ndarray
    target: np.ndarray


@dataclass(frozen=True, kw_only=True)
class SyntheticProblem:
    """A synthetic contextual bandit problem.

    Parameters
    ----------
    seed : int
        Seeds the problem's parameters (theta, logging scores).
    n_actions, n_features : int
    logging_beta : float
        Inverse temperature of the logging softmax (0: uniform logging).
    target_beta : float
        Inverse temperature of the target softmax over ``mu`` (inf: greedy).
    exploration : float
        Logging floor: ``(1 - eps) softmax + eps / n_actions``.
    noise : {"bernoulli", "gaussian"}
        Reward noise around ``mu`` (gaussian: standard deviation 0.5).

    Examples
    --------
    >>> problem = SyntheticProblem(seed=0, n_actions=3)
    >>> data = problem.sample(1000, seed=1)
    >>> data.feedback.n_rounds, data.target.shape
    (1000, (1000, 3))
    >>> round(problem.true_value(n_rounds=200_000, seed=2), 2)
    0.56
    """

    seed: int
    n_actions: int = 5
    n_features: int = 3
    logging_beta: float = 1.0
    target_beta: float = 3.0
    exploration: float = 0.05
    noise: str = "bernoulli"

    def __post_init__(self) -> None:
        if self.n_actions < 2 or self.n_features < 1:
            raise InvalidConfigError("n_actions", f"n_actions must be >= 2 and n_features >= 1, got {self.n_actions}, {self.n_features}")
        if not 0.0 <= self.exploration <= 1.0:
            raise InvalidConfigError("exploration", f"exploration must be in [0, 1], got {self.exploration}")
        if self.noise not in ("bernoulli", "gaussian"):
            raise InvalidConfigError("noise", f"noise must be 'bernoulli' or 'gaussian', got {self.noise!r}")

    def _params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        theta = rng.normal(size=(self.n_features, self.n_actions))
        bias = rng.normal(scale=0.5, size=self.n_actions)
        logging_w = rng.normal(size=(self.n_features, self.n_actions))
        return theta, bias, logging_w

    def _policies(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        theta, bias, logging_w = self._params()
        mu = 1.0 / (1.0 + np.exp(-(x @ theta + bias)))
        logging = (1.0 - self.exploration) * _softmax(x @ logging_w, self.logging_beta) + self.exploration / self.n_actions
        return mu, logging, _softmax(mu, self.target_beta)

    def sample(self, n_rounds: int, *, seed: int | np.random.Generator) -> SyntheticBandit:
        """Draw ``n_rounds`` logged rounds (contexts in columns ``x0, x1, ...``)."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = rng.normal(size=(n_rounds, self.n_features))
        mu, logging, target = self._policies(x)
        cum = logging.cumsum(axis=1)
        actions = np.minimum((cum < rng.random((n_rounds, 1))).sum(axis=1), self.n_actions - 1)
        m = mu[np.arange(n_rounds), actions]
        if self.noise == "bernoulli":
            rewards = (rng.random(n_rounds) < m).astype(np.float64)
        else:
            rewards = m + rng.normal(scale=0.5, size=n_rounds)
        fb = LoggedFeedback(
            actions=actions,
            rewards=rewards,
            propensities=logging[np.arange(n_rounds), actions],
            n_actions=self.n_actions,
            contexts=pl.DataFrame({f"x{j}": x[:, j] for j in range(self.n_features)}),
            logging_distribution=logging,
        )
        return SyntheticBandit(fb, mu, logging, target)

    def true_value(self, *, n_rounds: int = 2_000_000, seed: int) -> float:
        """Monte Carlo value ``E_x[sum_k pi_e(k | x) mu(x, k)]`` of the target policy."""
        rng = np.random.default_rng(seed)
        total, done = 0.0, 0
        while done < n_rounds:
            b = min(500_000, n_rounds - done)
            mu, _, target = self._policies(rng.normal(size=(b, self.n_features)))
            total += float(np.einsum("ij,ij->", mu, target))
            done += b
        return total / n_rounds
