"""Learned cost (USD) and latency (ms) per request, per (profile, task type), with a fixed bank
of posterior scenarios.

Each (profile, task type) cell and each metric (cost, latency) has a Normal model of one
request's value ``x`` with unknown mean and variance, under the conjugate Normal-Inverse-Gamma
prior that is worth ``n0`` (``prior_weight``) pseudo-observations of mean ``m0`` (the configured
``cost_usd`` / ``latency_ms``) and variance ``v0 = (cv * m0)**2`` (``cv`` = ``prior_cv``). An
outcome counts with the weight ``w_t`` of the task-type posterior logged with the decision;
the sufficient statistics are ``n = sum w``, ``s1 = sum w x``, ``s2 = sum w x**2``, and::

    m       = (n0 * m0 + s1) / (n0 + n)                                     (posterior mean)
    sigma^2 = (n0 * v0 + (s2 - 2 m s1 + m^2 n) + n0 * (m0 - m)^2) / (n0 + n)
    sd      = sqrt(sigma^2 / (n0 + n))                                (posterior sd of the mean)

This is the Normal-Inverse-Gamma posterior (Murphy, 2007, "Conjugate Bayesian analysis of the
Gaussian distribution", sec. 6) with ``kappa0 = n0``, ``alpha0 = n0 / 2``, ``beta0 = n0 v0 / 2``:
since ``n (xbar - m)^2 + n0 (m0 - m)^2 = n0 n (xbar - m0)^2 / (n0 + n)``, ``sigma^2`` above is
``beta_n / alpha_n`` and ``sd`` the scale of the mean's marginal posterior, a Student t with
``n0 + n`` degrees of freedom. The scenarios use a Normal of that scale instead (the t's limit):
a t with few degrees of freedom (``prior_weight`` of 1 or 2) has no variance, and its extreme
quantiles would swamp the routing utility. Scenarios are truncated at 0 (costs and latencies
are not negative)::

    scenarios[metric][t, j, k] = max(0, m[k, t] + sd[k, t] * Z[metric][t, j, k])

``Z`` is fixed: for each cell, the stratified Normal quantiles ``Phi^-1((j + 0.5) / M)``,
``j = 0..M-1``, in an order drawn from ``default_rng([BANK_SEED, metric, k, t])`` (independent
across metrics and cells; a profile added later gets an order of its own). The bank is thus a
pure function of the statistics (no generator state to save, the same statistics give the same
bank whatever the order of refreshes), and before truncation its moments match ``m`` and ``sd``
up to the stratification error. Draw ``j`` joins quality draw ``j`` of the reliability bank in the
routing utility ``w_q * quality - w_c * cost - w_l * latency``, so the propensity stays exact.

``m``, ``sd`` and the bank are computed together at :meth:`CostBelief.refresh` (every
``refresh_every`` updates): :meth:`~CostBelief.means` and :meth:`~CostBelief.expected` (budget
feasibility) and :meth:`~CostBelief.penalty_draws` (Thompson sampling) always agree.

>>> import numpy as np
>>> b = CostBelief(np.array([[0.01], [0.002]]), np.array([[900.0], [400.0]]), n_draws=256,
...                refresh_every=1)
>>> b.update(0, np.array([1.0]), 0.04, None)
>>> cost, latency = b.means()
>>> round(float(cost[0, 0]), 4), float(latency[0, 0])   # (5 * 0.01 + 0.04) / 6
(0.015, 900.0)
>>> b.penalty_draws(0, 1.0, 0.001).shape
(256, 2)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from ..errors import ConfigError, InvalidOutcomeError
from .state import take

__all__ = ["BANK_SEED", "CostBelief", "METRICS"]

BANK_SEED = 0x0C057BA4  # fixes the order of the stratified quantiles of each cell (not a router seed)
METRICS = ("cost", "latency")  # axis 0 of every (2, ...) array
_FIELDS = ("cost_usd", "latency_ms")
_NAN = float("nan")
_OWNER = "costs"


class CostBelief:
    """Posterior cost and latency per (profile, task type), with a fixed-quadrature scenario bank.

    Parameters
    ----------
    cost0, latency0 : np.ndarray of shape (n_profiles, n_task_types)
        Configured cost (USD) and latency (ms) per request: the prior means, finite and >= 0.
    prior_weight : float > 0
        ``n0``, the prior's worth in (task-weighted) observations.
    prior_cv : float >= 0
        The prior's coefficient of variation of one request, ``sqrt(v0) / m0``.
    n_draws : int
        Scenarios per cell ``M`` (the router pairs them with the reliability bank's draws).
    refresh_every : int
        Recompute means and scenarios after this many :meth:`update` calls.

    Attributes
    ----------
    stats_ : np.ndarray (2, 3, n_profiles, n_task_types)
        Metric (cost, latency) x (n, s1, s2): the current sufficient statistics.
    mean_, sd_ : np.ndarray (2, n_profiles, n_task_types)
        Posterior mean and sd of the mean, as of the last refresh.
    scenarios_ : np.ndarray (2, n_task_types, n_draws, n_profiles)
        The scenario bank of each metric, as of the last refresh.
    version_ : int
        Incremented whenever a refresh changes the means and the bank.
    n_updates_ : int
        Outcomes applied.
    """

    def __init__(self, cost0: np.ndarray, latency0: np.ndarray, *, prior_weight: float = 5.0,
                 prior_cv: float = 1.0, n_draws: int = 1024, refresh_every: int = 16):
        cost0 = _prior_array("cost0", cost0)
        latency0 = _prior_array("latency0", latency0)
        if cost0.ndim != 2:
            raise ConfigError("cost0", cost0.shape, "must be an array of shape (n_profiles, n_task_types)")
        if latency0.shape != cost0.shape:
            raise ConfigError("latency0", latency0.shape, f"must have the shape of cost0, {cost0.shape}")
        if not (np.isfinite(prior_weight) and prior_weight > 0):
            raise ConfigError("prior_weight", prior_weight, "must be > 0")
        if not (np.isfinite(prior_cv) and prior_cv >= 0):
            raise ConfigError("prior_cv", prior_cv, "must be >= 0")
        for name, value in (("n_draws", n_draws), ("refresh_every", refresh_every)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")
        self.prior_weight, self.prior_cv = float(prior_weight), float(prior_cv)
        self.n_draws, self.refresh_every = int(n_draws), int(refresh_every)
        self._quantiles = ndtri((np.arange(self.n_draws) + 0.5) / self.n_draws)
        n_profiles, n_tasks = cost0.shape
        self.prior_ = np.stack([cost0, latency0])
        self._buffer: list = []  # (k, w, cost or NaN, latency or NaN) not yet in the statistics
        self.stats_ = np.zeros((2, 3, n_profiles, n_tasks))
        self.mean_ = np.full((2, n_profiles, n_tasks), np.nan)  # NaN: no scenario drawn yet
        self.sd_ = np.full((2, n_profiles, n_tasks), np.nan)
        # stored (2, T, K, M): a cell's M scenarios are contiguous, so a refresh writes rows
        self._bank = np.empty((2, n_tasks, n_profiles, self.n_draws))
        self._z = np.empty_like(self._bank)
        self._fill_z(range(n_profiles))
        self.n_updates_ = 0
        self.version_ = 0
        self._since_refresh = 0
        self.refresh()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_profiles, n_task_types)``."""
        return self.prior_.shape[1:]

    # -- learning ---------------------------------------------------------------------------
    def update(self, k: int, w: np.ndarray, cost_usd: float | None, latency_ms: float | None) -> None:
        """Apply one outcome on profile ``k`` with task-type weights ``w`` (n_task_types,);
        ``None`` for a metric that was not observed. Raises :class:`InvalidOutcomeError` (a
        ValueError) for a value that is not finite and >= 0, before anything changes."""
        values = (cost_usd, latency_ms)
        for field, x in zip(_FIELDS, values):
            if x is not None and not (isinstance(x, (int, float, np.number)) and math.isfinite(x) and x >= 0):
                raise InvalidOutcomeError(field, x, "must be a finite number >= 0")
        # buffered: the statistics are read only at a refresh (or by the readers below), where
        # the buffer is added in order (_flush): the same sums as adding each at once, ~10x cheaper
        self._buffer.append((k, w, _NAN if cost_usd is None else float(cost_usd),
                             _NAN if latency_ms is None else float(latency_ms)))
        self.n_updates_ += 1
        self._since_refresh += 1
        if self._since_refresh >= self.refresh_every:
            self.refresh()

    def update_many(self, ks: np.ndarray, w: np.ndarray, cost: np.ndarray, latency: np.ndarray) -> None:
        """Apply outcomes in order: ``ks`` (n,), ``w`` (n, n_task_types), ``cost`` and
        ``latency`` (n,) with NaN where not observed. The same sums, added in the same order,
        as :meth:`update` one by one; the bank changes at the next :meth:`refresh`."""
        ks = np.asarray(ks, dtype=np.intp)
        w = np.asarray(w, dtype=np.float64)
        values = (np.asarray(cost, dtype=np.float64), np.asarray(latency, dtype=np.float64))
        if w.shape != (ks.size, self.shape[1]) or any(x.shape != ks.shape for x in values):
            raise ValueError(f"update_many needs ks (n,), w (n, {self.shape[1]}), cost and latency (n,); got "
                             f"{ks.shape}, {w.shape}, {values[0].shape}, {values[1].shape}")
        for field, x in zip(_FIELDS, values):
            bad = ~np.isnan(x) & ~(np.isfinite(x) & (x >= 0))
            if bad.any():
                raise InvalidOutcomeError(field, float(x[bad][0]),
                                          "must be a finite number >= 0 (or NaN: not observed)")
        self._add(ks, w, values)
        self.n_updates_ += ks.size
        self._since_refresh += ks.size

    @property
    def stats_(self) -> np.ndarray:
        """The sufficient statistics, (2, 3, n_profiles, n_task_types): metric x (n, s1, s2)."""
        if self._buffer:
            self._flush()
        return self._stats

    @stats_.setter
    def stats_(self, stats: np.ndarray) -> None:
        self._buffer = []  # replaced whole: updates not yet added are part of what replaces them
        self._stats = stats

    def _flush(self) -> None:
        rows, self._buffer = self._buffer, []
        ks = np.fromiter((r[0] for r in rows), dtype=np.intp, count=len(rows))
        w = np.stack([r[1] for r in rows]).astype(np.float64, copy=False)
        values = (np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)),
                  np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows)))
        self._add(ks, w, values)

    def _add(self, ks: np.ndarray, w: np.ndarray, values) -> None:
        """Add observations (NaN: not observed) to the statistics, in order."""
        for i, x in enumerate(values):
            seen = ~np.isnan(x)
            kk, ww, xx = ks[seen], w[seen], x[seen][:, None]
            wx = ww * xx
            np.add.at(self.stats_[i, 0], kk, ww)
            np.add.at(self.stats_[i, 1], kk, wx)
            np.add.at(self.stats_[i, 2], kk, wx * xx)

    @property
    def refresh_due(self) -> bool:
        """Whether ``refresh_every`` outcomes were applied since the last refresh."""
        return self._since_refresh >= self.refresh_every

    def refresh(self) -> bool:
        """Recompute means, sds and the scenarios of the cells whose posterior changed; bump
        ``version_`` and return True if any did."""
        self._since_refresh = 0
        mean, sd = self._posterior()
        changed = (mean != self.mean_) | (sd != self.sd_)  # NaN (never drawn) counts as changed
        if not changed.any():
            return False
        self.mean_[changed], self.sd_[changed] = mean[changed], sd[changed]
        self._redraw(changed)
        self.version_ += 1
        return True

    def shrink(self, k: int, t: int, metric: str, keep: float) -> None:
        """Recalibrate one cell of ``metric`` ("cost" or "latency"): keep a fraction ``keep``
        of its evidence (n, s1 and s2 scaled alike: the mean of the data and their spread
        stay, their weight shrinks), then refresh."""
        if metric not in METRICS:
            raise ConfigError("metric", metric, f"must be one of {METRICS}")
        if not 0.0 <= keep <= 1.0:
            raise ConfigError("keep", keep, "must be in [0, 1]")
        self.stats_[METRICS.index(metric), :, k, t] *= keep
        self.refresh()

    def add_profile(self, cost0: np.ndarray, latency0: np.ndarray) -> None:
        """Append a profile (prior cost and latency per task type, each (n_task_types,)) with
        no evidence, and refresh (existing cells keep their scenarios)."""
        row = [_prior_array(name, a) for name, a in (("cost0", cost0), ("latency0", latency0))]
        for name, a in zip(("cost0", "latency0"), row):
            if a.shape != (self.shape[1],):
                raise ConfigError(name, a.shape, f"must be an array of shape ({self.shape[1]},)")
        k = self.shape[0]
        self.prior_ = np.concatenate([self.prior_, np.stack(row)[:, None, :]], axis=1)
        self.stats_ = np.concatenate([self.stats_, np.zeros((2, 3, 1, self.shape[1]))], axis=2)
        nan = np.full((2, 1, self.shape[1]), np.nan)
        self.mean_ = np.concatenate([self.mean_, nan], axis=1)
        self.sd_ = np.concatenate([self.sd_, nan], axis=1)
        more = np.empty((2, self.shape[1], 1, self.n_draws))
        self._bank = np.concatenate([self._bank, more], axis=2)
        self._z = np.concatenate([self._z, more], axis=2)
        self._fill_z([k])
        self.refresh()

    @property
    def scenarios_(self) -> np.ndarray:
        """The scenario bank, (2, n_task_types, n_draws, n_profiles) (a view)."""
        return self._bank.transpose(0, 1, 3, 2)

    def evidence(self) -> np.ndarray:
        """A copy of the statistics, shape (2, 3, n_profiles, n_task_types): metric (cost,
        latency) x (n, s1, s2). They are sums over outcomes: replicas can add theirs up."""
        return self.stats_.copy()

    def set_evidence(self, stats: np.ndarray) -> None:
        """Replace the statistics (e.g. with state merged across replicas) and refresh:
        finite, non-negative, of the shape :meth:`evidence` returns."""
        stats = np.array(stats, dtype=np.float64)
        if stats.shape != self.stats_.shape or not np.all(np.isfinite(stats)) or np.any(stats < 0):
            raise ConfigError("stats", stats.shape,
                              f"must be a finite, non-negative array of shape {self.stats_.shape}")
        self.stats_ = stats
        self.refresh()

    # -- reading ----------------------------------------------------------------------------
    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean cost (USD) and latency (ms), each (n_profiles, n_task_types), as of
        the last refresh (so they agree with the scenario bank; cache them by ``version_``)."""
        return self.mean_[0].copy(), self.mean_[1].copy()

    def expected(self, task) -> tuple[np.ndarray, np.ndarray]:
        """Mean cost and latency per profile, each (n_profiles,), for a task-type index or a
        task-type posterior vector (n_task_types,) (the weighted average over task types)."""
        if isinstance(task, (int, np.integer)):
            return self.mean_[0][:, task].copy(), self.mean_[1][:, task].copy()
        task = np.asarray(task, dtype=np.float64)
        return self.mean_[0] @ task, self.mean_[1] @ task

    def penalty_draws(self, task, w_cost: float, w_latency: float) -> np.ndarray | None:
        """``w_cost * cost + w_latency * latency`` scenarios, shape (n_draws, n_profiles), for a
        task-type index or posterior vector (n_task_types,) (combined like the reliability
        bank's ``quality_draws``); None when both weights are 0. A new array on every call."""
        terms = [(bank, float(wt)) for bank, wt in zip(self.scenarios_, (w_cost, w_latency)) if wt != 0]
        if not terms:
            return None
        if isinstance(task, (int, np.integer)):
            parts = [bank[task] * wt for bank, wt in terms]  # (M, K) each: no (T, M, K) temporary
        else:
            task = np.asarray(task, dtype=np.float64)
            parts = [np.tensordot(task * wt, bank, axes=(0, 0)) for bank, wt in terms]
        out = parts[0]
        for part in parts[1:]:
            out += part
        return out

    def summary_columns(self) -> dict[str, np.ndarray]:
        """Per cell, flattened profile-major (n_profiles * n_task_types,): ``{metric}_mean``,
        ``{metric}_sd`` (posterior sd of the mean) and ``{metric}_n`` (task-weighted number of
        observations), from the current statistics (like the reliability summary, they may be
        ahead of the bank by up to ``refresh_every`` outcomes)."""
        mean, sd = self._posterior()
        columns = {}
        for i, metric in enumerate(METRICS):
            columns[f"{metric}_mean"] = mean[i].ravel()
            columns[f"{metric}_sd"] = sd[i].ravel()
            columns[f"{metric}_n"] = self.stats_[i, 0].ravel().copy()
        return columns

    # -- state as data (a snapshot; see banditroute.beliefs.state) --------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything to continue exactly: the priors ``prior`` (2, K, T), the statistics
        ``stats`` (2, 3, K, T), the means and sds of the last refresh ``mean``, ``sd`` (2, K, T)
        (the bank is a function of them) and ``counters`` (n_updates_, version_, updates since
        the last refresh)."""
        return {"prior": self.prior_.copy(), "stats": self.stats_.copy(), "mean": self.mean_.copy(),
                "sd": self.sd_.copy(),
                "counters": np.array([self.n_updates_, self.version_, self._since_refresh], dtype=np.int64)}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` of a belief of the same shape (every array is checked
        before anything changes) and rebuild the bank. ``version_`` moves past both versions,
        so that nothing cached against this belief survives."""
        cells = (2,) + self.shape
        got = {"prior": take(arrays, "prior", cells, np.float64, owner=_OWNER),
               "stats": take(arrays, "stats", self.stats_.shape, np.float64, owner=_OWNER),
               "mean": take(arrays, "mean", cells, np.float64, owner=_OWNER),
               "sd": take(arrays, "sd", cells, np.float64, owner=_OWNER)}
        counters = take(arrays, "counters", (3,), np.int64, owner=_OWNER)
        for name, array in got.items():
            if np.any(array < 0):
                raise ConfigError(f"{_OWNER}.{name}", "negative values", "must be >= 0")
        if np.any(counters < 0):
            raise ConfigError(f"{_OWNER}.counters", counters.tolist(), "must be non-negative")
        self.prior_, self.stats_, self.mean_, self.sd_ = got["prior"], got["stats"], got["mean"], got["sd"]
        self._redraw(np.ones(cells, dtype=bool))
        self.n_updates_, version, self._since_refresh = (int(c) for c in counters)
        self.version_ = max(self.version_, version) + 1

    # -- internals --------------------------------------------------------------------------
    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of the mean from the current statistics, each (2, K, T) (module docstring)."""
        n0, m0 = self.prior_weight, self.prior_
        n, s1, s2 = self.stats_[:, 0], self.stats_[:, 1], self.stats_[:, 2]
        total = n0 + n
        mean = (n0 * m0 + s1) / total
        scatter = np.maximum(s2 - 2.0 * mean * s1 + mean * mean * n, 0.0)  # sum w (x - m)^2, >= 0 despite rounding
        var = (n0 * (self.prior_cv * m0) ** 2 + scatter + n0 * (m0 - mean) ** 2) / total
        return mean, np.sqrt(var / total)

    def _redraw(self, cells: np.ndarray) -> None:
        """Scenarios of the (metric, k, t) ``cells`` from ``mean_``, ``sd_`` and the fixed Z."""
        i, k, t = np.nonzero(cells)
        m, sd = self.mean_[i, k, t][:, None], self.sd_[i, k, t][:, None]
        self._bank[i, t, k] = np.maximum(m + sd * self._z[i, t, k], 0.0)

    def _fill_z(self, profiles) -> None:
        """The fixed standard-normal bank of the given profiles' cells (module docstring)."""
        for i in range(len(METRICS)):
            for k in profiles:
                for t in range(self.shape[1]):
                    order = np.random.default_rng([BANK_SEED, i, k, t]).permutation(self.n_draws)
                    self._z[i, t, k] = self._quantiles[order]


def _prior_array(name: str, values) -> np.ndarray:
    a = np.array(values, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ConfigError(name, a.tolist() if a.size <= 8 else f"array {a.shape}", "must be finite and >= 0")
    return a
