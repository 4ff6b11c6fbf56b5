"""Counters and a latency histogram of one service replica, rendered as Prometheus text.

Each replica (each worker process) counts its own traffic; every series carries a
``replica`` label (the replica's writer id) so a scraper can tell workers apart.

>>> m = Metrics(["small", "large"], replica="w1")
>>> m.decision("small", 0.003)
>>> m.outcome("applied")
>>> m.error(422, "invalid_request")
>>> text = m.render()
>>> 'banditroute_decisions_total{replica="w1",profile="small"} 1' in text
True
>>> 'banditroute_profile_share{replica="w1",profile="small"} 1' in text
True
>>> 'banditroute_decision_latency_seconds_bucket{replica="w1",le="0.005"} 1' in text
True
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable

__all__ = ["Metrics", "LATENCY_BUCKETS_S"]

#: Upper bounds (seconds) of the decision latency histogram; +Inf is implicit.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 1.0)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Counters of decisions, outcomes and errors, and a decision latency histogram.

    Parameters
    ----------
    profiles : iterable of str
        Profile names (each gets a series even before its first decision).
    replica : str
        Value of the ``replica`` label.

    Notes
    -----
    Not thread-safe by design: the service updates it from its event loop only.
    """

    def __init__(self, profiles: Iterable[str], *, replica: str):
        self.replica = replica
        self.decisions = Counter({p: 0 for p in profiles})
        self.outcomes: Counter = Counter()
        self.errors: Counter = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0

    def decision(self, profile: str, seconds: float) -> None:
        """Count one acknowledged decision and its end-to-end latency (request to durable ack)."""
        self.decisions[profile] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds

    def outcome(self, status: str) -> None:
        """Count one acknowledged outcome by its status (applied, duplicate, late)."""
        self.outcomes[status] += 1

    def error(self, status: int, code: str) -> None:
        """Count one error response."""
        self.errors[(status, code)] += 1

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """Prometheus text exposition (version 0.0.4); ``gauges`` adds (name, help, value) series
        (typed counter when the name ends in ``_total``)."""
        r = f'replica="{_escape(self.replica)}"'
        out = ["# HELP banditroute_decisions_total Decisions acknowledged, by profile.",
               "# TYPE banditroute_decisions_total counter"]
        out += [f'banditroute_decisions_total{{{r},profile="{_escape(p)}"}} {n}' for p, n in self.decisions.items()]
        total = sum(self.decisions.values())
        out += ["# HELP banditroute_profile_share Share of this replica's decisions that went to each profile.",
                "# TYPE banditroute_profile_share gauge"]
        out += [f'banditroute_profile_share{{{r},profile="{_escape(p)}"}} {_fmt(n / total if total else 0.0)}'
                for p, n in self.decisions.items()]
        out += ["# HELP banditroute_outcomes_total Outcomes acknowledged, by status.",
                "# TYPE banditroute_outcomes_total counter"]
        out += [f'banditroute_outcomes_total{{{r},status="{_escape(s)}"}} {n}'
                for s, n in sorted(self.outcomes.items())]
        out += ["# HELP banditroute_errors_total Error responses, by HTTP status and error code.",
                "# TYPE banditroute_errors_total counter"]
        out += [f'banditroute_errors_total{{{r},status="{s}",code="{_escape(c)}"}} {n}'
                for (s, c), n in sorted(self.errors.items())]
        out += ["# HELP banditroute_decision_latency_seconds Decide requests, from arrival to durable acknowledgement.",
                "# TYPE banditroute_decision_latency_seconds histogram"]
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS_S, "+Inf"), self.buckets):
            cumulative += n
            le = bound if isinstance(bound, str) else repr(bound)
            out.append(f'banditroute_decision_latency_seconds_bucket{{{r},le="{le}"}} {cumulative}')
        out.append(f"banditroute_decision_latency_seconds_sum{{{r}}} {_fmt(self.latency_sum_s)}")
        out.append(f"banditroute_decision_latency_seconds_count{{{r}}} {cumulative}")
        for name, help_text, value in gauges:
            kind = "counter" if name.endswith("_total") else "gauge"
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{r}}} {_fmt(value)}"]
        return "\n".join(out) + "\n"
