"""What one demo run measured: :class:`DemoResult`, and its JSON form.

:func:`~banditroute.sim.demo.run_demo` returns it; :mod:`~banditroute.sim.demo_measures`
defines the phases, windows and events it holds, and
:func:`~banditroute.sim.demo_summary.format_summary` prints it.

>>> from banditroute.sim import run_demo
>>> r = run_demo(n_requests=500, seed=0, log_dir=None, progress=False, out=None)
>>> r.phase("overall")["n"], r.candidates, r.gate
(500, (), None)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DemoResult"]


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """Numbers of one demo run (all rewards are per request, in objective units).

    Attributes
    ----------
    phases : tuple of dict
        One entry per stretch between events (``stationary``, ``after degradation``,
        ``after join``) and ``overall``: ``start``, ``stop``, ``n``, ``router`` (expected),
        ``router_realised``, ``oracle``, ``static``, ``ratio_to_oracle``, ``ratio_to_static``,
        ``regret`` (sum of oracle - router over the phase).
    windows : tuple of dict
        Per window of requests: rewards, cumulative regret at its end, and ``share``
        ``{task_type: {profile: share}}``.
    degradations, onboardings : tuple of dict
        The measured events (see :mod:`~banditroute.sim.demo_measures`); ``reroute_requests`` and
        ``onboarding_requests`` are None when the threshold was never crossed. With bounded
        onboarding, an onboarding also has ``joined_at``, ``graduated_at``, ``from_log``,
        ``max_share``, ``min_outcomes`` and ``n_outcomes`` (see
        :mod:`~banditroute.sim.demo_mechanisms`).
    record_status : dict
        How many ``record()`` calls returned each status.
    candidates : tuple of dict
        Off-policy evaluation after the run (empty without logs): per policy (``logged``,
        ``cost-aware``, ``ucb``, ``static table``) and estimator, ``policy``, ``estimator``,
        ``value``, ``ci_low``, ``ci_high``, ``truth``, ``ess``.
    gate : dict or None
        The gate's verdict for the cost-aware candidate: ``candidate``, ``promote``, ``reasons``.
    report_path : str or None
        Where the HTML report was written.
    drift_events : tuple of dict
        The router's drift detections (profile, task type, change, statistic, and
        ``n_updates``, the number of outcomes applied when it fired).
    routes_path : str or None
        Where the routes file of the router that ran was written.
    beliefs : tuple of dict
        The live router's final beliefs (``Router.beliefs().to_dicts()``): what ``banditroute
        replay`` of the logs with the routes file gives back.
    shadows : tuple of str
        The shadow candidates that ran (logged with every decision).
    cascade : dict or None
        The verifier cascade (None without a verifier; see :mod:`~banditroute.sim.cascade`):
        ``first_pass_rate``, ``pass_rate`` (after escalation), ``calls_per_request``,
        ``cost_per_request_usd`` (every call), ``first_cost_per_request_usd`` (first calls
        alone), ``latency_per_request_ms``, ``n_requests``, ``n_escalations``, ``n_exhausted``
        (chains with no untried profile left), ``max_escalations`` and the verifier's ``threshold``.
    learned_costs : tuple of dict
        Per profile, the cost and latency of one call as configured, as learned by the router
        and as true in the simulator (see :mod:`~banditroute.sim.demo_measures`), the profile
        whose learned cost is furthest from its configured one first.
    failures : tuple of dict
        Per profile whose calls failed: its ``outages``, ``n_failed`` calls, ``cooldown_at``
        (the request after each cooldown event), ``n_excluded`` (requests excluded by a
        cooldown), ``availability`` at the end and the cooldown's settings (see
        :mod:`~banditroute.sim.demo_mechanisms`).
    """

    n_requests: int
    seed: int
    discount: float
    drift: bool
    exploration: float
    batch_size: int
    objective: dict
    profiles: tuple
    task_types: tuple
    static_table: dict
    phases: tuple
    windows: tuple
    degradations: tuple
    onboardings: tuple
    cumulative_regret: float
    record_status: dict
    log_dir: str | None
    wall_time_s: float
    candidates: tuple = ()
    gate: dict | None = None
    report_path: str | None = None
    evaluation_time_s: float = 0.0
    drift_events: tuple = ()
    routes_path: str | None = None
    beliefs: tuple = ()
    shadows: tuple = ()
    cascade: dict | None = None
    learned_costs: tuple = ()
    failures: tuple = ()

    def phase(self, name: str) -> dict:
        """The phase called ``name`` (``"stationary"``, ``"overall"``, ...)."""
        for p in self.phases:
            if p["name"] == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field.

        >>> import json
        >>> from banditroute.sim import run_demo
        >>> r = run_demo(n_requests=500, seed=1, log_dir=None, progress=False, out=None)
        >>> json.loads(json.dumps(r.to_dict()))["n_requests"]
        500
        """
        return _jsonable(asdict(self))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
