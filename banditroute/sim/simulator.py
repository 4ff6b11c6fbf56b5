"""An embedded simulator of an LLM-routing workload, for the demo, tests and benchmarks.

A :class:`Scenario` describes the world: profiles (cost, latency, true reliability per task
type), the task-type mix, prompt sizes, tenants, outcome delays and mid-run events (a
profile that degrades on one task type, a profile that joins late). A :class:`Simulator`
plays it from one seed: it issues requests, executes the profile the router chose, and
delivers each outcome a random number of requests later, as production feedback arrives.

The simulator knows the truth, so it also gives the expected reward of every profile for
every request under an objective (for an oracle) and runs a pre-deployment benchmark (for a
static routing table).

Outcome model for profile ``k`` on a request of task type ``t`` with ``n`` prompt tokens at
request index ``s`` (``r = n / mean_prompt_tokens``, so ``E[r] = 1``)::

    quality    ~ Bernoulli(rel[k, t](s))       ("binary")  or  Beta with that mean ("graded")
    cost_usd   = cost_usd[k] * r * LogNormal (mean 1, sigma cost_noise)
    latency_ms = latency_ms[k] * (1 + r) / 2 * LogNormal (mean 1, sigma latency_noise)

so the mean cost and latency of a profile over the traffic are its configured values, which
the router's objective uses.

>>> sim = Simulator(Scenario.default(n_requests=1000), seed=0)
>>> batch = sim.next_requests(3)
>>> sorted(batch.contexts()[0])
['prompt_tokens', 'task_type', 'tenant']
>>> outcome = sim.submit(batch, np.array([0, 1, 2]), tickets=["a", "b", "c"])
>>> outcome.quality.shape, sim.clock_
((3,), 3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

__all__ = [
    "SimProfile",
    "Degradation",
    "Scenario",
    "RequestBatch",
    "Outcomes",
    "Benchmark",
    "Simulator",
    "TASK_TYPES",
]

TASK_TYPES = ("chat", "code", "math", "summarize")


def _check_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(name, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(name, value, f"must be <= {hi:g}")


def _check_int(name: str, value: Any, *, lo: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, value, f"must be an integer >= {lo}")


def _check_reliability(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(name, value, "must be a non-empty mapping task_type -> probability")
    for task, p in value.items():
        _check_float(f"{name}.{task}", p, lo=0.0, hi=1.0)


@dataclass(frozen=True, kw_only=True)
class SimProfile:
    """The truth about one profile.

    Parameters
    ----------
    name : str
        Profile name, as the router knows it.
    cost_usd, latency_ms : float
        Mean cost and latency of one request over the traffic (the configured values).
    reliability : mapping of task type to float in [0, 1]
        True probability of a good outcome in production, per task type.
    benchmark_reliability : mapping of task type to float, optional
        Probability of a good outcome on the pre-deployment benchmark suite, when it differs
        from production (benchmarks are rarely production traffic); ``reliability`` otherwise.
    joins_at : int
        Index of the first request for which the profile exists (0: from the start).

    >>> SimProfile(name="s", cost_usd=0.001, latency_ms=300, reliability={"chat": 0.9}).joins_at
    0
    """

    name: str
    cost_usd: float
    latency_ms: float
    reliability: Mapping[str, float]
    benchmark_reliability: Mapping[str, float] | None = None
    joins_at: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("profile.name", self.name, "must be a non-empty string")
        where = f"profiles[{self.name}]"
        _check_float(f"{where}.cost_usd", self.cost_usd, lo=0.0)
        _check_float(f"{where}.latency_ms", self.latency_ms, lo=0.0)
        _check_reliability(f"{where}.reliability", self.reliability)
        if self.benchmark_reliability is not None:
            _check_reliability(f"{where}.benchmark_reliability", self.benchmark_reliability)
        _check_int(f"{where}.joins_at", self.joins_at)


@dataclass(frozen=True, kw_only=True)
class Degradation:
    """From request ``at_request`` on, ``profile`` succeeds on ``task_type`` with ``reliability``.

    >>> Degradation(profile="large", task_type="code", at_request=100, reliability=0.4).reliability
    0.4
    """

    profile: str
    task_type: str
    at_request: int
    reliability: float

    def __post_init__(self) -> None:
        _check_int("degradation.at_request", self.at_request)
        _check_float("degradation.reliability", self.reliability, lo=0.0, hi=1.0)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A routing workload: profiles, task types, traffic shape, delays and events.

    Parameters
    ----------
    profiles : tuple of SimProfile
        At least one must exist from request 0. Every ``reliability`` names every task type.
    task_types : tuple of str
    task_mix : tuple of float
        Probability of each task type (aligned with ``task_types``; sums to 1).
    tenants : tuple of str
        Tenants, drawn uniformly; realism only, they do not change outcomes.
    mean_prompt_tokens : float
        Mean prompt size; sizes are log-normal with log-sd ``prompt_tokens_sigma``.
    prompt_tokens_sigma, cost_noise, latency_noise : float
        Log-scale standard deviations (noise factors have mean 1).
    max_delay_requests : int
        An outcome arrives ``d ~ Uniform{0..max_delay_requests}`` requests after its request.
    degradations : tuple of Degradation
    quality : {"binary", "graded"}
        Bernoulli 0/1 quality, or a Beta-distributed grade in [0, 1] with the same mean.

    Examples
    --------
    >>> s = Scenario.default(n_requests=10_000)
    >>> [p.name for p in s.profiles], s.event_steps(10_000)
    (['small', 'medium', 'large', 'medium-v2'], (4000, 7000))
    >>> s.stationary().event_steps(10_000)
    ()
    """

    profiles: tuple[SimProfile, ...]
    task_types: tuple[str, ...] = TASK_TYPES
    task_mix: tuple[float, ...] = (0.30, 0.25, 0.20, 0.25)
    tenants: tuple[str, ...] = ("acme", "globex", "initech", "umbrella")
    mean_prompt_tokens: float = 600.0
    prompt_tokens_sigma: float = 0.5
    cost_noise: float = 0.2
    latency_noise: float = 0.3
    max_delay_requests: int = 50
    degradations: tuple[Degradation, ...] = ()
    quality: Literal["binary", "graded"] = "binary"

    def __post_init__(self) -> None:
        if not isinstance(self.profiles, tuple) or not self.profiles:
            raise ConfigError("scenario.profiles", self.profiles, "must be a non-empty tuple of SimProfile")
        if not isinstance(self.task_types, tuple) or not self.task_types:
            raise ConfigError("scenario.task_types", self.task_types, "must be a non-empty tuple of str")
        if len(set(self.task_types)) != len(self.task_types):
            raise ConfigError("scenario.task_types", self.task_types, "must be unique")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ConfigError("scenario.profiles", names, "must have unique names")
        if all(p.joins_at > 0 for p in self.profiles):
            raise ConfigError("scenario.profiles", names, "must include a profile with joins_at=0")
        tasks = set(self.task_types)
        for p in self.profiles:
            for attr in ("reliability", "benchmark_reliability"):
                rel = getattr(p, attr)
                if rel is not None and set(rel) != tasks:
                    raise ConfigError(f"profiles[{p.name}].{attr}", sorted(rel),
                                      f"must name exactly the task types {sorted(tasks)}")
        if len(self.task_mix) != len(self.task_types):
            raise ConfigError("scenario.task_mix", self.task_mix, "must have one entry per task type")
        for i, w in enumerate(self.task_mix):
            _check_float(f"scenario.task_mix[{i}]", w, lo=0.0)
        if abs(sum(self.task_mix) - 1.0) > 1e-9:
            raise ConfigError("scenario.task_mix", self.task_mix, "must sum to 1")
        if not isinstance(self.tenants, tuple) or not self.tenants:
            raise ConfigError("scenario.tenants", self.tenants, "must be a non-empty tuple of str")
        _check_float("scenario.mean_prompt_tokens", self.mean_prompt_tokens, lo=1.0)
        for attr in ("prompt_tokens_sigma", "cost_noise", "latency_noise"):
            _check_float(f"scenario.{attr}", getattr(self, attr), lo=0.0, hi=3.0)
        _check_int("scenario.max_delay_requests", self.max_delay_requests)
        for d in self.degradations:
            if d.profile not in names:
                raise ConfigError("degradation.profile", d.profile, f"must be one of {names}")
            if d.task_type not in tasks:
                raise ConfigError("degradation.task_type", d.task_type, f"must be one of {sorted(tasks)}")
        if self.quality not in ("binary", "graded"):
            raise ConfigError("scenario.quality", self.quality, "must be 'binary' or 'graded'")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def default(cls, *, n_requests: int = 50_000, benchmark_gap: bool = True) -> "Scenario":
        """The demo's workload: three profiles, four task types, two mid-run events.

        ``small`` (cheap, fast) is best for chat, ``medium`` for summarize, ``large`` (costly,
        slow) for code and math, under the demo objective (quality 1, 10 per USD, 2e-5 per ms).
        At 40% of ``n_requests``, ``large`` degrades on code (0.88 -> 0.45); at 70%,
        ``medium-v2`` joins and is best for code, math and summarize.

        With ``benchmark_gap`` the pre-deployment benchmark is easier than production and
        compresses the gaps between profiles (small and medium look almost as good as large
        on code and math), as public benchmarks often do; without it the benchmark measures
        production reliability exactly.
        """
        _check_int("n_requests", n_requests, lo=1)
        t_degrade, t_join = int(0.4 * n_requests), int(0.7 * n_requests)

        def rel(chat, code, math_, summ):
            return dict(zip(TASK_TYPES, (chat, code, math_, summ)))

        bench = benchmark_gap
        profiles = (
            SimProfile(name="small", cost_usd=0.0004, latency_ms=400,
                       reliability=rel(0.88, 0.45, 0.30, 0.80),
                       benchmark_reliability=rel(0.90, 0.70, 0.62, 0.90) if bench else None),
            SimProfile(name="medium", cost_usd=0.0030, latency_ms=1100,
                       reliability=rel(0.90, 0.66, 0.50, 0.86),
                       benchmark_reliability=rel(0.91, 0.86, 0.84, 0.90) if bench else None),
            SimProfile(name="large", cost_usd=0.0120, latency_ms=2500,
                       reliability=rel(0.93, 0.88, 0.85, 0.88),
                       benchmark_reliability=rel(0.94, 0.90, 0.89, 0.92) if bench else None),
            SimProfile(name="medium-v2", cost_usd=0.0020, latency_ms=800,
                       reliability=rel(0.88, 0.84, 0.80, 0.90), joins_at=t_join),
        )
        return cls(profiles=profiles,
                   degradations=(Degradation(profile="large", task_type="code",
                                             at_request=t_degrade, reliability=0.45),))

    @classmethod
    def nonstationary(cls, *, n_requests: int = 50_000) -> "Scenario":
        """Drift of three kinds on the default profiles (no profile joins):

        - gradual: ``medium`` on summarize slides from 0.86 to 0.56 in ten steps between 15%
          and 45% of the run;
        - abrupt: ``large`` on code drops from 0.88 to 0.45 at 40%;
        - recovery: ``large`` on code is back to 0.88 at 70%.

        >>> [(d.profile, d.at_request, d.reliability) for d in
        ...  Scenario.nonstationary(n_requests=1000).degradations if d.task_type == "code"]
        [('large', 400, 0.45), ('large', 700, 0.88)]
        """
        _check_int("n_requests", n_requests, lo=1)
        base = cls.default(n_requests=n_requests).stationary()
        gradual = [Degradation(profile="medium", task_type="summarize", at_request=int((0.15 + 0.03 * i) * n_requests),
                               reliability=round(0.86 - 0.03 * (i + 1), 4)) for i in range(10)]
        events = gradual + [Degradation(profile="large", task_type="code", at_request=int(0.4 * n_requests),
                                        reliability=0.45),
                            Degradation(profile="large", task_type="code", at_request=int(0.7 * n_requests),
                                        reliability=0.88)]
        return replace(base, degradations=tuple(sorted(events, key=lambda d: d.at_request)))

    def stationary(self) -> "Scenario":
        """The same world without events: no degradation, only the profiles present at start.

        >>> [p.name for p in Scenario.default().stationary().profiles]
        ['small', 'medium', 'large']
        """
        return replace(self, degradations=(),
                       profiles=tuple(p for p in self.profiles if p.joins_at == 0))

    # -- reading --------------------------------------------------------------------------------
    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def event_steps(self, n_requests: int) -> tuple[int, ...]:
        """Sorted request indices in ``(0, n_requests)`` where the world changes."""
        steps = {d.at_request for d in self.degradations} | {p.joins_at for p in self.profiles}
        return tuple(sorted(s for s in steps if 0 < s < n_requests))


@dataclass(frozen=True, kw_only=True, eq=False)
class RequestBatch:
    """Consecutive requests, as arrays of shape (n,).

    ``step`` is the request index, ``task`` and ``tenant`` index ``task_types`` and
    ``tenants``, ``delay_requests`` is how many requests later the outcome arrives.
    """

    step: np.ndarray
    task: np.ndarray
    prompt_tokens: np.ndarray
    tenant: np.ndarray
    delay_requests: np.ndarray
    task_types: tuple[str, ...]
    tenants: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def contexts(self) -> list[dict]:
        """The requests as router contexts ``{"task_type", "prompt_tokens", "tenant"}``."""
        tasks, tenants = self.task_types, self.tenants
        return [{"task_type": tasks[t], "prompt_tokens": n, "tenant": tenants[c]}
                for t, n, c in zip(self.task.tolist(), self.prompt_tokens.tolist(), self.tenant.tolist())]


@dataclass(frozen=True, kw_only=True, eq=False)
class Outcomes:
    """Outcomes as arrays of shape (n,); ``tickets`` are the caller's ids (decision ids)."""

    tickets: np.ndarray
    step: np.ndarray
    profile: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    latency_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.step.shape[0])


@dataclass(frozen=True, kw_only=True, eq=False)
class Benchmark:
    """A pre-deployment benchmark: mean reward per (profile, task type) and the static table.

    ``mean_reward`` has shape (n_profiles, n_task_types), ``table`` maps each task type to the
    profile with the best benchmark reward.
    """

    profiles: tuple[str, ...]
    task_types: tuple[str, ...]
    mean_reward: np.ndarray
    n_runs: int
    table: dict = field(default_factory=dict)


def _lognormal_mean_one(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    if sigma == 0.0:
        return np.ones(n)
    return rng.lognormal(-0.5 * sigma * sigma, sigma, size=n)


class Simulator:
    """Play a :class:`Scenario` from one seed.

    Parameters
    ----------
    scenario : Scenario
    seed : int
        Builds the one generator every draw comes from (split into independent streams for
        requests, outcomes and the benchmark, so that one does not shift the others).

    Attributes
    ----------
    clock_ : int
        Number of requests issued so far.

    Examples
    --------
    >>> sim = Simulator(Scenario.default(n_requests=100), seed=1)
    >>> batch = sim.next_requests(60)
    >>> _ = sim.submit(batch, np.zeros(60, dtype=int), tickets=np.arange(60))
    >>> arrived = sim.poll()                      # outcomes whose delay has elapsed
    >>> 0 < len(arrived) < 60, len(arrived) + len(sim.drain()) == 60
    (True, True)
    """

    def __init__(self, scenario: Scenario, *, seed: int):
        if not isinstance(scenario, Scenario):
            raise ConfigError("scenario", scenario, "must be a Scenario")
        _check_int("seed", seed)
        self.scenario = scenario
        rng = np.random.default_rng(seed)
        self._rng_requests, self._rng_outcomes, self._rng_bench = rng.spawn(3)
        s = scenario
        self.profile_names = s.profile_names
        self.task_types = s.task_types
        self._task_index = {t: i for i, t in enumerate(s.task_types)}
        self._profile_index = {p: k for k, p in enumerate(self.profile_names)}
        self.reliability_ = np.array([[p.reliability[t] for t in s.task_types] for p in s.profiles])
        self.benchmark_reliability_ = np.array(
            [[(p.benchmark_reliability or p.reliability)[t] for t in s.task_types] for p in s.profiles])
        self.cost_usd_ = np.array([p.cost_usd for p in s.profiles], dtype=np.float64)
        self.latency_ms_ = np.array([p.latency_ms for p in s.profiles], dtype=np.float64)
        self.joins_at_ = np.array([p.joins_at for p in s.profiles], dtype=np.int64)
        self._task_cdf = np.cumsum(s.task_mix)
        self._task_cdf[-1] = 1.0
        self.clock_ = 0
        self._pending = None  # (arrival_step, Outcomes)

    # -- truth ----------------------------------------------------------------------------------
    def available(self, step: np.ndarray) -> np.ndarray:
        """Which profiles exist at each request index: bool array (n, n_profiles)."""
        return np.asarray(step)[:, None] >= self.joins_at_[None, :]

    def joining(self, start: int, stop: int) -> list[str]:
        """Names of the profiles that join at a request index in ``[start, stop)``."""
        return [n for n, j in zip(self.profile_names, self.joins_at_) if start <= j < stop and j > 0]

    def reliability(self, step: np.ndarray, task: np.ndarray) -> np.ndarray:
        """True reliability of every profile for each request: array (n, n_profiles)."""
        step, task = np.asarray(step), np.asarray(task)
        rel = self.reliability_[:, task].T.copy()
        for d in self.scenario.degradations:
            k, t = self._profile_index[d.profile], self._task_index[d.task_type]
            hit = (step >= d.at_request) & (task == t)
            rel[hit, k] = d.reliability
        return rel

    def expected_reward(self, batch: RequestBatch, objective) -> np.ndarray:
        """``E[reward | profile, request]``: array (n, n_profiles), NaN where a profile is absent.

        ``objective`` is anything with weights ``quality``, ``cost`` and ``latency``
        (:class:`banditroute.Objective`); reward = w_q*quality - w_c*cost_usd - w_l*latency_ms.
        """
        r = (batch.prompt_tokens / self.scenario.mean_prompt_tokens)[:, None]
        value = (objective.quality * self.reliability(batch.step, batch.task)
                 - objective.cost * self.cost_usd_[None, :] * r
                 - objective.latency * self.latency_ms_[None, :] * (1.0 + r) / 2.0)
        return np.where(self.available(batch.step), value, np.nan)

    def expected_reward_table(self, step: int, objective) -> np.ndarray:
        """Expected reward at mean cost and latency per (profile, task type) at ``step``:
        array (n_profiles, n_task_types), NaN for absent profiles."""
        tasks = np.arange(len(self.task_types))
        rel = self.reliability(np.full(tasks.size, step), tasks).T
        value = (objective.quality * rel - objective.cost * self.cost_usd_[:, None]
                 - objective.latency * self.latency_ms_[:, None])
        return np.where(self.joins_at_[:, None] <= step, value, np.nan)

    # -- traffic --------------------------------------------------------------------------------
    def next_requests(self, n: int) -> RequestBatch:
        """Issue the next ``n`` requests (advances ``clock_`` by ``n``)."""
        _check_int("n", n, lo=1)
        s, rng = self.scenario, self._rng_requests
        sigma = s.prompt_tokens_sigma
        tokens = rng.lognormal(math.log(s.mean_prompt_tokens) - 0.5 * sigma * sigma, sigma, size=n)
        batch = RequestBatch(
            step=np.arange(self.clock_, self.clock_ + n, dtype=np.int64),
            task=np.searchsorted(self._task_cdf, rng.random(n), side="right").astype(np.int64),
            prompt_tokens=np.maximum(1, np.rint(tokens)).astype(np.int64),
            tenant=rng.integers(0, len(s.tenants), size=n),
            delay_requests=rng.integers(0, s.max_delay_requests + 1, size=n),
            task_types=s.task_types, tenants=s.tenants,
        )
        self.clock_ += n
        return batch

    def sample_outcomes(self, batch: RequestBatch, profile: np.ndarray, *, tickets=None) -> Outcomes:
        """Execute ``profile[i]`` (index into ``profile_names``) on request ``i``; no queueing."""
        profile = np.asarray(profile, dtype=np.int64)
        if profile.shape != batch.step.shape:
            raise ConfigError("profile", profile.shape, f"must have shape {batch.step.shape}")
        absent = ~self.available(batch.step)[np.arange(len(batch)), profile]
        if absent.any():
            i = int(np.argmax(absent))
            raise ConfigError("profile", self.profile_names[profile[i]],
                              f"does not exist yet at request {int(batch.step[i])}")
        s, rng, n = self.scenario, self._rng_outcomes, len(batch)
        rel = self.reliability(batch.step, batch.task)[np.arange(n), profile]
        if s.quality == "binary":
            quality = (rng.random(n) < rel).astype(np.float64)
        else:  # Beta with mean rel and concentration 4; exact 0/1 at the extremes
            a, b = np.maximum(4.0 * rel, 1e-9), np.maximum(4.0 * (1.0 - rel), 1e-9)
            quality = np.clip(rng.beta(a, b), 0.0, 1.0)
        r = batch.prompt_tokens / s.mean_prompt_tokens
        cost = self.cost_usd_[profile] * r * _lognormal_mean_one(rng, s.cost_noise, n)
        latency = self.latency_ms_[profile] * (1.0 + r) / 2.0 * _lognormal_mean_one(rng, s.latency_noise, n)
        tickets = np.arange(n) if tickets is None else np.asarray(tickets, dtype=object)
        return Outcomes(tickets=tickets, step=batch.step, profile=profile, quality=quality,
                        cost_usd=cost, latency_ms=latency)

    def submit(self, batch: RequestBatch, profile: np.ndarray, *, tickets) -> Outcomes:
        """Execute the chosen profiles and queue the outcomes until their delay has elapsed.

        The outcome of request ``s`` with delay ``d`` is delivered by :meth:`poll` once
        ``clock_ > s + d``. Returns the outcomes (for bookkeeping; a router should learn
        only from :meth:`poll`).
        """
        out = self.sample_outcomes(batch, profile, tickets=tickets)
        arrival = batch.step + batch.delay_requests + 1
        if self._pending is None:
            self._pending = (arrival, out)
        else:
            old_arrival, old = self._pending
            self._pending = (np.concatenate([old_arrival, arrival]), _concat(old, out))
        return out

    def poll(self) -> Outcomes:
        """Outcomes that have arrived by now (``arrival <= clock_``), in arrival order."""
        return self._take(self.clock_)

    def drain(self) -> Outcomes:
        """Every outcome still pending, as if the run went on until all arrived."""
        return self._take(None)

    def _take(self, clock: int | None) -> Outcomes:
        if self._pending is None:
            return _empty_outcomes()
        arrival, out = self._pending
        ready = np.ones(arrival.shape, dtype=bool) if clock is None else arrival <= clock
        order = np.flatnonzero(ready)
        order = order[np.argsort(arrival[order], kind="stable")]
        rest = np.flatnonzero(~ready)
        self._pending = (arrival[rest], _select(out, rest)) if rest.size else None
        return _select(out, order)

    # -- pre-deployment -------------------------------------------------------------------------
    def benchmark(self, objective, *, n_runs: int = 200) -> Benchmark:
        """Run every initial profile ``n_runs`` times per task type on the benchmark suite.

        Quality is drawn from ``benchmark_reliability``; cost and latency as in production.
        The static routing table picks, per task type, the profile with the best mean reward.

        >>> b = Simulator(Scenario.default(benchmark_gap=False), seed=0).benchmark(
        ...     type("O", (), {"quality": 1.0, "cost": 10.0, "latency": 2e-5})(), n_runs=20_000)
        >>> b.table
        {'chat': 'small', 'code': 'large', 'math': 'large', 'summarize': 'medium'}
        """
        _check_int("n_runs", n_runs, lo=1)
        s, rng = self.scenario, self._rng_bench
        initial = np.flatnonzero(self.joins_at_ == 0)
        n_tasks = len(self.task_types)
        sigma = s.prompt_tokens_sigma
        shape = (initial.size, n_tasks, n_runs)
        tokens = rng.lognormal(math.log(s.mean_prompt_tokens) - 0.5 * sigma * sigma, sigma, size=shape)
        r = np.maximum(1, np.rint(tokens)) / s.mean_prompt_tokens
        rel = self.benchmark_reliability_[initial][:, :, None]
        if s.quality == "binary":
            quality = (rng.random(shape) < rel).astype(np.float64)
        else:
            quality = np.clip(rng.beta(np.maximum(4 * rel, 1e-9), np.maximum(4 * (1 - rel), 1e-9),
                                       size=shape), 0.0, 1.0)
        n_all = int(np.prod(shape))
        cost = self.cost_usd_[initial][:, None, None] * r * _lognormal_mean_one(rng, s.cost_noise, n_all).reshape(shape)
        latency = (self.latency_ms_[initial][:, None, None] * (1 + r) / 2
                   * _lognormal_mean_one(rng, s.latency_noise, n_all).reshape(shape))
        reward = objective.quality * quality - objective.cost * cost - objective.latency * latency
        mean = reward.mean(axis=2)
        names = tuple(self.profile_names[k] for k in initial)
        table = {t: names[int(np.argmax(mean[:, j]))] for j, t in enumerate(self.task_types)}
        return Benchmark(profiles=names, task_types=self.task_types, mean_reward=mean,
                         n_runs=n_runs, table=table)


def _select(out: Outcomes, idx: np.ndarray) -> Outcomes:
    return Outcomes(tickets=out.tickets[idx], step=out.step[idx], profile=out.profile[idx],
                    quality=out.quality[idx], cost_usd=out.cost_usd[idx], latency_ms=out.latency_ms[idx])


def _concat(a: Outcomes, b: Outcomes) -> Outcomes:
    return Outcomes(**{f: np.concatenate([getattr(a, f), getattr(b, f)])
                       for f in ("tickets", "step", "profile", "quality", "cost_usd", "latency_ms")})


def _empty_outcomes() -> Outcomes:
    e = np.empty(0)
    return Outcomes(tickets=np.empty(0, dtype=object), step=e.astype(np.int64),
                    profile=e.astype(np.int64), quality=e, cost_usd=e, latency_ms=e)
