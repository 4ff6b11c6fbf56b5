"""Contextual Thompson sampling: a Bayesian linear model of the reward per profile (LinTS).

For a request's feature vector ``x`` (:mod:`banditroute.policies.featurize`: the task-type
posterior, the numeric features interacted with it, hashed text and categories), profile ``k``'s
reward is modelled as ``x . theta_k + noise``, noise ~ N(0, sigma_k^2), with the conjugate
Normal-Inverse-Gamma prior ``theta_k ~ N(0, sigma_k^2 I / lambda)``. The posterior of
``theta_k`` is Gaussian with covariance ``sigma_k^2 V_k``, ``V_k = (lambda I + sum x x^T)^-1``,
mean ``mu_k = V_k b_k``, ``b_k = sum x r``: sufficient statistics updated by each outcome.
The noise variance is learned (empirical Bayes): ``sigma_k^2`` is the ridge residual
``(s0 + sum r^2 - b_k . mu_k) / (1 + n_k)``, ``s0 = noise_sd^2`` the prior worth one outcome; so
the policy needs no knowledge of the reward's scale.

**Deciding.** For one request only the scores ``x . theta_k`` matter, and under the posterior
they are independent normals ``N(x . mu_k, sigma_k^2 x^T V_k x)``. The policy keeps a fixed bank
of standard normals ``z[k, m]`` (``M = n_draws`` scenarios) and scores scenario ``m`` as::

    u[k, m] = x . mu_k + c * sigma_k * sqrt(x^T V_k x) * z[k, m]

and the probability of each profile is exactly the share of scenarios it wins (its logged
propensity). ``c = posterior_scale`` (0.3) shrinks the posterior spread: Thompson sampling with
the full posterior (c = 1) explores far more than needed when the model has many coefficients
(the common practice of posterior deflation; on the bake-off data sets of
``benchmarks/bench_bakeoff.py`` c = 0.3 earned 0.87 where c = 1 earned 0.62 on scikit-learn's
digits). The work per request is ``O(K d^2)`` for the means and variances and ``O(K M)`` for the
scenarios, independent of how the model was learned; many requests are scored as matrix
products (:meth:`LinearTS.distribution_rows`, the vectorised ``decide_batch``), bit for bit
what one request at a time gives. The means and covariances are refreshed from the statistics
every ``refresh_every`` outcomes (the profiles touched). With ``discount < 1`` the statistics
forget: ``A <- lambda I + discount (A - lambda I)``, ``b, sum r^2, n <- discount (.)`` per outcome.

It plugs into :class:`~banditroute.decide.router.Router` as its learner (``policy="linear"`` with
``features={"prompt_tokens": 1000.0}``, a feature name and the scale it is divided by).

>>> lin = LinearTS(2, ["chat"], (("tokens", 1000.0),), n_draws=500, seed=0)
>>> for _ in range(200):
...     lin.learn({"tokens": 100}, 0, 1.0, 0.5)
...     lin.learn({"tokens": 100}, 1, 0.0, 0.5)
>>> pmf = lin.distribution({"tokens": 100}, np.array([1.0]), np.array([True, True]))
>>> pmf.round(2).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..beliefs.state import generator_state, set_generator_state, take
from ..config.profiles import check_number
from ..errors import ConfigError
from .base import Feedback, Policy, PolicyQuery, PolicySetup
from .featurize import Featurizer

__all__ = ["LinearTS"]

#: rows whose scenarios are scored at once (bounds the (K, rows, M) float32 block: 1 MiB for K = 8, M = 1,024)
CHUNK_ROWS = 32
#: the largest feature vector (n_task_types * (1 + numeric) + hashed buckets): 384 MiB per profile
MAX_DIM = 4096
#: up to this dimension the means and variances of many rows are computed elementwise at once
SMALL_DIM = 48


class LinearTS(Policy, name="linear"):
    """Bayesian linear regression of the reward per profile, decided by Thompson sampling.

    Parameters
    ----------
    n_profiles : int
    task_types : sequence of str
    features : sequence of (name, scale | Text | Category)
        See :mod:`banditroute.config.features` (a missing numeric field counts as 0).
    n_draws : int
        Scenarios per profile ``M``.
    prior_precision : float or None
        ``lambda``; None: half the expected squared norm of a feature vector, ``max(1, (1 + F +
        H) / 2)`` for ``F`` numeric features scaled to about unit size and ``H`` hashed fields
        (unit norm each), so that the prior variance of a request's score, ``sigma^2 |x|^2 /
        lambda``, is about ``2 sigma^2`` however many features there are. With ``lambda = 1``
        a wide context (hundreds of features, most of them noise) explored far too long: on
        digits with 200 noise features added, 0.57 against 0.81 for ``lambda = d / 2``.
    noise_sd : float
        Prior guess of the reward noise's standard deviation (worth one outcome).
    posterior_scale : float
        ``c``: the spread of the scenarios relative to the posterior's.
    discount : float in (0, 1]
    refresh_every : int
    seed : int, SeedSequence or None
    """

    version_prefix = "ts-linear"
    #: :meth:`distribution` always returns a share of scenarios over the feasible profiles
    exact = True
    supports_drift = False  # its statistics forget through ``discount`` instead
    #: decides many requests at once (:meth:`distribution_rows`), bit for bit as one at a time
    batchable = True
    #: the floor costs up to its size in reward, and the policy spreads its pmf on its own; 0.01
    #: keeps every feasible profile's propensity >= 0.01 / n for off-policy evaluation
    default_exploration = 0.01

    def __init__(self, n_profiles: int, task_types: Sequence[str], features: Sequence[tuple], *,
                 n_draws: int = 1024, prior_precision: float | None = None, noise_sd: float = 1.0,
                 posterior_scale: float = 0.3, discount: float = 1.0, refresh_every: int = 16, seed=None):
        check_number("linear.posterior_scale", posterior_scale, lo=0.0)
        check_number("linear.noise_sd", noise_sd, lo=0.0, lo_open=True)
        self.task_types = list(task_types)
        self.features = tuple(features)
        self.featurizer = Featurizer(self.task_types, self.features)
        if prior_precision is None:  # the prior's score variance, sigma^2 |x|^2 / lambda, about 2 sigma^2
            prior_precision = max(1.0, (1 + len(self.featurizer.numeric) + len(self.featurizer.hashed)) / 2)
        check_number("linear.prior_precision", prior_precision, lo=0.0, lo_open=True)
        self.n_tasks = len(self.task_types)
        self.dim = self.featurizer.dim
        if self.dim > MAX_DIM:
            raise ConfigError("features", dict(self.features), f"give a feature vector of {self.dim:,} dimensions; "
                              f"at most {MAX_DIM:,} (three {self.dim:,} x {self.dim:,} float64 matrices per profile "
                              f"would take {3 * 8 * self.dim ** 2 / 2 ** 20:,.0f} MiB): use fewer bits")
        self.n_draws = int(n_draws)
        self.prior_precision = float(prior_precision)
        self.noise_var0 = float(noise_sd) ** 2
        self.posterior_scale = float(posterior_scale)
        self.discount = float(discount)
        self.refresh_every = int(refresh_every)
        self._rng = np.random.default_rng(seed)
        d = self.dim
        self.A_ = np.repeat(np.eye(d)[None] * self.prior_precision, n_profiles, axis=0)
        self.b_ = np.zeros((n_profiles, d))
        self.rr_ = np.zeros(n_profiles)  # sum of squared rewards
        self.n_ = np.zeros(n_profiles)  # (discounted) number of outcomes
        self._z = self._rng.standard_normal((n_profiles, self.n_draws)).astype(np.float32)
        self._ones_z = None  # [1, z] per profile, (K, 2, M), and each profile's smallest and largest z
        self._triu = None  # the upper triangle's indices (and weights) of a d x d matrix
        self.mean_ = np.zeros((n_profiles, d))
        self.cov_ = np.repeat(np.eye(d)[None] / self.prior_precision, n_profiles, axis=0)
        self.spread_ = np.zeros(n_profiles)  # c * sigma_k
        # the inverse of A_ kept current by a Sherman-Morrison update per outcome (O(d^2)), exactly
        # re-inverted after max(64, d) such updates (O(d^3), amortised O(d^2)) or when stale (discount)
        self.inv_ = self.cov_.copy()
        self._updates_since_inverse = np.zeros(n_profiles, dtype=np.int64)
        self._stale = np.zeros(n_profiles, dtype=bool)
        self._dirty = np.ones(n_profiles, dtype=bool)
        self._since_refresh = 0
        self.n_updates_ = 0
        self.refresh()

    @classmethod
    def build(cls, setup: PolicySetup) -> "LinearTS":
        cfg = setup.config
        return cls(len(cfg.profiles), cfg.task_types, cfg.features, n_draws=cfg.n_draws, discount=cfg.discount,
                   refresh_every=cfg.refresh_every, seed=setup.seed)

    # -- deciding ------------------------------------------------------------------------------
    def featurize(self, context: Mapping, task_probs: np.ndarray) -> np.ndarray:
        """The request's feature vector, shape (dim,) (:class:`~banditroute.policies.featurize.Featurizer`)."""
        return self.featurizer.one(context, task_probs)

    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        return self.distribution(query.context, query.task_probs, query.feasible), np.zeros_like(query.feasible)

    def propose_frame(self, frame, task_probs: np.ndarray, feasible: np.ndarray) -> np.ndarray | None:
        X = self.featurizer.frame(frame, task_probs)
        return None if X is None else self.distribution_rows(X, feasible)

    def distribution(self, context: Mapping, task_probs: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        """Share of the scenarios each feasible profile wins for this request (ties go to the
        first profile, as ``argmax``)."""
        if self.featurizer.hashed:  # sparse: only the buckets the request has
            dense = self.featurizer.dense(context, task_probs)
            idx, val = self.featurizer.sparse(context)
            keep = np.flatnonzero(dense)
            idx = np.concatenate([keep, idx])
            val = np.concatenate([dense[keep], val])
            means = self.mean_[:, idx] @ val
            sub = self.cov_[:, idx[:, None], idx[None, :]]
            var = np.einsum("i,kij,j->k", val, sub, val)
            return self._shares(means[None], var[None], feasible[None])[0]
        means, var = self.moments(self.featurizer.dense(context, task_probs)[None])
        return self._shares(means, var, feasible[None])[0]

    def distribution_rows(self, X: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        """The pmf (before the exploration floor) of many requests' feature vectors ``X`` of
        shape (n, dim), with ``feasible`` of shape (n, n_profiles) or (n_profiles,). Row i is
        what :meth:`distribution` returns for request i, bit for bit."""
        means, var = self.moments(np.asarray(X, dtype=np.float64))
        feasible = np.asarray(feasible, dtype=bool)
        return self._shares(means, var, feasible if feasible.ndim == 2 else np.broadcast_to(feasible, means.shape))

    def moments(self, X: np.ndarray, *, variances: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The posterior mean ``x . mu_k`` and ``x^T V_k x`` of each row's score, shapes (n, K)
        (the second None without ``variances``); row i does not depend on the other rows, to the bit."""
        n, n_profiles, d = X.shape[0], self.b_.shape[0], self.dim
        means = np.empty((n, n_profiles))
        var = np.empty((n, n_profiles)) if variances else None
        if d <= SMALL_DIM or not variances:  # elementwise products summed along a contiguous axis: same bits for any n
            if self._triu is None:  # x^T C x = sum over i <= j of x_i x_j C_ij (2 C_ij off the diagonal)
                i, j = np.triu_indices(d)
                self._triu = (i, j, np.where(i == j, 1.0, 2.0))
            i, j, twice = self._triu
            upper = self.cov_[:, i, j] * twice
            step = max(1, (1 << 18) // (n_profiles * (i.size if variances else d)))
            for lo in range(0, n, step):
                rows = X[lo:lo + step]
                means[lo:lo + step] = np.einsum("nd,kd->nk", rows, self.mean_)  # einsum: never BLAS
                if variances:
                    cols = rows.T
                    var[lo:lo + step] = np.einsum("pn,kp->nk", cols[i] * cols[j], upper)
        else:  # one matrix-vector product per row (BLAS rounds one row and many rows differently)
            for i, x in enumerate(X):
                means[i] = (self.mean_ * x).sum(axis=1)
                var[i] = (np.matmul(self.cov_, x) * x).sum(axis=1)
        return means, var

    def _shares(self, means: np.ndarray, var: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        """Share of the scenarios won per profile, for rows of means and variances (n, K).

        The scenarios ``u[k, i, m] = mean[i, k] + sd[i, k] * z[k, m]`` are a batched matrix
        product ``[mean, sd] @ [1, z]`` per profile (float32); a scenario's winner is the profile
        equal to the scenario's maximum. Only *contenders* are scored: a profile whose best
        scenario is below another's worst (with a margin far above float32 rounding) wins no
        scenario, so a row with one contender gets it whole, and rows are grouped by their set
        of contenders (the same counts as scoring every profile, with less work)."""
        n, n_profiles = means.shape
        counts = np.zeros((n, n_profiles))
        if n == 0:
            return counts
        sd = self.spread_ * np.sqrt(np.maximum(var, 0.0))
        if self._ones_z is None or self._ones_z.shape[0] != n_profiles:
            self._ones_z = np.stack([np.ones_like(self._z), self._z], axis=1)  # (K, 2, M)
            self._z_range = (self._z.min(axis=1).astype(np.float64), self._z.max(axis=1).astype(np.float64))
        if n == 1:  # one request (a decide): every feasible profile is scored, no grouping (the same counts)
            who = np.flatnonzero(feasible[0])
            counts[0, who] = self._scenario_counts(means[:, who], sd[:, who], who)[0] if who.size > 1 else self.n_draws
            return counts / self.n_draws
        low, high = means + sd * self._z_range[0], means + sd * self._z_range[1]
        margin = 1e-5 * (np.abs(means) + sd * np.maximum(-self._z_range[0], self._z_range[1])).max(axis=1)
        low = np.where(feasible, low, -np.inf)
        contender = feasible & (high >= (low.max(axis=1) - margin)[:, None])
        single = contender.sum(axis=1) == 1
        counts[single] = contender[single] * float(self.n_draws)
        if single.all():
            return counts / self.n_draws
        if n_profiles < 63:  # one int64 key per row: a 1-d unique is much cheaper
            _, inverse = np.unique(contender @ (1 << np.arange(n_profiles, dtype=np.int64)), return_inverse=True)
        else:
            _, inverse = np.unique(contender, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        for rows in np.split(order, np.cumsum(np.bincount(inverse))[:-1]):
            who = np.flatnonzero(contender[rows[0]])
            if who.size < 2:  # one contender: counted above
                continue
            counts[np.ix_(rows, who)] = self._scenario_counts(means[np.ix_(rows, who)], sd[np.ix_(rows, who)], who)
        return counts / self.n_draws

    def _scenario_counts(self, means: np.ndarray, sd: np.ndarray, who: np.ndarray) -> np.ndarray:
        """Scenarios won by each of the profiles ``who`` (every one feasible), rows (n, len(who))."""
        n, k = means.shape
        n_draws = self.n_draws
        coef = np.empty((k, n, 2), dtype=np.float32)  # (k, n, [mean, sd])
        coef[:, :, 0] = means.T
        coef[:, :, 1] = sd.T
        ones_z = self._ones_z if who.size == self._ones_z.shape[0] else self._ones_z[who]
        packed = n_draws % 8 == 0 and n_draws < 2040  # sum 8 booleans per uint64 word: no byte overflows
        counts = np.empty((n, k))
        rows = min(n, CHUNK_ROWS)
        u = np.empty((k, rows, n_draws), dtype=np.float32)
        top = np.empty((rows, n_draws), dtype=np.float32)
        wins = np.empty(u.shape, dtype=bool)
        for lo in range(0, n, rows):
            c = min(rows, n - lo)
            uc, tc, wc = (u, top, wins) if c == rows else (u[:, :c], top[:c], wins[:, :c])
            np.matmul(coef[:, lo:lo + c], ones_z, out=uc)  # (k, c, M)
            np.maximum.reduce(uc, axis=0, out=tc)
            np.equal(uc, tc, out=wc)
            if packed:
                words = wc.view(np.uint64).sum(axis=2, dtype=np.uint64)  # (k, c)
                got = words[..., None].view(np.uint8).sum(axis=2).T
            else:
                got = wc.sum(axis=2).T
            for i in np.flatnonzero(got.sum(axis=1) != n_draws):  # tied maxima (rare in float32): first wins
                got[i] = np.bincount(uc[:, i].argmax(axis=0), minlength=k)
            counts[lo:lo + c] = got
        return counts

    # -- learning ------------------------------------------------------------------------------
    def update(self, feedback: Feedback) -> None:
        self.learn_task(feedback.context, feedback.task_probs, feedback.k, feedback.reward, feedback.propensity)

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
            self.rr_ *= self.discount
            self.n_ *= self.discount
            self._dirty[:] = True
            self._stale[:] = True
        nz = np.flatnonzero(x)
        xz = x[nz]
        self.A_[k][np.ix_(nz, nz)] += np.outer(xz, xz)
        if not self._stale[k]:
            inv = self.inv_[k]
            vx = inv[:, nz] @ xz
            inv -= np.outer(vx, vx / (1.0 + xz @ vx[nz]))
            self._updates_since_inverse[k] += 1
        self.b_[k, nz] += xz * reward
        self.rr_[k] += reward * reward
        self.n_[k] += 1.0
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
        """Recompute the posterior means, covariances and spreads of the profiles touched
        since the last refresh."""
        self._since_refresh = 0
        dirty = np.flatnonzero(self._dirty)
        if dirty.size:
            exact = dirty[self._stale[dirty] | (self._updates_since_inverse[dirty] >= max(64, self.dim))]
            if exact.size:
                inv = np.linalg.inv(self.A_[exact])
                self.inv_[exact] = (inv + inv.transpose(0, 2, 1)) / 2
                self._updates_since_inverse[exact] = 0
                self._stale[exact] = False
            cov = self.inv_[dirty]
            mean = np.matmul(cov, self.b_[dirty][:, :, None])[:, :, 0]
            residual = np.maximum(self.noise_var0 + self.rr_[dirty] - np.einsum("kd,kd->k", self.b_[dirty], mean),
                                  0.0)
            self.cov_[dirty], self.mean_[dirty] = cov, mean
            self.spread_[dirty] = self.posterior_scale * np.sqrt(residual / (1.0 + self.n_[dirty]))
        self._dirty[:] = False

    def mean(self) -> np.ndarray:
        """Posterior mean coefficients, shape (n_profiles, dim)."""
        return np.linalg.solve(self.A_, self.b_[..., None])[..., 0]

    def noise_sd(self) -> np.ndarray:
        """The learned reward noise standard deviation of each profile, shape (n_profiles,)."""
        return self.spread_ / self.posterior_scale if self.posterior_scale > 0 else np.full(self.b_.shape[0], np.nan)

    def add_profile(self, profile=None) -> None:
        d = self.dim
        self.A_ = np.concatenate([self.A_, np.eye(d)[None] * self.prior_precision])
        self.b_ = np.vstack([self.b_, np.zeros((1, d))])
        self.rr_, self.n_ = np.append(self.rr_, 0.0), np.append(self.n_, 0.0)
        self._z = np.concatenate([self._z, self._rng.standard_normal((1, self.n_draws)).astype(np.float32)])
        self._ones_z = None
        self.mean_ = np.vstack([self.mean_, np.zeros((1, d))])
        self.cov_ = np.concatenate([self.cov_, np.eye(d)[None] / self.prior_precision])
        self.inv_ = np.concatenate([self.inv_, np.eye(d)[None] / self.prior_precision])
        self._updates_since_inverse = np.append(self._updates_since_inverse, 0)
        self._stale = np.append(self._stale, False)
        self.spread_ = np.append(self.spread_, 0.0)
        self._dirty = np.append(self._dirty, True)
        self.refresh()

    # -- state as data -------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The sufficient statistics, the fixed scenario normals, the refreshed posterior, the
        counters and the generator's state: a restored policy continues exactly."""
        return {"A": self.A_.copy(), "b": self.b_.copy(), "rr": self.rr_.copy(), "n": self.n_.copy(),
                "z": self._z.copy(), "mean": self.mean_.copy(), "cov": self.cov_.copy(),
                "spread": self.spread_.copy(), "dirty": self._dirty.copy(), "inv": self.inv_.copy(),
                "since_inverse": self._updates_since_inverse.copy(), "stale": self._stale.copy(),
                "counters": np.array([self.n_updates_, self._since_refresh], dtype=np.int64),
                "rng": generator_state(self._rng)}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` of a policy with the same profiles, features and ``n_draws``."""
        n_profiles, owner = self.b_.shape[0], "policy"
        shapes = {"A": (self.A_.shape, np.float64), "b": (self.b_.shape, np.float64),
                  "rr": ((n_profiles,), np.float64), "n": ((n_profiles,), np.float64),
                  "z": (self._z.shape, np.float32), "mean": (self.mean_.shape, np.float64),
                  "cov": (self.cov_.shape, np.float64), "spread": ((n_profiles,), np.float64),
                  "dirty": ((n_profiles,), np.bool_), "inv": (self.inv_.shape, np.float64),
                  "since_inverse": ((n_profiles,), np.int64), "stale": ((n_profiles,), np.bool_)}
        got = {name: take(arrays, name, shape, dtype, owner=owner) for name, (shape, dtype) in shapes.items()}
        counters = take(arrays, "counters", (2,), np.int64, owner=owner)
        words = take(arrays, "rng", (6,), np.uint64, owner=owner)
        if np.any(counters < 0):
            raise ConfigError(f"{owner}.counters", counters.tolist(), "must be non-negative")
        set_generator_state(self._rng, words, owner=owner)
        self.A_, self.b_, self.rr_, self.n_, self._z = got["A"], got["b"], got["rr"], got["n"], got["z"]
        self._ones_z = None
        self.mean_, self.cov_, self.spread_, self._dirty = got["mean"], got["cov"], got["spread"], got["dirty"]
        self.inv_, self._updates_since_inverse, self._stale = got["inv"], got["since_inverse"], got["stale"]
        self.n_updates_, self._since_refresh = (int(c) for c in counters)

    def __setstate__(self, state: dict) -> None:
        if "bank_" in state or "theta_" in state:
            raise ConfigError("policy", "LinearTS", "was saved by an older banditroute (a bank of coefficient "
                              "draws): rebuild it by replaying the log (banditroute replay)")
        self.__dict__.update(state)
        self._ones_z, self._triu = None, None  # derived caches: rebuilt on demand
