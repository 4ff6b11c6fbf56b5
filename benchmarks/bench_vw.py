"""Thompson-sampling router vs the VW policy (squarecb, epsilon-greedy) on the embedded simulator.

Each policy runs behind the same Router API (logging off) on the same simulated traffic (same
simulator seed, so the same requests): requests arrive one at a time, ``decide()`` is timed,
outcomes come back with the simulator's delays and are ``record()``-ed. Reported: mean
expected reward per request (under the demo objective), cumulative regret against the oracle
that knows every profile's expected reward for the request, and the latency of ``decide()``
(p50 / p99, microseconds). The default scenario has a degradation at 40% of the run and a new
profile at 70% (``--stationary`` removes both).

``--offline`` instead logs a Thompson router (exploration 0.1) on the stationary scenario,
exports the logs as DSJSON, trains VW ``--cb_adf`` on the first 60% of the file through the
binding and compares, on the last 40%, the SNIPS value of its greedy policy with the uniform
policy's; and compares DR with the VW reward model against DR with scikit-learn's
HistGradientBoostingRegressor (target: always the cheapest profile), both cross-fitted.

Run: python benchmarks/bench_vw.py [--requests 20000] [--seeds 0 1 2] [--stationary] [--json out.json]
     python benchmarks/bench_vw.py --offline [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import banditroute as br
from banditroute.sim import Scenario, Simulator
from banditroute.policies.vw import VWConfig, VWPolicy

OBJECTIVE = br.Objective(quality=1.0, cost=10.0, latency=2e-5)


def policies(exploration: float):
    return {
        "thompson": lambda profiles, seed: br.Router(profiles, exploration=exploration, **common(seed)),
        "vw-squarecb": lambda profiles, seed: br.Router(
            profiles, learner=VWPolicy(profiles, config=VWConfig(exploration="squarecb"), seed=seed),
            exploration=0.0, **common(seed)),
        "vw-epsilon": lambda profiles, seed: br.Router(
            profiles, learner=VWPolicy(profiles, config=VWConfig(exploration="epsilon", epsilon=0.05), seed=seed),
            exploration=0.0, **common(seed)),
    }


def common(seed):
    return {"task_types": list(Scenario.default().task_types), "objective": OBJECTIVE, "log_dir": None,
            "seed": seed}


def run(make, scenario, n, seed):
    sim = Simulator(scenario, seed=seed)
    specs = {p.name: p for p in scenario.profiles}

    def profile(name):
        return br.Profile(name, cost_usd=specs[name].cost_usd, latency_ms=specs[name].latency_ms)

    router = make([profile(p.name) for p in scenario.profiles if p.joins_at == 0], seed)
    index = {name: k for k, name in enumerate(sim.profile_names)}
    got = np.empty(n)
    best = np.empty(n)
    times = np.empty(n)
    for step in range(n):
        for name in sim.joining(step, step + 1):
            router.add_profile(profile(name))
        arrived = sim.poll()
        for t, q, c, lat in zip(arrived.tickets.tolist(), arrived.quality.tolist(), arrived.cost_usd.tolist(),
                                arrived.latency_ms.tolist()):
            router.record(t, quality=q, cost_usd=c, latency_ms=lat)
        batch = sim.next_requests(1)
        context = batch.contexts()[0]
        start = time.perf_counter()
        d = router.decide(context)
        times[step] = time.perf_counter() - start
        k = index[d.profile]
        sim.submit(batch, np.array([k]), tickets=[d.id])
        expected = sim.expected_reward(batch, OBJECTIVE)[0]
        got[step] = sum(p * expected[index[name]] for name, p in d.probabilities.items())
        best[step] = np.nanmax(expected)
    us = times * 1e6
    return {"mean_reward": float(got.mean()), "regret": float((best - got).sum()),
            "regret_last_20pct": float((best - got)[int(0.8 * n):].sum()),
            "decide_p50_us": float(np.median(us)), "decide_p99_us": float(np.percentile(us, 99))}


def offline(n, seed=0) -> dict:
    import tempfile
    from pathlib import Path

    from sklearn.ensemble import HistGradientBoostingRegressor

    import ope
    from banditroute.policies import vw_binding as vw
    from banditroute.logs.dsjson import export_dsjson
    from ope.dsjson import feedback_from_dsjson
    from ope.vw_reward import VWRegressor

    scenario = Scenario.default(n_requests=n).stationary()
    sim = Simulator(scenario, seed=seed)
    profiles = [br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in scenario.profiles]
    tmp = Path(tempfile.mkdtemp())
    router = br.Router(profiles, exploration=0.1, **{**common(seed), "log_dir": str(tmp / "logs")})
    for _ in range(n // 500):
        batch = sim.next_requests(500)
        decisions = router.decide_batch(batch.contexts())
        out = sim.sample_outcomes(batch, np.array([router.profiles.index(d.profile) for d in decisions]))
        for d, q, c, lat in zip(decisions, out.quality.tolist(), out.cost_usd.tolist(), out.latency_ms.tolist()):
            router.record(d.id, quality=q, cost_usd=c, latency_ms=lat)
    router.close()
    start = time.perf_counter()
    exported = export_dsjson(tmp / "logs", tmp / "events.json", profiles=profiles)
    export_s = time.perf_counter() - start
    lines = (tmp / "events.json").read_text().splitlines()
    cut = int(0.6 * len(lines))
    ws = vw.workspace(["--cb_adf", "--interactions", "sa", "--interactions", "ta", "--random_seed", str(seed)])
    parser = vw.dsjson_parser(ws)
    start = time.perf_counter()
    for line in lines[:cut]:
        ws.learn_one(parser.parse_json(line))
    train_s = time.perf_counter() - start
    fb = feedback_from_dsjson(lines[cut:])
    greedy, uniform = np.zeros((fb.n_rounds, fb.n_actions)), np.zeros((fb.n_rounds, fb.n_actions))
    for i, line in enumerate(lines[cut:]):
        multi = [fb.action_names.index(m["a"]["id"]) for m in json.loads(line)["c"]["_multi"]]
        scores = ws.predict_one(parser.parse_json(line))
        greedy[i, multi[min(scores, key=lambda s: s[1])[0]]] = 1.0
        uniform[i, multi] = 1.0 / len(multi)
    est = {name: ope.SNIPS().estimate(fb, target, seed=seed) for name, target in
           (("vw_cb_adf_greedy", greedy), ("uniform", uniform))}
    full = feedback_from_dsjson(tmp / "events.json")
    target = ope.one_hot(np.zeros(full.n_rounds, dtype=int), full.n_actions)
    dr = {}
    for name, model in (("dr_sklearn_hgb", HistGradientBoostingRegressor(max_iter=100)),
                        ("dr_vw", VWRegressor(passes=3))):
        start = time.perf_counter()
        e = ope.DR(reward_model=model, n_folds=3).estimate(full, target, seed=seed)
        dr[name] = {"value": e.value, "ci": [e.ci_low, e.ci_high], "seconds": time.perf_counter() - start}
    return {"rounds": exported.n_written, "export_s": export_s, "train_rows": cut, "train_s": train_s,
            **{k: {"value": v.value, "ci": [v.ci_low, v.ci_high]} for k, v in est.items()}, **dr}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--exploration", type=float, default=0.02, help="Thompson router's floor (default 0.02)")
    parser.add_argument("--stationary", action="store_true")
    parser.add_argument("--offline", action="store_true", help="the DSJSON / reward-model comparison instead")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.offline:
        out = offline(args.requests, args.seeds[0])
        print(json.dumps(out, indent=2))
        return out
    scenario = Scenario.default(n_requests=args.requests)
    if args.stationary:
        scenario = scenario.stationary()
    results = {}
    for name, make in policies(args.exploration).items():
        runs = [run(make, scenario, args.requests, seed) for seed in args.seeds]
        results[name] = {key: [r[key] for r in runs] for key in runs[0]}
        summary = {key: f"{np.mean(v):.4f} +/- {np.std(v, ddof=1) if len(v) > 1 else 0:.4f}"
                   for key, v in results[name].items()}
        print(name, json.dumps(summary), flush=True)
    out = {"requests": args.requests, "seeds": args.seeds, "stationary": args.stationary,
           "python": platform.python_version(), "results": results}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
