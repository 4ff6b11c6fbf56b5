"""The world's sampling: play a :class:`~banditroute.sim.scenario.Scenario` from one seed.

A :class:`Simulator` issues requests, executes the profile the router chose, and delivers
each outcome a random number of requests later, as production feedback arrives. It knows the
truth, so it also gives the expected reward of every profile for every request under an
objective (for an oracle) and runs a pre-deployment benchmark (for a static routing table).

Outcome model for profile ``k`` on a request of task type ``t`` with ``n`` prompt tokens at
request index ``s`` (``r = n / mean_prompt_tokens``, so ``E[r] = 1``)::

    quality    ~ Bernoulli(rel[k, t](s))       ("binary")  or  Beta with that mean ("graded")
    cost_usd   = cost_usd[k] * r * LogNormal (mean 1, sigma cost_noise)
    latency_ms = latency_ms[k] * (1 + r) / 2 * LogNormal (mean 1, sigma latency_noise)

so the mean cost and latency of a profile over the traffic are ``cost_usd[k]`` and
``latency_ms[k]``: its configured values, which the router starts from, unless the scenario
gives it ``actual_cost_usd`` / ``actual_latency_ms`` (then the router has to learn them from
the outcomes it records).

A call fails with probability ``fail[k](s)`` (the profile's ``error_rate``, or an
:class:`~banditroute.sim.scenario.Outage`'s during its stretch of requests:
:meth:`Simulator.failure_probability`), drawn from a stream of its own, so a scenario without
failures draws exactly what it drew before failures existed. A failed call's
``Outcomes.error`` is its kind (``"server_error"``); it answers nothing (quality 0) and is
charged and timed as an answered call would be (its cost and latency are drawn as above). Its
reward is therefore ``- w_c*cost_usd - w_l*latency_ms``, what the library logs for
``record(id, error=..., cost_usd=..., latency_ms=...)`` without ``error_quality``, and the
expected quality of a call is ``(1 - fail) * rel``.

With a :class:`~banditroute.sim.cascade.Verifier` (``verifier=``) each answer also passes or
fails a verifier, and :meth:`Simulator.cascade` escalates the failed ones through the router
(see :mod:`banditroute.sim.cascade`). Without one the simulator draws exactly what it drew
before verifiers existed.

>>> from banditroute.sim import Scenario
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

import numpy as np

from ..errors import ConfigError, NoFeasibleProfileError
from ._checks import _check_int
from .cascade import Cascade, CascadeStats, Verifier
from .records import Benchmark, Outcomes, RequestBatch, _concat, _empty_outcomes, _select, _take_batch
from .scenario import Scenario

__all__ = ["Simulator"]


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
        requests, outcomes, the benchmark, escalated calls and the failures of first and of
        escalated calls, so that one does not shift the others: the first answers are the same
        draws with or without a verifier, and with or without failures).
    verifier : Verifier, optional
        Checks every answer; :meth:`cascade` escalates the failed ones. None (the default):
        no verifier, no cascade.

    Attributes
    ----------
    clock_ : int
        Number of requests issued so far.
    cascade_stats_ : CascadeStats
        Totals of the cascades run so far (first-choice and final pass rates, calls and cost
        per request).

    Examples
    --------
    >>> sim = Simulator(Scenario.default(n_requests=100), seed=1)
    >>> batch = sim.next_requests(60)
    >>> _ = sim.submit(batch, np.zeros(60, dtype=int), tickets=np.arange(60))
    >>> arrived = sim.poll()                      # outcomes whose delay has elapsed
    >>> 0 < len(arrived) < 60, len(arrived) + len(sim.drain()) == 60
    (True, True)
    """

    def __init__(self, scenario: Scenario, *, seed: int, verifier: Verifier | None = None):
        if not isinstance(scenario, Scenario):
            raise ConfigError("scenario", scenario, "must be a Scenario")
        _check_int("seed", seed)
        if verifier is not None and not isinstance(verifier, Verifier):
            raise ConfigError("verifier", verifier, "must be a Verifier or None")
        self.scenario = scenario
        self.verifier = verifier
        rng = np.random.default_rng(seed)
        self._rng_requests, self._rng_outcomes, self._rng_bench = rng.spawn(3)
        (self._rng_cascade,) = rng.spawn(1)  # a fourth stream: the first three are as before
        self._rng_fail, self._rng_cascade_fail = rng.spawn(2)  # failures: the first four are as before
        self.cascade_stats_ = CascadeStats()
        s = scenario
        self.profile_names = s.profile_names
        self.task_types = s.task_types
        self._task_index = {t: i for i, t in enumerate(s.task_types)}
        self._profile_index = {p: k for k, p in enumerate(self.profile_names)}
        self.reliability_ = np.array([[p.reliability[t] for t in s.task_types] for p in s.profiles])
        self.benchmark_reliability_ = np.array(
            [[(p.benchmark_reliability or p.reliability)[t] for t in s.task_types] for p in s.profiles])
        self.cost_usd_ = np.array([p.true_cost_usd for p in s.profiles], dtype=np.float64)
        self.latency_ms_ = np.array([p.true_latency_ms for p in s.profiles], dtype=np.float64)
        self.joins_at_ = np.array([p.joins_at for p in s.profiles], dtype=np.int64)
        self.error_rate_ = np.array([p.error_rate for p in s.profiles], dtype=np.float64)
        self._fails = bool(s.outages) or bool((self.error_rate_ > 0).any())
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

    def failure_probability(self, step: np.ndarray) -> np.ndarray:
        """Probability that a call of each profile fails at each request index: array (n, n_profiles).

        >>> from banditroute.sim import Scenario
        >>> sim = Simulator(Scenario.default(n_requests=1000, outage=True), seed=0)
        >>> sim.failure_probability(np.array([279, 280, 291, 292]))[:, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
        """
        step = np.asarray(step)
        fail = np.broadcast_to(self.error_rate_, (step.shape[0], self.error_rate_.shape[0])).copy()
        for o in self.scenario.outages:
            fail[(step >= o.start) & (step < o.stop), self._profile_index[o.profile]] = o.error_rate
        return fail

    def _answers(self, step: np.ndarray) -> np.ndarray | float:
        """Probability that a call answers (does not fail): (n, n_profiles), or 1.0 when nothing fails."""
        return 1.0 - self.failure_probability(step) if self._fails else 1.0

    def pass_probability(self, step: np.ndarray, task: np.ndarray) -> np.ndarray:
        """Probability that each profile's answer passes the verifier: array (n, n_profiles).

        Binary quality: the reliability; graded: ``P(Beta(4 rel, 4 (1 - rel)) >= threshold)``;
        times the probability that the call does not fail (a failed call never passes).
        """
        if self.verifier is None:
            raise ConfigError("verifier", None, "must be set (Simulator(..., verifier=Verifier()))")
        rel = self.reliability(step, task)
        if self.scenario.quality == "binary":
            return rel * self._answers(step)
        from scipy.special import betainc

        a, b = np.maximum(4.0 * rel, 1e-9), np.maximum(4.0 * (1.0 - rel), 1e-9)
        return (1.0 - betainc(a, b, self.verifier.threshold)) * self._answers(step)

    def expected_reward(self, batch: RequestBatch, objective) -> np.ndarray:
        """``E[reward | profile, request]``: array (n, n_profiles), NaN where a profile is absent.

        ``objective`` is anything with weights ``quality``, ``cost`` and ``latency``
        (:class:`banditroute.Objective`); reward = w_q*quality - w_c*cost_usd - w_l*latency_ms
        (a failed call's quality is 0).
        """
        r = (batch.prompt_tokens / self.scenario.mean_prompt_tokens)[:, None]
        value = (objective.quality * self.reliability(batch.step, batch.task) * self._answers(batch.step)
                 - objective.cost * self.cost_usd_[None, :] * r
                 - objective.latency * self.latency_ms_[None, :] * (1.0 + r) / 2.0)
        return np.where(self.available(batch.step), value, np.nan)

    def expected_reward_table(self, step: int, objective) -> np.ndarray:
        """Expected reward at mean cost and latency per (profile, task type) at ``step``:
        array (n_profiles, n_task_types), NaN for absent profiles."""
        tasks = np.arange(len(self.task_types))
        steps = np.full(tasks.size, step)
        rel = (self.reliability(steps, tasks) * self._answers(steps)).T
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
        return self._sample(batch, profile, tickets, self._rng_outcomes, self._rng_fail)

    def _sample(self, batch: RequestBatch, profile, tickets, rng: np.random.Generator,
                rng_fail: np.random.Generator) -> Outcomes:
        profile = np.asarray(profile, dtype=np.int64)
        if profile.shape != batch.step.shape:
            raise ConfigError("profile", profile.shape, f"must have shape {batch.step.shape}")
        absent = ~self.available(batch.step)[np.arange(len(batch)), profile]
        if absent.any():
            i = int(np.argmax(absent))
            raise ConfigError("profile", self.profile_names[profile[i]],
                              f"does not exist yet at request {int(batch.step[i])}")
        s, n = self.scenario, len(batch)
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
        error = np.full(n, None, dtype=object)
        if self._fails:  # drawn after the answers, from a stream of their own
            failed = rng_fail.random(n) < self.failure_probability(batch.step)[np.arange(n), profile]
            if failed.any():
                quality = np.where(failed, 0.0, quality)
                error[failed] = [self._error_kind(k, st) for k, st in
                                 zip(profile[failed].tolist(), batch.step[failed].tolist())]
        return Outcomes(tickets=tickets, step=batch.step, profile=profile, quality=quality,
                        cost_usd=cost, latency_ms=latency, error=error)

    def _error_kind(self, k: int, step: int) -> str:
        """The kind of a failed call of profile ``k`` at request ``step``: its outage's, else "server_error"."""
        for o in self.scenario.outages:
            if o.start <= step < o.stop and self._profile_index[o.profile] == k:
                return o.error
        return "server_error"

    def submit(self, batch: RequestBatch, profile: np.ndarray, *, tickets) -> Outcomes:
        """Execute the chosen profiles and queue the outcomes until their delay has elapsed.

        The outcome of request ``s`` with delay ``d`` is delivered by :meth:`poll` once
        ``clock_ > s + d``. Returns the outcomes (for bookkeeping; a router should learn
        only from :meth:`poll`).
        """
        out = self.sample_outcomes(batch, profile, tickets=tickets)
        self._queue(batch, out)
        return out

    def _queue(self, batch: RequestBatch, out: Outcomes) -> None:
        arrival = batch.step + batch.delay_requests + 1
        if self._pending is None:
            self._pending = (arrival, out)
        else:
            old_arrival, old = self._pending
            self._pending = (np.concatenate([old_arrival, arrival]), _concat(old, out))

    def cascade(self, batch: RequestBatch, first: Outcomes, router) -> Cascade:
        """Verify the first answers of a submitted batch and escalate the failed ones.

        ``first`` is what :meth:`submit` returned for ``batch`` (its ``tickets`` are the
        router's decision ids). Each failed answer is escalated with
        ``router.escalate(id, reason=verifier.reason)`` (a failed call with its error kind as the
        reason: ``reason="server_error"``); the child's profile is executed on the
        same request (queued with the request's delay, after its parent) and verified, and so
        on, up to ``router.config.max_escalations`` escalations per request, or until no untried
        profile is left (the router raises :class:`~banditroute.errors.NoFeasibleProfileError`).
        The caller records every outcome it polls, children included. Adds the batch to
        ``cascade_stats_`` and returns it.

        >>> import banditroute as br
        >>> sim = Simulator(Scenario.default().stationary(), seed=0, verifier=Verifier())
        >>> router = br.Router([br.Profile(n) for n in sim.profile_names], task_types=sim.task_types, seed=0)
        >>> batch = sim.next_requests(50)
        >>> ds = router.decide_batch(batch.contexts())
        >>> first = sim.submit(batch, [sim.profile_names.index(d.profile) for d in ds], tickets=[d.id for d in ds])
        >>> c = sim.cascade(batch, first, router)
        >>> bool((c.passed >= c.first_passed).all()), int(c.n_calls.sum()) == 50 + len(c.children)
        (True, True)
        """
        if self.verifier is None:
            raise ConfigError("verifier", None, "must be set (Simulator(..., verifier=Verifier())) to run a cascade")
        passes = self.verifier.passes
        first_passed = passes(first.quality)
        passed, calls = first_passed.copy(), np.ones(len(batch), dtype=np.int64)
        cost, latency = first.cost_usd.astype(np.float64), first.latency_ms.astype(np.float64)
        rows, parents, errors = np.flatnonzero(~passed), first.tickets[~passed], first.error[~passed]
        children, exhausted = [], 0
        for _ in range(router.config.max_escalations):
            kept, ids, ks = [], [], []
            for i, parent, error in zip(rows.tolist(), parents.tolist(), errors.tolist()):
                try:
                    child = router.escalate(parent, reason=error or self.verifier.reason)
                except NoFeasibleProfileError:  # every profile tried (or none left that fits)
                    exhausted += 1
                    continue
                if child.profile not in self._profile_index:
                    raise ConfigError("router.profiles", child.profile, "must be profiles of the scenario")
                kept.append(i)
                ids.append(child.id)
                ks.append(self._profile_index[child.profile])
            if not kept:
                break
            idx = np.array(kept, dtype=np.int64)
            sub = _take_batch(batch, idx)
            out = self._sample(sub, np.array(ks), np.array(ids, dtype=object), self._rng_cascade,
                               self._rng_cascade_fail)
            self._queue(sub, out)
            children.append(out)
            calls[idx] += 1
            cost[idx] += out.cost_usd
            latency[idx] += out.latency_ms
            ok = passes(out.quality)
            passed[idx] = ok
            rows, parents, errors = idx[~ok], out.tickets[~ok], out.error[~ok]
        done = _empty_outcomes()
        for out in children:
            done = _concat(done, out)
        result = Cascade(first_passed=first_passed, passed=passed, n_calls=calls, cost_usd=cost,
                         first_cost_usd=first.cost_usd.astype(np.float64), latency_ms=latency, children=done,
                         n_exhausted=exhausted)
        self.cascade_stats_.add(result)
        return result

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
