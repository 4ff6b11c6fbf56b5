"""Bounded onboarding: a new profile earns its share of the traffic.

A profile added to a running router (``Router.add_profile``, or a profile of the routes file that
the replayed log never saw) starts from a diffuse prior, under which Thompson sampling would
hand it a large share at once. With :class:`~banditroute.config.mechanisms.Onboarding` it gets at
most ``max_share`` of any request's probability until it has ``min_outcomes`` applied outcomes
with a quality (the evidence its reliability posterior holds, summed over task types). The mass
above the cap goes to the other profiles in proportion to their probability, so the pmf that is
logged and drawn from is exact. If only onboarding profiles are feasible for a request the cap
cannot hold (there is nobody to give the mass to) and the pmf is left as it is.

Its start and its graduation are event rows (``onboarding_start``, ``onboarding_graduated``);
a restart finds the profiles still onboarding from them (:func:`onboarding_from_log`).

>>> import numpy as np
>>> from banditroute.config.mechanisms import Onboarding
>>> o = OnboardingCaps(Onboarding(max_share=0.1, min_outcomes=5))
>>> o.start(2)
>>> o.cap(np.array([0.2, 0.2, 0.6])).round(6).tolist()
[0.45, 0.45, 0.1]
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

__all__ = ["OnboardingCaps", "onboarding_from_log"]


class OnboardingCaps:
    """Which profiles are onboarding, and the cap on their probability."""

    def __init__(self, config):
        self.config = config  # an Onboarding, or None (no cap)
        self.active: dict[int, None] = {}  # profile index -> None, in start order
        self.version = 0

    def start(self, k: int) -> None:
        if self.config is not None and k not in self.active:
            self.active[k] = None
            self.version += 1

    def cap(self, pmf: np.ndarray) -> np.ndarray:
        """``pmf`` with every onboarding profile at most ``max_share``, the excess spread over
        the others in proportion to their probability (unchanged when none can take it)."""
        if not self.active:
            return pmf
        limit = self.config.max_share
        capped = np.zeros(pmf.shape, dtype=bool)
        capped[list(self.active)] = True
        over = capped & (pmf > limit)
        others = pmf * ~capped
        if not over.any() or others.sum() <= 0.0:
            return pmf
        excess = float((pmf[over] - limit).sum())
        out = np.where(over, limit, pmf) + excess * others / others.sum()
        return out / out.sum()

    def graduates(self, evidence: np.ndarray) -> list[tuple[int, float]]:
        """The onboarding profiles whose evidence (applied outcomes with a quality, summed over
        task types; ``evidence`` of shape (n_profiles,)) reached ``min_outcomes``: they leave
        the cap for good. Returns ``[(profile index, evidence), ...]``."""
        if not self.active:
            return []
        done = [(k, float(evidence[k])) for k in self.active if evidence[k] >= self.config.min_outcomes - 1e-9]
        for k, _ in done:
            del self.active[k]
        if done:
            self.version += 1
        return done

    def names(self, names: list[str]) -> list[str]:
        return [names[k] for k in self.active]


def onboarding_from_log(log_dir: str | os.PathLike, names: list[str], scan) -> list[str]:
    """The profiles of ``names`` still onboarding according to the log under ``log_dir``
    (``scan(log_dir, table)`` reads a table): an ``onboarding_start`` event without a later
    ``onboarding_graduated``, or a profile the log never decided for while it decided for others."""
    events = (scan(log_dir, "events").filter(pl.col("event").is_in(["onboarding_start", "onboarding_graduated"]))
              .sort(["ts", "writer", "seq"]).select("event", "policy").collect())
    state: dict[str, bool] = {}
    for event, policy in events.iter_rows():
        state[policy] = event == "onboarding_start"
    seen = set(scan(log_dir, "decisions").select("profile").unique().collect().get_column("profile").to_list())
    return [n for n in names if state.get(n, bool(seen) and n not in seen)]
