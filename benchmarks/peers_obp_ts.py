"""Open Bandit Pipeline's BernoulliTS propensities, timed in OBP's own venv (for bench_peers.py).

Reads a JSON spec on stdin: ``{"alpha": [...], "beta": [...], "n_sim": 1024, "reps": 10,
"runs": 5, "seed": 0}`` (the Beta posteriors of the arms, pseudo-counts included). For each run
it builds ``obp.policy.BernoulliTS(n_actions, alpha=alpha, beta=beta, random_state=seed + run)``
and times ``compute_batch_action_dist(n_rounds=1, n_sim=n_sim)`` ``reps`` times (after one
warm-up call). In the same process, as the same-process reference, it times banditroute's
exact pmf for the same posteriors (a Router whose evidence is set to the same counts): from the
existing bank of ``n_sim`` draws, and after redrawing the whole bank. Prints one JSON object.

Run: /work/venv-obp/bin/python benchmarks/peers_obp_ts.py < spec.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repo's own banditroute, whatever the venv's editable install resolves to

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import obp  # noqa: E402
from obp.policy import BernoulliTS  # noqa: E402

import banditroute as br  # noqa: E402


def timed_us(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - start) / 1e3)
    return out


def main() -> None:
    spec = json.load(sys.stdin)
    alpha = np.asarray(spec["alpha"], dtype=np.float64)
    beta = np.asarray(spec["beta"], dtype=np.float64)
    n_sim, reps, seed = int(spec["n_sim"]), int(spec["reps"]), int(spec["seed"])
    n = alpha.size
    runs = []
    for run in range(int(spec["runs"])):
        policy = BernoulliTS(n_actions=n, alpha=alpha, beta=beta, random_state=seed + run)
        pmf = policy.compute_batch_action_dist(n_rounds=1, n_sim=n_sim)[0, :, 0]
        obp_us = timed_us(lambda: policy.compute_batch_action_dist(n_rounds=1, n_sim=n_sim), reps)

        router = br.Router([br.Profile(f"p{i}") for i in range(n)], exploration=0.0, n_draws=n_sim,
                           seed=seed + run)
        router.set_evidence((alpha - 1.0)[:, None], (beta - 1.0)[:, None])
        belief = router._belief  # (a benchmark's reach-in)

        def recompute():
            router._pipeline.clear_cache()  # (a benchmark's reach-in)
            return router.probabilities({})

        def redraw():
            belief.dirty_[:] = True
            belief.refresh()
            return router.probabilities({})

        ours_bank_us = timed_us(recompute, max(reps, 50))
        ours_redraw_us = timed_us(redraw, max(reps, 50))
        runs.append({"obp_us": statistics.median(obp_us), "ours_bank_us": statistics.median(ours_bank_us),
                     "ours_redraw_us": statistics.median(ours_redraw_us), "pmf": pmf.tolist()})
    json.dump({"obp": obp.__version__, "numpy": np.__version__, "python": platform.python_version(),
               "runs": runs}, sys.stdout)


if __name__ == "__main__":
    main()
