"""Drift detection per (profile, task type) on the outcome stream: Page-Hinkley, two-sided.

Each (profile, task type) cell watches the qualities of the outcomes it learns from (weighted
by the task-type posterior of the decision). For a change in the mean quality, the two
Page-Hinkley statistics (Page, 1954; Hinkley, 1971)::

    m_up[n]   = sum_{i<=n} w_i (x_i - mean_i - delta)        alarm: m_up - min(m_up) > threshold
    m_down[n] = sum_{i<=n} w_i (mean_i - x_i - delta)        alarm: m_down - min(m_down) > threshold

(``mean_i`` the running mean before outcome ``i``) detect an increase or a decrease. On an
alarm the router *recalibrates* that cell: it keeps only a fraction of its evidence beyond
the prior, so exploration of that profile for that task type resumes, and the detector of the
cell restarts. This replaces a fixed forgetting schedule: stationary cells keep all their
evidence, a changed one forgets at once.

>>> import numpy as np
>>> d = PageHinkley((1, 1), delta=0.05, threshold=5.0, min_samples=20)
>>> alarms = [d.update(0, np.array([1.0]), 1.0) for _ in range(100)]
>>> any(len(a) for a in alarms)
False
>>> later = [d.update(0, np.array([1.0]), 0.0) for _ in range(40)]
>>> first = next(i for i, a in enumerate(later) if len(a))
>>> 0 < first < 20, later[first][0][:2]   # (cell, direction) of the alarm
(True, ((0, 0), 'decrease'))
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .state import take

__all__ = ["PageHinkley"]


class PageHinkley:
    """Two-sided Page-Hinkley detectors for every (profile, task type) cell, vectorised.

    Parameters
    ----------
    shape : (n_profiles, n_task_types)
    delta, threshold, min_samples
        See :class:`~banditroute.config.profiles.DriftConfig`.
    """

    def __init__(self, shape: tuple[int, int], *, delta: float = 0.05, threshold: float = 15.0,
                 min_samples: float = 30.0):
        if len(shape) != 2:
            raise ConfigError("shape", shape, "must be (n_profiles, n_task_types)")
        self.delta, self.threshold, self.min_samples = float(delta), float(threshold), float(min_samples)
        self.n_ = np.zeros(shape)
        self.mean_ = np.zeros(shape)
        self.up_ = np.zeros(shape)
        self.up_min_ = np.zeros(shape)
        self.down_ = np.zeros(shape)
        self.down_min_ = np.zeros(shape)

    def update(self, k: int, w: np.ndarray, quality: float) -> list[tuple[tuple[int, int], str, float]]:
        """Feed one outcome of profile ``k`` with task weights ``w``; return the alarms as
        ``((k, t), "decrease" | "increase", statistic)`` (their cells are reset)."""
        ts = np.flatnonzero(w > 0)
        if ts.size == 1:  # one task type (the usual case): the same arithmetic on scalars, ~5x cheaper
            return self._update_cell(k, int(ts[0]), float(w[ts[0]]), float(quality))
        wt = w[ts]
        mean = self.mean_[k, ts]
        self.up_[k, ts] += wt * (quality - mean - self.delta)
        self.down_[k, ts] += wt * (mean - quality - self.delta)
        self.up_min_[k, ts] = np.minimum(self.up_min_[k, ts], self.up_[k, ts])
        self.down_min_[k, ts] = np.minimum(self.down_min_[k, ts], self.down_[k, ts])
        self.n_[k, ts] += wt
        self.mean_[k, ts] = mean + wt * (quality - mean) / self.n_[k, ts]
        ready = self.n_[k, ts] >= self.min_samples
        up = self.up_[k, ts] - self.up_min_[k, ts]
        down = self.down_[k, ts] - self.down_min_[k, ts]
        alarms = []
        for j in np.flatnonzero(ready & ((up > self.threshold) | (down > self.threshold))):
            t = int(ts[j])
            kind, stat = ("decrease", float(down[j])) if down[j] >= up[j] else ("increase", float(up[j]))
            alarms.append(((k, t), kind, stat))
            self.reset(k, t)
        return alarms

    def _update_cell(self, k: int, t: int, wt: float, quality: float) -> list:
        mean = float(self.mean_[k, t])
        up = float(self.up_[k, t]) + wt * (quality - mean - self.delta)
        down = float(self.down_[k, t]) + wt * (mean - quality - self.delta)
        up_min, down_min = min(float(self.up_min_[k, t]), up), min(float(self.down_min_[k, t]), down)
        n = float(self.n_[k, t]) + wt
        self.up_[k, t], self.down_[k, t], self.up_min_[k, t], self.down_min_[k, t] = up, down, up_min, down_min
        self.n_[k, t], self.mean_[k, t] = n, mean + wt * (quality - mean) / n
        if n < self.min_samples or (up - up_min <= self.threshold and down - down_min <= self.threshold):
            return []
        kind, stat = ("decrease", down - down_min) if down - down_min >= up - up_min else ("increase", up - up_min)
        self.reset(k, t)
        return [((k, t), kind, stat)]

    def reset(self, k: int, t: int) -> None:
        for array in (self.n_, self.mean_, self.up_, self.up_min_, self.down_, self.down_min_):
            array[k, t] = 0.0

    _STATE = ("n_", "mean_", "up_", "up_min_", "down_", "down_min_")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The detectors' statistics, one array of shape (n_profiles, n_task_types) each."""
        return {name.rstrip("_"): getattr(self, name).copy() for name in self._STATE}

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` of detectors of the same shape (checked before anything changes)."""
        got = {name: take(arrays, name.rstrip("_"), self.n_.shape, np.float64, owner="drift") for name in self._STATE}
        for name, array in got.items():
            setattr(self, name, array)

    def add_profile(self) -> None:
        for name in ("n_", "mean_", "up_", "up_min_", "down_", "down_min_"):
            array = getattr(self, name)
            setattr(self, name, np.vstack([array, np.zeros((1, array.shape[1]))]))
