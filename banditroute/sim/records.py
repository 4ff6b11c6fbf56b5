"""The records a :class:`~banditroute.sim.simulator.Simulator` hands out, as arrays.

:class:`RequestBatch` (consecutive requests), :class:`Outcomes` (what executing them gave)
and :class:`Benchmark` (a pre-deployment benchmark and its static routing table). Every array
has one entry per request (shape ``(n,)``), except ``Benchmark.mean_reward``.

>>> import numpy as np
>>> batch = RequestBatch(step=np.arange(2), task=np.array([0, 1]), prompt_tokens=np.array([10, 20]),
...                      tenant=np.array([0, 0]), delay_requests=np.zeros(2, dtype=int),
...                      task_types=("chat", "code"), tenants=("acme",))
>>> len(batch), batch.contexts()[1]
(2, {'task_type': 'code', 'prompt_tokens': 20, 'tenant': 'acme'})
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RequestBatch", "Outcomes", "Benchmark"]


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
    """Outcomes as arrays of shape (n,); ``tickets`` are the caller's ids (decision ids).

    ``error`` (an object array) is the kind of a failed call (``"server_error"``: the provider
    answered nothing, ``quality`` is 0) and None for an answered one.
    """

    tickets: np.ndarray
    step: np.ndarray
    profile: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    latency_ms: np.ndarray
    error: np.ndarray

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


_OUTCOME_FIELDS = ("tickets", "step", "profile", "quality", "cost_usd", "latency_ms", "error")


def _select(out: Outcomes, idx: np.ndarray) -> Outcomes:
    return Outcomes(**{f: getattr(out, f)[idx] for f in _OUTCOME_FIELDS})


def _take_batch(batch: RequestBatch, idx: np.ndarray) -> RequestBatch:
    """The requests ``idx`` of ``batch`` (same steps, tasks, sizes and delays)."""
    return RequestBatch(step=batch.step[idx], task=batch.task[idx], prompt_tokens=batch.prompt_tokens[idx],
                        tenant=batch.tenant[idx], delay_requests=batch.delay_requests[idx],
                        task_types=batch.task_types, tenants=batch.tenants)


def _concat(a: Outcomes, b: Outcomes) -> Outcomes:
    return Outcomes(**{f: np.concatenate([getattr(a, f), getattr(b, f)]) for f in _OUTCOME_FIELDS})


def _empty_outcomes() -> Outcomes:
    e = np.empty(0)
    return Outcomes(tickets=np.empty(0, dtype=object), step=e.astype(np.int64),
                    profile=e.astype(np.int64), quality=e, cost_usd=e, latency_ms=e, error=np.empty(0, dtype=object))
