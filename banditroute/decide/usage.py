"""What calling a profile costs, how long it takes and whether it answers: learned cost and
latency per (profile, task type), availability, and the cooldown of a failing profile.

Every applied outcome teaches it (:meth:`Usage.observe`; the replay: :meth:`Usage.observe_many`):

- ``cost_usd`` / ``latency_ms`` reported with it update the posterior of that profile's cost and
  latency for the decision's task types (:class:`~banditroute.beliefs.costs.CostBelief`, whose
  prior mean is the configured value). The routing utility uses scenarios drawn from it (so the
  propensity is the exact share of scenarios a profile wins) and budgets its mean.
- ``error`` (a failed call: rate limit, timeout, 5xx ...) counts against the profile's
  availability, ``Beta(1 + answered, 1 + failed)``. With a :class:`~banditroute.config.mechanisms.Cooldown`,
  ``errors`` failures in a row exclude the profile for ``seconds`` (the reason is in
  ``Decision.excluded``); an answered call resets the count. Cooldowns are live state: a restart
  starts without them (the availability counts are replayed from the log).
- With drift detection configured (``drift``), a Page-Hinkley detector per (profile, task type)
  watches each metric on a relative log scale, ``log(1 + x / configured)`` (a doubling of the
  price moves it by about 0.4, a tenfold rise by 1.7, whatever the price; a cell configured at 0
  is not watched); an alarm keeps
  ``drift.keep`` of the cell's evidence of that metric, as for reliability, and is a ``drift``
  event row.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np

from ..beliefs.costs import METRICS, CostBelief
from ..beliefs.drift import PageHinkley
from ..beliefs.state import take
from ..errors import ConfigError

__all__ = ["Usage"]


class Usage:
    """Learned cost and latency, availability and cooldowns of a router's profiles."""

    def __init__(self, config):
        self.config = config
        self.names = [p.name for p in config.profiles]
        k = len(self.names)
        cost0, latency0 = _configured(config.profiles, len(config.task_types))
        learning = config.cost_learning
        self.costs = None
        if learning.enabled:
            self.costs = CostBelief(cost0, latency0, prior_weight=learning.prior_weight, prior_cv=learning.prior_cv,
                                    n_draws=config.n_draws, refresh_every=config.refresh_every)
        self._configured = (cost0, latency0)
        self.drift = None
        if config.drift is not None and self.costs is not None:
            d = config.drift
            self.drift = [PageHinkley(cost0.shape, delta=d.delta, threshold=d.threshold, min_samples=d.min_samples)
                          for _ in METRICS]
        self.answered = np.zeros(k)
        self.failed = np.zeros(k)
        self.streak = np.zeros(k, dtype=np.int64)  # failed calls in a row
        self.until = np.zeros(k)  # epoch seconds a cooldown ends
        self.episode = np.zeros(k, dtype=np.int64)  # cooldowns so far (keys the cached reasons)
        self.last_error = [""] * k

    # -- reading --------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Changes whenever :meth:`expected` or :meth:`penalty_draws` could change."""
        return 0 if self.costs is None else self.costs.version_

    def expected(self, task) -> tuple[np.ndarray, np.ndarray]:
        """Expected cost and latency of one request on each profile, shape (n_profiles,) each."""
        if self.costs is not None:
            return self.costs.expected(task)
        cost0, latency0 = self._configured
        if type(task) is int:
            return cost0[:, task], latency0[:, task]
        return cost0 @ task, latency0 @ task

    def penalty_draws(self, task, objective) -> np.ndarray | None:
        """Scenarios of ``w_c * cost + w_l * latency``, shape (n_draws, n_profiles); None when
        nothing is learned (the penalty is then the expected one for every scenario)."""
        if self.costs is None:
            return None
        return self.costs.penalty_draws(task, objective.cost, objective.latency)

    def cooling(self, now: float) -> tuple:
        """``((profile index, episode), ...)`` of the profiles in a cooldown at ``now``."""
        if self.config.cooldown is None or not (self.until > now).any():
            return ()
        return tuple((int(k), int(self.episode[k])) for k in np.flatnonzero(self.until > now))

    def cooling_reason(self, k: int) -> str:
        cd = self.config.cooldown
        end = datetime.fromtimestamp(float(self.until[k]), tz=timezone.utc).isoformat(timespec="seconds")
        return (f"cooldown: {cd.errors} failed calls in a row (last: {self.last_error[k]}); excluded for "
                f"cooldown.seconds {cd.seconds:g}, until {end}")

    def availability(self) -> np.ndarray:
        """Posterior mean probability that a call answers, per profile: Beta(1 + answered, 1 + failed)."""
        return (1.0 + self.answered) / (2.0 + self.answered + self.failed)

    def summary_columns(self, n_tasks: int) -> dict[str, np.ndarray]:
        """Columns for ``Router.beliefs()`` (profile-major, one row per (profile, task type))."""
        if self.costs is not None:
            out = dict(self.costs.summary_columns())
        else:
            cost0, latency0 = self._configured
            zeros = np.zeros(cost0.size)
            out = {"cost_mean": cost0.ravel().copy(), "cost_sd": zeros, "cost_n": zeros,
                   "latency_mean": latency0.ravel().copy(), "latency_sd": zeros, "latency_n": zeros}
        out["availability"] = np.repeat(self.availability(), n_tasks)
        out["failed_calls"] = np.repeat(self.failed, n_tasks)
        cooling = self.until > time.time()  # epoch seconds a cooldown ends (NaN: none now)
        out["cooldown_until"] = np.repeat(np.where(cooling, self.until, np.nan), n_tasks)
        return out

    # -- learning -------------------------------------------------------------------------------
    def observe(self, k: int, w: np.ndarray, cost_usd, latency_ms, error: str | None,
                now: float | None = None, *, live: bool = True) -> list[tuple[str, str, str]]:
        """One applied outcome of profile ``k``. Returns the events it causes, ``(event, subject,
        why)``: drift of its cost or latency, the start of a cooldown (only ``live``)."""
        events = []
        if self.costs is not None and (cost_usd is not None or latency_ms is not None):
            self.costs.update(k, w, cost_usd, latency_ms)
            if self.drift is not None:
                events = self._watch(k, w, (cost_usd, latency_ms))
        if error is None:
            self.answered[k] += 1.0
            self.streak[k] = 0
            return events
        self.failed[k] += 1.0
        self.streak[k] += 1
        self.last_error[k] = error
        cd = self.config.cooldown
        if cd is None or self.streak[k] < cd.errors or not live:
            return events
        now = time.time() if now is None else now
        self.until[k] = now + cd.seconds
        self.episode[k] += 1
        self.streak[k] = 0
        return events + [("cooldown", self.names[k], self.cooling_reason(k))]

    def _watch(self, k: int, w: np.ndarray, values) -> list[tuple[str, str, str]]:
        """Feed the drift detectors; recalibrate the cells that changed."""
        events = []
        keep = self.config.drift.keep
        for metric, (name, value) in enumerate(zip(METRICS, values)):
            scale = self._configured[metric][k]
            cells = w > 0
            if value is None or not (scale[cells] > 0).all():
                continue
            relative = float(np.log1p(value / float(scale[cells][0])))  # scale-free, steady after a change
            for (kk, t), kind, stat in self.drift[metric].update(k, w, relative):
                self.costs.shrink(kk, t, name, keep)
                task = self.config.task_types[t]
                events.append(("drift", f"{self.names[kk]}/{task}",
                               f"{name} Page-Hinkley {kind} statistic {stat:.2f} > threshold "
                               f"{self.config.drift.threshold:g} (on log(1 + {name} / configured)); kept "
                               f"{keep:g} of the evidence"))
        return events

    def observe_many(self, ks: np.ndarray, w: np.ndarray, cost: np.ndarray, latency: np.ndarray,
                     failed: np.ndarray) -> None:
        """Applied outcomes in order (a replay): ``cost``/``latency`` NaN where not reported,
        ``failed`` a boolean mask of failed calls. No cooldown starts (they are live state)."""
        if self.drift is not None:  # the detectors depend on the order: one by one, as live
            for i, k in enumerate(ks.tolist()):
                c, lat = (None if not np.isfinite(v[i]) else float(v[i]) for v in (cost, latency))
                self.observe(k, w[i], c, lat, "replayed" if failed[i] else None, live=False)
            return
        if self.costs is not None:
            observed = np.isfinite(cost) | np.isfinite(latency)
            if observed.any():
                self.costs.update_many(ks[observed], w[observed], cost[observed], latency[observed])
                self.costs.refresh()
        np.add.at(self.failed, ks[failed], 1.0)
        np.add.at(self.answered, ks[~failed], 1.0)

    def refresh(self) -> None:
        if self.costs is not None:
            self.costs.refresh()

    def add_profile(self, profile, n_tasks: int, config) -> None:
        self.config = config
        self.names.append(profile.name)
        cost0 = np.full(n_tasks, profile.cost_usd)
        latency0 = np.full(n_tasks, profile.latency_ms)
        self._configured = (np.vstack([self._configured[0], cost0]), np.vstack([self._configured[1], latency0]))
        if self.costs is not None:
            self.costs.add_profile(cost0, latency0)
        for detector in self.drift or ():
            detector.add_profile()
        for name in ("answered", "failed", "until"):
            setattr(self, name, np.append(getattr(self, name), 0.0))
        self.streak = np.append(self.streak, 0)
        self.episode = np.append(self.episode, 0)
        self.last_error.append("")

    # -- state as data --------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learned state: the cost belief's arrays and the availability counts."""
        out = {"calls": np.stack([self.answered, self.failed])}
        if self.costs is not None:
            out.update({f"costs/{name}": a for name, a in self.costs.state_arrays().items()})
        for metric, detector in zip(METRICS, self.drift or ()):
            out.update({f"drift/{metric}/{name}": a for name, a in detector.state_arrays().items()})
        return out

    def load_state_arrays(self, arrays) -> None:
        calls = take(arrays, "calls", (2, len(self.names)), np.float64, owner="usage")
        if np.any(calls < 0):
            raise ConfigError("usage.calls", "values < 0", "must be non-negative counts")
        if self.costs is not None:
            sub = {name[len("costs/"):]: a for name, a in arrays.items() if name.startswith("costs/")}
            self.costs.load_state_arrays(sub)
        for metric, detector in zip(METRICS, self.drift or ()):
            prefix = f"drift/{metric}/"
            detector.load_state_arrays({n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)})
        self.answered, self.failed = calls[0].copy(), calls[1].copy()


def _configured(profiles, n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """The configured cost and latency of every (profile, task type), shape (n_profiles, n_tasks) each."""
    cost = np.array([[p.cost_usd] * n_tasks for p in profiles], dtype=np.float64)
    latency = np.array([[p.latency_ms] * n_tasks for p in profiles], dtype=np.float64)
    return cost, latency
