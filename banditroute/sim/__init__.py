"""The embedded simulator of an LLM-routing workload, and the demo that runs the main job on it.

Not part of the routing API (``import banditroute``); the demo, tests and benchmarks use it.

* :class:`Scenario` (with :class:`SimProfile`, :class:`Degradation`, :class:`Outage`): the world, and the
  built-in workloads ``Scenario.default``, ``Scenario.nonstationary``, ``Scenario.stationary``;
* :class:`Simulator`: plays a scenario from one seed, handing out :class:`RequestBatch`,
  :class:`Outcomes` and :class:`Benchmark` records;
* :class:`Verifier`: checks each simulated answer; ``Simulator.cascade`` escalates the failed
  ones through the router (a :class:`Cascade`, added up in :class:`CascadeStats`);
* :func:`run_demo`: routes simulated traffic through a Router (with the bounded onboarding
  ``DEMO_ONBOARDING`` and the cooldown ``DEMO_COOLDOWN``) and returns a :class:`DemoResult`,
  which :func:`format_summary` prints.

>>> from banditroute.sim import Scenario, Simulator
>>> sim = Simulator(Scenario.default(n_requests=100), seed=0)
>>> len(sim.next_requests(5)), sim.profile_names[:2]
(5, ('small', 'medium'))
"""

from .cascade import Cascade, CascadeStats, Verifier
from .demo import COST_AWARE_OBJECTIVE, DEMO_OBJECTIVE, run_demo
from .demo_evaluation import DEMO_GUARDRAILS
from .demo_measures import SHARE_OFF, SHARE_ON
from .demo_mechanisms import DEMO_COOLDOWN, DEMO_ONBOARDING
from .demo_result import DemoResult
from .demo_summary import format_summary
from .records import Benchmark, Outcomes, RequestBatch
from .scenario import TASK_TYPES, Degradation, Outage, Scenario, SimProfile
from .simulator import Simulator

__all__ = [
    "Scenario", "SimProfile", "Degradation", "Outage", "TASK_TYPES", "Simulator", "RequestBatch", "Outcomes", "Benchmark",
    "run_demo", "DemoResult", "format_summary", "DEMO_OBJECTIVE", "COST_AWARE_OBJECTIVE", "DEMO_GUARDRAILS",
    "SHARE_OFF", "SHARE_ON", "Verifier", "Cascade", "CascadeStats", "DEMO_ONBOARDING", "DEMO_COOLDOWN",
]
