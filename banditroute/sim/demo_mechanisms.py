"""The demo's bounded onboarding and provider failures: what the router did, request by request.

:class:`MechanismWatch` follows a live demo run (:func:`~banditroute.sim.demo.run_demo` calls it
around every batch) and reports, in request indices:

* **onboarding** (``Router(onboarding=...)``): a profile that joins mid-run is capped at
  ``max_share`` of every request's probability until it has ``min_outcomes`` outcomes; the
  watch notes the first request decided after its graduation (the router's ``beliefs()``
  column ``onboarding`` turns false);
* **provider failures** (``Router(cooldown=...)``): the failed calls the simulator drew (an
  :class:`~banditroute.sim.scenario.Outage`), recorded with ``record(id, error=...)``; the
  cooldowns they started (``cooldown.errors`` failed calls in a row) and the requests whose
  decision excluded the profile for a cooldown.

With a log, the requests of the ``onboarding_start``, ``onboarding_graduated`` and ``cooldown``
events are read from it instead (:func:`logged_events`); they are the watch's (a test checks it).

**The cooldown's clock.** The router's cooldown runs on the wall clock (``time.time()``), while
the demo routes a few thousand simulated requests a second: a production-like 30 s would outlast
the whole run. The demo gives its traffic a nominal rate, ``requests_per_second`` (500), and a
cooldown of ``DEMO_COOLDOWN.seconds`` (0.2 s) then stands for the time of 100 requests. So that
the same seed gives the same decisions on any machine, the watch *holds* the run at the end of
a cooldown: after a ``cooldown`` event at request ``s`` it lets the requests up to
``s + seconds * requests_per_second`` be decided (the profile is excluded from them: the
cooldown has not ended), then waits until the cooldown's end before the next batch. A machine
too slow to route those requests within ``seconds`` would end the cooldown early (they take
40-55 ms on a 2-core VM: a margin of about 4); the watch counts such overruns (``overruns``) and
the summary says so. The waits add about 0.6 s to the default run (4 cooldowns end there).

>>> DEMO_ONBOARDING, DEMO_COOLDOWN
(Onboarding(max_share=0.1, min_outcomes=100), Cooldown(errors=3, seconds=0.2))
"""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl

from ..config.mechanisms import Cooldown, Onboarding

__all__ = ["DEMO_ONBOARDING", "DEMO_COOLDOWN", "MechanismWatch", "logged_events"]

#: The demo's bounded onboarding: at most 10% of any request until 100 outcomes. On the default
#: run (50,000 requests, seeds 0-2) ``medium-v2`` graduates 904-984 requests after it joins, and
#: the cap costs 0.4-0.65 points of the ratio to the oracle after the join (0.1-0.2 overall).
#: The library's defaults (5%, 200 outcomes) kept it capped for 2,968-3,704 requests and cost
#: 1.8-3.3 points there.
DEMO_ONBOARDING = Onboarding(max_share=0.1, min_outcomes=100)

#: The demo's cooldown: 3 failed calls in a row exclude a profile for 0.2 s, the time of 100
#: requests at the demo's nominal 500 requests per second (the module docstring explains).
DEMO_COOLDOWN = Cooldown(errors=3, seconds=0.2)


class MechanismWatch:
    """Follows one live demo run's onboarding and cooldowns (see the module docstring).

    Parameters
    ----------
    router : Router
        The live router (read through ``beliefs()`` and the decisions it returns).
    profiles : sequence of str
        The scenario's profile names (indices of the failure counts).
    requests_per_second : float
        The demo traffic's nominal rate: a cooldown lasts ``ceil(seconds * rate)`` requests.
    """

    def __init__(self, router, profiles, *, requests_per_second: float = 500.0):
        self.router = router
        self.names = list(profiles)
        cooldown = router.config.cooldown
        self.cooldown_requests = None if cooldown is None else math.ceil(cooldown.seconds * requests_per_second)
        self.joined: dict[str, int] = {}  # onboarding profile -> request it joined at
        self.graduated: dict[str, int] = {}  # -> first request decided after its graduation
        self.n_failed = np.zeros(len(self.names), dtype=np.int64)  # failed calls (first and escalated)
        self.cooldown_at: dict[str, list] = {}  # profile -> request decided first after each cooldown event
        self.n_excluded = np.zeros(len(self.names), dtype=np.int64)  # requests excluded by a cooldown
        self.overruns = 0
        self.waited_s = 0.0  # wall time spent waiting for cooldowns to end
        self._until: dict[str, float] = {}  # profile -> end of its cooldown (epoch s), while held
        self._hold: dict[str, int] = {}  # profile -> request at which its cooldown ends (simulated)
        self._overrun: set = set()

    # -- the live run ---------------------------------------------------------------------------
    def join(self, name: str, step: int) -> None:
        """``name`` was added to the router before request ``step``."""
        if self.router.config.onboarding is not None:
            self.joined[name] = step

    def failed(self, name: str, step: int) -> None:
        """A failed call of ``name`` was just recorded, before request ``step``: did it start a cooldown?"""
        self.n_failed[self.names.index(name)] += 1
        if self.cooldown_requests is None:
            return
        until = self._cooldown_until(name)
        if until is not None and until != self._until.get(name):
            self._until[name] = until
            self._hold[name] = step + self.cooldown_requests
            self.cooldown_at.setdefault(name, []).append(step)

    def before_batch(self, start: int) -> None:
        """Before deciding the batch that starts at request ``start``: note graduations, end the
        cooldowns whose requests are over (waiting for the wall clock if needed)."""
        waiting = [n for n in self.joined if n not in self.graduated]
        if waiting:
            still = set(self.router.beliefs().filter(pl.col("onboarding")).get_column("profile").to_list())
            self.graduated.update((n, start) for n in waiting if n not in still)
        for name in [n for n, stop in self._hold.items() if start >= stop]:
            self._release(name)
        now = time.time()
        for name, until in self._until.items():
            if now >= until and (name, until) not in self._overrun:
                self._overrun.add((name, until))  # this cooldown ended before its requests were decided
                self.overruns += 1

    def decided(self, decisions) -> None:
        """Count the requests of a batch whose decision excluded a profile for a cooldown."""
        if not self._until:
            return
        for d in decisions:
            for name in self._until:
                if d.excluded.get(name, "").startswith("cooldown:"):
                    self.n_excluded[self.names.index(name)] += 1

    def finish(self) -> None:
        """After the last outcome: wait for the cooldowns still running (the final beliefs then
        hold none, as a replay of the log gives them)."""
        for name in list(self._until):
            self._release(name)

    def _release(self, name: str) -> None:
        wait = self._until.pop(name) - time.time()
        self._hold.pop(name, None)
        if wait > 0:
            time.sleep(wait + 1e-3)
            self.waited_s += wait + 1e-3

    def _cooldown_until(self, name: str) -> float | None:
        rows = self.router.beliefs().filter(pl.col("profile") == name).get_column("cooldown_until").to_list()
        return rows[0] if rows else None

    # -- what it saw ----------------------------------------------------------------------------
    def onboardings(self, beliefs: tuple, logged: dict | None) -> dict:
        """Per onboarding profile: ``joined_at`` and ``graduated_at`` (the first request decided
        with the cap, and without it; None: still capped at the end), from the log's events when
        there is one (``logged``: :func:`logged_events`, ``from_log``), else as the watch saw
        them; ``max_share``, ``min_outcomes`` and ``n_outcomes`` (its evidence at the end)."""
        cfg, found = self.router.config.onboarding, {}
        for name, step in self.joined.items():
            at = {e: (logged or {}).get((e, name), [None])[0] for e in ("onboarding_start", "onboarding_graduated")}
            found[name] = {"joined_at": step if logged is None else at["onboarding_start"],
                           "graduated_at": self.graduated.get(name) if logged is None else at["onboarding_graduated"],
                           "from_log": logged is not None, "max_share": cfg.max_share, "min_outcomes": cfg.min_outcomes,
                           "n_outcomes": float(sum(b["n"] for b in beliefs if b["profile"] == name))}
        return found

    def failures(self, scenario, beliefs: tuple, logged: dict | None) -> tuple:
        """Per profile that failed a call: its ``outages`` (start, stop, error), ``n_failed``
        calls, ``cooldown_at`` (the request decided first after each cooldown event: from the
        log's events when there is one, ``from_log``), ``n_excluded`` (requests excluded by a
        cooldown), its ``availability`` at the end and the cooldown's settings (``errors``,
        ``cooldown_s``, ``cooldown_requests``: None without a cooldown) and ``overruns``."""
        cooldown = self.router.config.cooldown
        found = []
        for k, name in enumerate(self.names):
            outages = [(o.start, o.stop, o.error) for o in scenario.outages if o.profile == name]
            if not self.n_failed[k] and not outages:
                continue
            found.append({"profile": name, "outages": outages, "n_failed": int(self.n_failed[k]),
                          "cooldown_at": self.cooldown_at.get(name, []) if logged is None else
                          logged.get(("cooldown", name), []), "from_log": logged is not None,
                          "n_excluded": int(self.n_excluded[k]),
                          "availability": next((b["availability"] for b in beliefs if b["profile"] == name), None),
                          "errors": None if cooldown is None else cooldown.errors,
                          "cooldown_s": None if cooldown is None else cooldown.seconds,
                          "cooldown_requests": self.cooldown_requests, "overruns": self.overruns})
        return tuple(found)


def logged_events(log_dir) -> dict:
    """``{(event, profile): [request, ...]}``: each onboarding and cooldown event of the log, as the
    request decided first after it (the number of first decisions, those without a parent, that
    the same writer logged before it: a writer numbers all its rows, of every table, in order).

    >>> import tempfile
    >>> logged_events(tempfile.mkdtemp())
    {}
    """
    from ..logs.scan import scan_table

    kinds = ["onboarding_start", "onboarding_graduated", "cooldown"]
    events = (scan_table(log_dir, "events").filter(pl.col("event").is_in(kinds)).sort("writer", "seq")
              .select("event", "policy", "writer", "seq").collect())
    if events.is_empty():
        return {}
    roots = scan_table(log_dir, "decisions").filter(pl.col("parent_id").is_null()).select("writer", "seq").collect()
    seqs = {w: np.sort(g.get_column("seq").to_numpy()) for (w,), g in roots.group_by("writer")}
    found: dict = {}
    for event, profile, writer, seq in events.iter_rows():
        found.setdefault((event, profile), []).append(int(np.searchsorted(seqs.get(writer, np.empty(0)), seq)))
    return found
