"""Beta reliability posteriors per (profile, task type) and their bank of posterior draws.

The router treats Thompson sampling as a uniform mixture over a *bank* of ``M`` joint posterior
draws, so the probability of each profile (its propensity) is exactly the share of draws it
wins. The bank is redrawn only for the (profile, task type) cells an update touched (or, with
discounting, that forgot a material share of their evidence), every ``refresh_every``
updates, from a generator of its own: the bank is a function of the sequence
of updates alone, never of when decisions were asked for.

Update rule for an outcome of quality ``q`` in [0, 1] on profile ``k`` with task-type
posterior ``w`` (the one logged with the decision), and discount ``gamma``::

    alpha[:, t] <- alpha0[:, t] + gamma**w[t] * (alpha[:, t] - alpha0[:, t])   (forgetting)
    alpha[k, t] += w[t] * q ;  beta[k, t] += w[t] * (1 - q)

Forgetting runs on a per-task-type clock (each task type forgets as its own traffic arrives),
as in discounted Thompson sampling (Raj & Kalyani, 2017), shrinking toward the prior.

>>> import numpy as np
>>> b = BetaBelief(np.ones((2, 1)), np.ones((2, 1)), n_draws=1000, seed=0)
>>> b.update(0, np.array([1.0]), 1.0)
>>> b.alpha_.tolist(), b.beta_.tolist()
([[2.0], [1.0]], [[1.0], [1.0]])
>>> b.quality_draws(0).shape
(1000, 2)
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.special import betaincinv

from ..errors import ConfigError
from .state import generator_state, set_generator_state, take

__all__ = ["BetaBelief"]


class BetaBelief:
    """Beta(alpha, beta) per (profile, task type), with a bank of ``n_draws`` joint draws.

    Parameters
    ----------
    alpha0, beta0 : np.ndarray of shape (n_profiles, n_task_types)
        Prior pseudo-counts.
    n_draws : int
        Size ``M`` of the draw bank.
    discount : float in (0, 1]
        Forgetting factor per unit of task-type traffic; 1 never forgets.
    refresh_every : int
        Redraw touched cells of the bank after this many updates.
    forget_tolerance : float
        With discounting, a cell that only forgot (no new observation) is redrawn once its
        pseudo-count total has shrunk by this fraction since its draws were made.
    seed : int or np.random.SeedSequence
        Seeds the bank's own generator.

    Attributes
    ----------
    alpha_, beta_ : np.ndarray (n_profiles, n_task_types)
        Posterior pseudo-counts.
    theta_ : np.ndarray (n_task_types, n_draws, n_profiles)
        The draw bank (laid out so one task type's draws are contiguous).
    version_ : int
        Incremented whenever the bank changes.
    """

    def __init__(self, alpha0: np.ndarray, beta0: np.ndarray, *, n_draws: int = 2048,
                 discount: float = 1.0, refresh_every: int = 1, forget_tolerance: float = 0.05, seed=None):
        self.alpha0_ = np.array(alpha0, dtype=np.float64)
        self.beta0_ = np.array(beta0, dtype=np.float64)
        self.alpha_ = self.alpha0_.copy()
        self.beta_ = self.beta0_.copy()
        self.n_draws = int(n_draws)
        self.discount = float(discount)
        self.refresh_every = int(refresh_every)
        self.forget_tolerance = float(forget_tolerance)
        self._rng = np.random.default_rng(seed)
        n_profiles, n_tasks = self.alpha_.shape
        self.theta_ = np.empty((n_tasks, self.n_draws, n_profiles))
        self.dirty_ = np.ones((n_profiles, n_tasks), dtype=bool)
        self.n_drawn_ = self.alpha_ + self.beta_  # pseudo-count totals the bank was drawn with
        self.n_updates_ = 0
        self.version_ = 0
        self._since_refresh = 0
        self.refresh()

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha_.shape

    # -- learning ---------------------------------------------------------------------------
    def update(self, k: int, w: np.ndarray, quality: float) -> None:
        """Apply one outcome of ``quality`` on profile ``k`` with task-type weights ``w``."""
        if self.discount < 1.0:
            factor = self.discount ** w  # (T,), 1 where w == 0
            self.alpha_ = self.alpha0_ + (self.alpha_ - self.alpha0_) * factor
            self.beta_ = self.beta0_ + (self.beta_ - self.beta0_) * factor
        self.dirty_[k, w > 0] = True
        self.alpha_[k] += w * quality
        self.beta_[k] += w * (1.0 - quality)
        self.n_updates_ += 1
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            self.refresh()

    def update_many(self, ks: np.ndarray, w: np.ndarray, quality: np.ndarray) -> None:
        """Apply outcomes in order (``ks`` (n,), ``w`` (n, T), ``quality`` (n,)), without
        discounting: the same sums, added in the same order, as :meth:`update` one by one; the
        bank is redrawn by the next :meth:`refresh`."""
        if self.discount < 1.0:
            raise ValueError("update_many needs discount == 1 (discounting depends on the order of updates)")
        np.add.at(self.alpha_, ks, w * quality[:, None])
        np.add.at(self.beta_, ks, w * (1.0 - quality)[:, None])
        np.logical_or.at(self.dirty_, ks, w > 0)
        self.n_updates_ += len(ks)
        self._since_refresh += len(ks)

    @property
    def refresh_due(self) -> bool:
        """Whether ``refresh_every`` outcomes were applied since the bank was last redrawn."""
        return self._since_refresh >= self.refresh_every

    def shrink(self, k: int, t: int, keep: float) -> None:
        """Recalibrate one cell: keep a fraction ``keep`` of its evidence beyond the prior."""
        self.alpha_[k, t] = self.alpha0_[k, t] + keep * (self.alpha_[k, t] - self.alpha0_[k, t])
        self.beta_[k, t] = self.beta0_[k, t] + keep * (self.beta_[k, t] - self.beta0_[k, t])
        self.dirty_[k, t] = True
        self.refresh()

    def set_evidence(self, alpha_evidence: np.ndarray, beta_evidence: np.ndarray) -> None:
        """Replace the evidence beyond the prior (e.g. with state merged across replicas): two
        finite, non-negative arrays of shape (n_profiles, n_task_types)."""
        alpha_evidence = np.asarray(alpha_evidence, dtype=np.float64)
        beta_evidence = np.asarray(beta_evidence, dtype=np.float64)
        for name, ev in (("alpha_evidence", alpha_evidence), ("beta_evidence", beta_evidence)):
            if ev.shape != self.shape or not np.all(np.isfinite(ev)) or np.any(ev < 0):
                raise ConfigError(name, ev.shape, f"must be a finite, non-negative array of shape {self.shape}")
        alpha = self.alpha0_ + alpha_evidence
        beta = self.beta0_ + beta_evidence
        self.dirty_ |= (alpha != self.alpha_) | (beta != self.beta_)
        self.alpha_, self.beta_ = alpha, beta
        self.refresh()

    def refresh(self) -> bool:
        """Redraw the bank where updates touched it; return whether anything changed."""
        self._since_refresh = 0
        total = self.alpha_ + self.beta_
        redraw = self.dirty_ | (total < (1.0 - self.forget_tolerance) * self.n_drawn_)
        if not redraw.any():
            return False
        ks, ts = np.nonzero(redraw)
        draws = self._rng.beta(self.alpha_[ks, ts], self.beta_[ks, ts], size=(self.n_draws, ks.size))
        self.theta_[ts, :, ks] = draws.T
        self.n_drawn_[ks, ts] = total[ks, ts]
        self.dirty_[:] = False
        self.version_ += 1
        return True

    def add_profile(self, alpha0: np.ndarray, beta0: np.ndarray) -> None:
        """Append a profile (one row of prior pseudo-counts per task type) and draw its bank."""
        self.alpha0_ = np.vstack([self.alpha0_, alpha0])
        self.beta0_ = np.vstack([self.beta0_, beta0])
        self.alpha_ = np.vstack([self.alpha_, alpha0])
        self.beta_ = np.vstack([self.beta_, beta0])
        n_tasks = self.theta_.shape[0]
        self.theta_ = np.concatenate([self.theta_, np.empty((n_tasks, self.n_draws, 1))], axis=2)
        self.dirty_ = np.vstack([self.dirty_, np.ones((1, n_tasks), dtype=bool)])
        self.n_drawn_ = np.vstack([self.n_drawn_, alpha0 + beta0])
        self.refresh()

    # -- state as data (a snapshot; see banditroute.beliefs.state) --------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything learned, as arrays: pseudo-counts and priors, the bank with its
        bookkeeping, the counters (``n_updates_``, ``version_``, updates since the last
        refresh) and the bank generator's state, so that a restored belief continues exactly."""
        return {"alpha0": self.alpha0_.copy(), "beta0": self.beta0_.copy(), "alpha": self.alpha_.copy(),
                "beta": self.beta_.copy(), "theta": self.theta_.copy(), "dirty": self.dirty_.copy(),
                "n_drawn": self.n_drawn_.copy(),
                "counters": np.array([self.n_updates_, self.version_, self._since_refresh], dtype=np.int64),
                "rng": generator_state(self._rng)}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` of a belief of the same shape and ``n_draws`` (every
        array is checked before anything changes). ``version_`` moves past both versions, so
        that nothing cached against this belief's bank survives."""
        shape, owner = self.shape, "belief"
        got = {name: take(arrays, name, shape, np.float64, owner=owner)
               for name in ("alpha0", "beta0", "alpha", "beta", "n_drawn")}
        theta = take(arrays, "theta", self.theta_.shape, np.float64, owner=owner)
        dirty = take(arrays, "dirty", shape, np.bool_, owner=owner)
        counters = take(arrays, "counters", (3,), np.int64, owner=owner)
        words = take(arrays, "rng", (6,), np.uint64, owner=owner)
        for name in ("alpha0", "beta0", "alpha", "beta"):
            if np.any(got[name] <= 0):
                raise ConfigError(f"{owner}.{name}", "values <= 0", "must be positive pseudo-counts")
        if np.any(counters < 0):
            raise ConfigError(f"{owner}.counters", counters.tolist(), "must be non-negative")
        set_generator_state(self._rng, words, owner=owner)
        self.alpha0_, self.beta0_, self.alpha_, self.beta_ = got["alpha0"], got["beta0"], got["alpha"], got["beta"]
        self.n_drawn_, self.theta_, self.dirty_ = got["n_drawn"], theta, dirty
        self.n_updates_, version, self._since_refresh = (int(c) for c in counters)
        self.version_ = max(self.version_, version) + 1

    # -- reading ----------------------------------------------------------------------------
    def quality_draws(self, task) -> np.ndarray:
        """Reliability draws of shape (n_draws, n_profiles) for a task type index or a
        task-type posterior vector of shape (n_task_types,)."""
        if isinstance(task, (int, np.integer)):
            return self.theta_[task]
        return np.tensordot(task, self.theta_, axes=(0, 0))

    def mean(self) -> np.ndarray:
        """Posterior means, shape (n_profiles, n_task_types)."""
        return self.alpha_ / (self.alpha_ + self.beta_)

    def summary(self, profiles: list[str], task_types: list[str], *, level: float = 0.95) -> pl.DataFrame:
        """One row per (profile, task type): mean, equal-tailed credible interval, effective n."""
        lo = betaincinv(self.alpha_, self.beta_, (1 - level) / 2)
        hi = betaincinv(self.alpha_, self.beta_, (1 + level) / 2)
        n = self.alpha_ + self.beta_ - self.alpha0_ - self.beta0_
        n_profiles, n_tasks = self.alpha_.shape
        return pl.DataFrame({
            "profile": np.repeat(profiles, n_tasks),
            "task_type": np.tile(task_types, n_profiles),
            "mean": self.mean().ravel(),
            "ci_low": lo.ravel(),
            "ci_high": hi.ravel(),
            "n": n.ravel(),
            "alpha": self.alpha_.ravel().copy(),  # copies: polars would share the live arrays
            "beta": self.beta_.ravel().copy(),
        })
