"""The world a simulation plays: profiles, task types, traffic shape, delays and events.

A :class:`Scenario` is a frozen description, validated once at construction: the profiles
(:class:`SimProfile`: cost, latency, true reliability per task type and failure rate, and when
each joins), the task-type mix, prompt sizes, tenants, how late outcomes arrive, mid-run
:class:`Degradation` events and provider :class:`Outage` windows. It draws nothing;
:class:`~banditroute.sim.simulator.Simulator` plays it from a seed.

The built-in workloads are its constructors: :meth:`Scenario.default` (the demo's: a
degradation and a late profile), :meth:`Scenario.nonstationary` (gradual, abrupt and
recovering drift) and :meth:`Scenario.stationary` (any scenario without its events).

>>> s = Scenario.default(n_requests=1000)
>>> s.profile_names, s.event_steps(1000)
(('small', 'medium', 'large', 'medium-v2'), (400, 700))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ..config.mechanisms import check_error_kind
from ..errors import ConfigError, InvalidOutcomeError
from ._checks import _check_float, _check_int, _check_reliability

__all__ = ["TASK_TYPES", "SimProfile", "Degradation", "Outage", "Scenario"]

#: The task types of the built-in scenarios.
TASK_TYPES = ("chat", "code", "math", "summarize")


@dataclass(frozen=True, kw_only=True)
class SimProfile:
    """The truth about one profile.

    Parameters
    ----------
    name : str
        Profile name, as the router knows it.
    cost_usd, latency_ms : float
        Cost and latency of one request as configured (the listed price, the advertised
        latency): what the router is told, and the true mean over the traffic unless
        ``actual_*`` says otherwise.
    reliability : mapping of task type to float in [0, 1]
        True probability of a good outcome in production, per task type.
    benchmark_reliability : mapping of task type to float, optional
        Probability of a good outcome on the pre-deployment benchmark suite, when it differs
        from production (benchmarks are rarely production traffic); ``reliability`` otherwise.
    joins_at : int
        Index of the first request for which the profile exists (0: from the start).
    actual_cost_usd, actual_latency_ms : float, optional
        The true mean cost and latency of one request when they differ from the configured
        values (answers longer than the listing assumed, a slower region): the simulator
        draws them, the router only learns them from the outcomes it records.
    error_rate : float in [0, 1]
        Probability that a call fails (a provider error: no answer) outside any
        :class:`Outage`; 0 (the default): it always answers.

    >>> p = SimProfile(name="s", cost_usd=0.001, latency_ms=300, reliability={"chat": 0.9},
    ...                actual_cost_usd=0.0015)
    >>> p.joins_at, p.true_cost_usd, p.true_latency_ms, p.error_rate
    (0, 0.0015, 300, 0.0)
    """

    name: str
    cost_usd: float
    latency_ms: float
    reliability: Mapping[str, float]
    benchmark_reliability: Mapping[str, float] | None = None
    joins_at: int = 0
    actual_cost_usd: float | None = None
    actual_latency_ms: float | None = None
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("profile.name", self.name, "must be a non-empty string")
        where = f"profiles[{self.name}]"
        for attr in ("cost_usd", "latency_ms", "actual_cost_usd", "actual_latency_ms"):
            if not attr.startswith("actual_") or getattr(self, attr) is not None:
                _check_float(f"{where}.{attr}", getattr(self, attr), lo=0.0)
        _check_reliability(f"{where}.reliability", self.reliability)
        if self.benchmark_reliability is not None:
            _check_reliability(f"{where}.benchmark_reliability", self.benchmark_reliability)
        _check_int(f"{where}.joins_at", self.joins_at)
        _check_float(f"{where}.error_rate", self.error_rate, lo=0.0, hi=1.0)

    @property
    def true_cost_usd(self) -> float:
        """The mean cost of one request the simulator draws (``actual_cost_usd`` or ``cost_usd``)."""
        return self.cost_usd if self.actual_cost_usd is None else self.actual_cost_usd

    @property
    def true_latency_ms(self) -> float:
        """The mean latency of one request the simulator draws."""
        return self.latency_ms if self.actual_latency_ms is None else self.actual_latency_ms


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
class Outage:
    """Requests ``start`` to ``stop - 1`` of ``profile`` fail with probability ``error_rate``
    (instead of the profile's own ``error_rate``), with the error kind ``error``.

    A failed call answers nothing: its quality is 0 and it fails any verifier; it is charged and
    takes time as an answered call would (the simulator draws its cost and latency as usual).

    >>> Outage(profile="small", start=100, stop=160).error_rate
    1.0
    >>> Outage(profile="small", start=100, stop=100)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: outage.stop must be an integer >= 101, got 100
    """

    profile: str
    start: int
    stop: int
    error_rate: float = 1.0
    error: str = "server_error"

    def __post_init__(self) -> None:
        _check_int("outage.start", self.start)
        _check_int("outage.stop", self.stop, lo=self.start + 1)
        _check_float("outage.error_rate", self.error_rate, lo=0.0, hi=1.0)
        try:
            check_error_kind(self.error)
        except InvalidOutcomeError as exc:
            raise ConfigError("outage.error", self.error, exc.problem) from None


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
    outages : tuple of Outage
        Stretches of requests during which a profile fails (they are not events of
        :meth:`event_steps`: the demo's phases do not split at them).
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
    outages: tuple[Outage, ...] = ()
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
        for o in self.outages:
            if not isinstance(o, Outage):
                raise ConfigError("scenario.outages", o, "must be a tuple of Outage")
            if o.profile not in names:
                raise ConfigError("outage.profile", o.profile, f"must be one of {names}")
        if self.quality not in ("binary", "graded"):
            raise ConfigError("scenario.quality", self.quality, "must be 'binary' or 'graded'")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def default(cls, *, n_requests: int = 50_000, benchmark_gap: bool = True, cost_gap: bool = False,
                outage: bool = False) -> "Scenario":
        """The demo's workload: three profiles, four task types, two mid-run events.

        ``small`` (cheap, fast) is best for chat, ``medium`` for summarize, ``large`` (costly,
        slow) for code and math, under the demo objective (quality 1, 10 per USD, 2e-5 per ms).
        At 40% of ``n_requests``, ``large`` degrades on code (0.88 -> 0.45); at 70%,
        ``medium-v2`` joins and is best for code, math and summarize.

        With ``benchmark_gap`` the pre-deployment benchmark is easier than production and
        compresses the gaps between profiles (small and medium look almost as good as large
        on code and math), as public benchmarks often do; without it the benchmark measures
        production reliability exactly.

        With ``cost_gap`` (the demo's), ``medium-v2`` really costs $0.0032 a request where it
        is configured at $0.0020 (its answers are longer than its listing assumed); it is
        still the best profile where it is best, and the router learns the true cost from
        the outcomes it records.

        With ``outage`` (the demo's), ``small`` fails every call (``server_error``) on the
        requests from 28% to 29.2% of ``n_requests`` (14,000 to 14,599 of 50,000): a provider
        outage, outside the other events.

        >>> [p.true_cost_usd for p in Scenario.default(cost_gap=True).profiles]
        [0.0004, 0.003, 0.012, 0.0032]
        >>> Scenario.default(outage=True).outages[0]
        Outage(profile='small', start=14000, stop=14600, error_rate=1.0, error='server_error')
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
                       reliability=rel(0.88, 0.84, 0.80, 0.90), joins_at=t_join,
                       actual_cost_usd=0.0032 if cost_gap else None),
        )
        outages = ()
        if outage:
            start = round(0.28 * n_requests)
            outages = (Outage(profile="small", start=start, stop=max(start + 1, round(0.292 * n_requests))),)
        return cls(profiles=profiles,
                   degradations=(Degradation(profile="large", task_type="code",
                                             at_request=t_degrade, reliability=0.45),),
                   outages=outages)

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
        """The same world without events: no degradation, no outage, only the profiles present
        at start.

        >>> [p.name for p in Scenario.default().stationary().profiles]
        ['small', 'medium', 'large']
        """
        return replace(self, degradations=(), outages=(),
                       profiles=tuple(p for p in self.profiles if p.joins_at == 0))

    # -- reading --------------------------------------------------------------------------------
    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def event_steps(self, n_requests: int) -> tuple[int, ...]:
        """Sorted request indices in ``(0, n_requests)`` where the world changes."""
        steps = {d.at_request for d in self.degradations} | {p.joins_at for p in self.profiles}
        return tuple(sorted(s for s in steps if 0 < s < n_requests))
