"""banditroute's decision path side by side with the tools users would pick instead (issue 8).

One command, one machine, the same data for everyone: 8 arms (profiles), 10 numeric request
features, a history of logged rounds (uniform logging, Bernoulli rewards) that every learner is
fitted on. Measured in every run, each peer right next to the banditroute path it anchors:

1. Per-decision latency (``time.perf_counter_ns`` around each of ``--calls`` single calls after
   a warm-up; median and p99 per call) and batch throughput (decisions/s):
   banditroute ``Router.decide()`` (Thompson, default policy, returns the exact propensity and
   the whole pmf; logging off, which is the fair comparison, and on in group-commit mode) vs
   MABWiser ``MAB(arms, LearningPolicy.ThompsonSampling()).predict()`` (an arm, no propensity);
   Vowpal Wabbit ``--cb_explore_adf --squarecb`` through vowpal-wabbit-next (build the 9 ADF
   examples from text and predict) vs banditroute's ``VWPolicy`` (alone and behind the Router).
2. Propensity cost: banditroute's exact pmf (share of the bank's M = 1024 draws each profile
   wins) vs MABWiser's TS propensity by Monte Carlo with the same M = 1024 draws, and vs Open
   Bandit Pipeline's ``BernoulliTS.compute_batch_action_dist(n_sim=1024)`` for the same Beta
   posteriors (run in OBP's venv by ``peers_obp_ts.py``), with the numerical agreement of the
   pmfs against the exact Thompson probabilities (numerical integration).
3. ``Router.record()`` (logging off) vs MABWiser ``partial_fit`` of one observation.
4. Contextual: ``Router(policy="linear")`` (LinTS over 10 features, M = 1024, exact propensity)
   ``decide()`` vs MABWiser ``LearningPolicy.LinTS()`` ``predict(one context)``.

Tables give the median over ``--runs`` runs of each run's statistic, with [min, max] across runs,
and the ratio to the peer anchor measured in the same run (median of the per-run ratios).

Run: python benchmarks/bench_peers.py [--runs 5] [--calls 5000] [--json out.json]
                                      [--obp-python /work/venv-obp/bin/python]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import polars as pl
from scipy import stats

import banditroute as br
from banditroute.policies import vw_binding as vw

try:
    from mabwiser.mab import MAB, LearningPolicy
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("bench_peers.py needs MABWiser, the anchor of most rows: pip install -e '.[bench]' "
             "(or pip install mabwiser)")

N_ARMS, N_FEATURES, N_DRAWS = 8, 10, 1024
HERE = os.path.dirname(os.path.abspath(__file__))
BARS = (  # (section, ours, anchor, minimum speed-up anchor/ours; None: informational, not a bar)
    ("propensity", "ours_pmf_bank", "mab_mc_loop", 10.0),
    ("propensity, worst case vs vectorised MC (same 8 x 1,024 Beta draws on both sides)", "ours_pmf_redraw",
     "mab_mc_vectorised", None),
    ("record", "ours_record", "mab_partial_fit", 3.0),
    ("linear", "ours_linear_decide", "mab_lints_predict", 3.0),
)


# -- data ------------------------------------------------------------------------------------
class Data:
    """The shared history and request stream (same for every learner)."""

    def __init__(self, n_history: int, n_requests: int, seed: int):
        rng = np.random.default_rng(seed)
        self.names = [f"p{i}" for i in range(N_ARMS)]
        self.features = [f"f{j}" for j in range(N_FEATURES)]
        self.profiles = [br.Profile(n, cost_usd=0.0005 * (i + 1), latency_ms=200.0 * (i + 1))
                         for i, n in enumerate(self.names)]
        base = 0.55 + 0.02 * np.arange(N_ARMS)  # close arms: the Thompson pmf is spread, not one-hot
        self.hist_x = rng.random((n_history, N_FEATURES)).round(4)
        self.hist_arm = rng.integers(0, N_ARMS, n_history)
        p = np.clip(base[self.hist_arm] + 0.2 * (self.hist_x[np.arange(n_history), self.hist_arm] - 0.5), 0, 1)
        self.hist_reward = (rng.random(n_history) < p).astype(np.int64)
        self.successes = np.bincount(self.hist_arm, weights=self.hist_reward, minlength=N_ARMS)
        self.failures = np.bincount(self.hist_arm, minlength=N_ARMS) - self.successes
        self.x = rng.random((n_requests, N_FEATURES)).round(4)
        self.contexts = [dict(zip(self.features, row)) for row in self.x.tolist()]
        self.hist_contexts = [dict(zip(self.features, row)) for row in self.hist_x.tolist()]
        self.quality = (rng.random(n_requests) < 0.6).astype(float).tolist()
        self.exact = exact_ts(1.0 + self.successes, 1.0 + self.failures)

    def shared_line(self, context) -> str:
        return "shared |s " + " ".join(f"{k}:{v}" for k, v in context.items())

    def action_lines(self) -> list[str]:
        return [f"|a id{p.name} cost_usd:{p.cost_usd:g} latency_ms:{p.latency_ms:g}" for p in self.profiles]


def ts_router(data: Data, seed: int, **kwargs) -> br.Router:
    router = br.Router(data.profiles, objective=br.Objective(quality=1.0), n_draws=N_DRAWS, seed=seed, **kwargs)
    router.set_evidence(data.successes[:, None], data.failures[:, None])  # same Beta posteriors as MABWiser
    return router


def mab_ts(data: Data, seed: int):
    mab = MAB(list(range(N_ARMS)), LearningPolicy.ThompsonSampling(), seed=seed)
    mab.fit(data.hist_arm, data.hist_reward)
    imp = mab._imp  # check the posteriors really are the same: Beta(1 + s, 1 + f)
    assert [imp.arm_to_success_count[k] for k in range(N_ARMS)] == (1 + data.successes).tolist()
    return mab


def linear_router(data: Data, seed: int) -> br.Router:
    router = br.Router(data.profiles, objective=br.Objective(quality=1.0), policy="linear", n_draws=N_DRAWS,
                       features={f: 1.0 for f in data.features}, seed=seed)
    learner, w = router.policy, np.ones(1)
    for ctx, k, r in zip(data.hist_contexts, data.hist_arm.tolist(), data.hist_reward.tolist()):
        learner.learn_task(ctx, w, k, float(r), 1.0 / N_ARMS)  # the same history as MABWiser's fit
    learner.refresh()
    return router


def mab_lints(data: Data, seed: int):
    mab = MAB(list(range(N_ARMS)), LearningPolicy.LinTS(), seed=seed)
    mab.fit(data.hist_arm, data.hist_reward, data.hist_x)
    return mab


def vw_raw(data: Data, seed: int):
    """A bare vowpal-wabbit-next workspace with VWPolicy's options, trained on the history."""
    from banditroute.policies.vw import VWConfig

    mod = vw.require()
    ws = mod.Workspace(["--quiet", *VWConfig().args(), "--random_seed", str(seed)])
    parser = mod.TextFormatParser(ws)
    actions = data.action_lines()
    for ctx, k, r in zip(data.hist_contexts, data.hist_arm.tolist(), data.hist_reward.tolist()):
        lines = [data.shared_line(ctx), *actions]
        lines[1 + k] = f"0:{-float(r)}:{1.0 / N_ARMS} " + lines[1 + k]
        ws.learn_one([parser.parse_line(line) for line in lines])
    return ws, parser, actions


def vw_policy(data: Data, seed: int):
    from banditroute.policies.vw import VWPolicy

    policy = VWPolicy(data.profiles, seed=seed)
    for ctx, k, r in zip(data.hist_contexts, data.hist_arm.tolist(), data.hist_reward.tolist()):
        policy.learn(ctx, k, float(r), 1.0 / N_ARMS)
    return policy


class _ConstantLearner:
    """A learner that costs nothing: behind the Router it measures the router's own fixed cost
    per decision with any learner (validation, masking, the floor, the draw, the Decision)."""

    pmf = np.full(N_ARMS, 1.0 / N_ARMS)

    def distribution(self, context, task_probs, feasible):
        return self.pmf

    def learn(self, context, k, reward, propensity):
        pass

    def add_profile(self, profile):
        pass


# -- timing ----------------------------------------------------------------------------------
def latency(call, args: list, warmup: int) -> dict:
    """Per-call latency of ``call(a)`` over ``args`` (after ``warmup`` calls), in µs."""
    n = len(args)
    for i in range(warmup):
        call(args[i % n])
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i, a in enumerate(args):
        start = clock()
        call(a)
        out[i] = clock() - start
    return {"median_us": float(np.median(out)) / 1e3, "p99_us": float(np.percentile(out, 99)) / 1e3}


def throughput(call, batch, n: int, warm) -> dict:
    call(warm)
    start = time.perf_counter_ns()
    call(batch)
    return {"per_s": n / ((time.perf_counter_ns() - start) / 1e9)}


def mc_pmf_loop(mab, m: int) -> np.ndarray:
    """MABWiser's TS propensity the only way its API offers: count the arms of m predict() calls."""
    return np.bincount([mab.predict() for _ in range(m)], minlength=N_ARMS) / m


def mc_pmf_vectorised(mab, m: int) -> np.ndarray:
    """The same with one predict() over m dummy rows (MABWiser draws the Betas vectorised)."""
    return np.bincount(mab.predict(np.zeros((m, 1))), minlength=N_ARMS) / m


def exact_ts(alpha: np.ndarray, beta: np.ndarray, n_grid: int = 200_001) -> np.ndarray:
    """P(arm k has the largest draw) for independent Beta posteriors, by numerical integration:
    int f_k(x) prod_{j != k} F_j(x) dx on a fine grid."""
    lo = stats.beta.ppf(1e-12, alpha, beta).min()
    hi = stats.beta.ppf(1 - 1e-12, alpha, beta).max()
    x = np.linspace(lo, hi, n_grid)
    pdf = stats.beta.pdf(x, alpha[:, None], beta[:, None])
    cdf = stats.beta.cdf(x, alpha[:, None], beta[:, None])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    out = np.array([trapezoid(pdf[k] * np.prod(np.delete(cdf, k, axis=0), axis=0), x) for k in range(alpha.size)])
    return out / out.sum()


def agreement(pmf: np.ndarray, exact: np.ndarray, m: int, n_estimates: int = 1) -> dict:
    """Largest |pmf - exact| and its size in Monte Carlo standard errors
    sqrt(n_estimates * p(1-p)/m) (floored at 1/m for arms with p ~ 0)."""
    se = np.maximum(np.sqrt(n_estimates * exact * (1 - exact) / m), 1.0 / m)
    diff = np.abs(pmf - exact)
    return {"max_abs": float(diff.max()), "max_z": float((diff / se).max()), "se_max": float(se.max())}


# -- one run ---------------------------------------------------------------------------------
def one_run(run: int, data: Data, args, tmp: str) -> dict:
    calls = data.contexts[: args.calls]
    n_slow = min(args.batch_slow, len(data.contexts))
    res: dict = {}
    seed = 1000 + run

    # 1. decision latency: Thompson sampling
    mab = mab_ts(data, seed)
    res["mab_ts_predict"] = latency(lambda _: mab.predict(), calls, args.warmup)
    router = ts_router(data, seed, log_dir=None)
    res["ours_decide"] = latency(router.decide, calls, args.warmup)

    live = ts_router(data, seed, log_dir=None)
    quality = data.quality
    for i in range(args.warmup):
        live.record(live.decide(calls[i % len(calls)]).id, quality=quality[i % len(quality)])
    times = np.empty(len(calls), dtype=np.int64)
    for i, c in enumerate(calls):  # an outcome after every decision: the bank changes every 16
        start = time.perf_counter_ns()
        d = live.decide(c)
        times[i] = time.perf_counter_ns() - start
        live.record(d.id, quality=quality[i])
    res["ours_decide_live"] = {"median_us": float(np.median(times)) / 1e3,
                               "p99_us": float(np.percentile(times, 99)) / 1e3}

    logged = ts_router(data, seed, log_dir=os.path.join(tmp, f"run{run}"), durability="group")
    res["ours_decide_logged"] = latency(logged.decide, calls, args.warmup)
    logged.close()

    # 1. decision latency: Vowpal Wabbit
    if args.vw:
        ws, parser, actions = vw_raw(data, seed)

        def vw_build_predict(ctx):
            return ws.predict_one([parser.parse_line(data.shared_line(ctx)), *map(parser.parse_line, actions)])

        res["vw_raw_predict"] = latency(vw_build_predict, calls, args.warmup)
        policy = vw_policy(data, seed)
        mask = np.ones(N_ARMS, dtype=bool)
        res["ours_vwpolicy_distribution"] = latency(lambda c: policy.distribution(c, None, mask), calls,
                                                    args.warmup)
        vw_router = br.Router(data.profiles, learner=policy, exploration=0.0, seed=seed)
        res["ours_vw_router_decide"] = latency(vw_router.decide, calls, args.warmup)

    # 1. batch throughput
    n_batch = min(args.batch, len(data.contexts))
    res["mab_ts_batch"] = throughput(mab.predict, data.x[:n_batch], n_batch, data.x[:100])
    res["ours_batch_rows"] = throughput(router.decide_batch, data.contexts[:n_batch], n_batch, data.contexts[:100])
    frame = pl.DataFrame(data.contexts[:n_batch])
    res["ours_batch_frame"] = throughput(router.decide_batch, frame, n_batch, frame.head(100))
    if args.vw:
        res["vw_raw_loop"] = throughput(lambda cs: [vw_build_predict(c) for c in cs], data.contexts[:n_slow],
                                        n_slow, data.contexts[:100])
        res["ours_vw_router_batch"] = throughput(vw_router.decide_batch, data.contexts[:n_slow], n_slow,
                                                 data.contexts[:100])

    # 2. propensity: one pmf vector with M = 1024 draws
    exact = data.exact
    ctx = calls[0]
    res["mab_mc_loop"] = latency(lambda _: mc_pmf_loop(mab, N_DRAWS), [None] * args.mc_reps, 1)
    res["mab_mc_vectorised"] = latency(lambda _: mc_pmf_vectorised(mab, N_DRAWS), [None] * 50, 5)
    res["ours_pmf_cached"] = latency(router.probabilities, [ctx] * 500, 50)

    def recompute(c):
        router._pipeline.clear_cache()  # (a benchmark's reach-in) the pmf from the bank, as decide() computes it after an update
        return router.probabilities(c)

    def redraw(c):
        router._belief.dirty_[:] = True  # (a benchmark's reach-in)  # every cell changed: M fresh Beta draws per profile, then the pmf
        router._belief.refresh()
        return router.probabilities(c)

    res["ours_pmf_bank"] = latency(recompute, [ctx] * 500, 50)
    res["ours_pmf_redraw"] = latency(redraw, [ctx] * 200, 20)
    pure = ts_router(data, seed, exploration=0.0)
    ours_pmf = np.array(list(pure.probabilities(ctx).values()))
    mab_pmf = mc_pmf_vectorised(mab, N_DRAWS)
    res["agreement"] = {"exact": exact.tolist(), "ours_pmf": ours_pmf.tolist(), "mab_mc_pmf": mab_pmf.tolist(),
                        "ours_vs_exact": agreement(ours_pmf, exact, N_DRAWS),
                        "mab_mc_vs_exact": agreement(mab_pmf, exact, N_DRAWS)}

    # 3. learning from one outcome
    rec = ts_router(data, seed, log_dir=None)
    ids = [d.id for d in rec.decide_batch(calls)]
    warm_ids = [d.id for d in rec.decide_batch(calls[: args.warmup])]
    arms = [int(d.profile[1:]) for d in router.decide_batch(calls)]
    for i, did in enumerate(warm_ids):
        rec.record(did, quality=quality[i])
    res["ours_record"] = latency(lambda a: rec.record(a[0], quality=a[1]), list(zip(ids, quality)), 0)
    rewards = [int(q) for q in quality]
    res["mab_partial_fit"] = latency(lambda a: mab.partial_fit([a[0]], [a[1]]), list(zip(arms, rewards)),
                                     args.warmup)

    # 4. contextual: LinTS, 10 features, 8 arms
    lints = mab_lints(data, seed)
    rows = [data.x[i:i + 1] for i in range(len(calls))]
    res["mab_lints_predict"] = latency(lints.predict, rows, args.warmup)
    lin = linear_router(data, seed)
    res["ours_linear_decide"] = latency(lin.decide, calls, args.warmup)
    learner, w, mask = lin.policy, np.ones(1), np.ones(N_ARMS, dtype=bool)
    res["ours_linear_distribution"] = latency(lambda c: learner.distribution(c, w, mask), calls, args.warmup)
    stub = br.Router(data.profiles, learner=_ConstantLearner(), seed=seed)
    res["ours_stub_learner_decide"] = latency(stub.decide, calls, args.warmup)
    res["mab_lints_batch"] = throughput(lints.predict, data.x[:n_batch], n_batch, data.x[:100])
    res["ours_linear_batch"] = throughput(lin.decide_batch, data.contexts[:n_slow], n_slow, data.contexts[:100])
    frame = pl.DataFrame(data.x[:n_batch], schema=data.features, orient="row")
    res["ours_linear_batch_frame"] = throughput(lin.decide_batch, frame, n_batch, frame.head(100))

    # 5. a wide context: d = 256 numeric features (an embedding), 8 profiles, M = 1,024
    wide = wide_linear_router(data, seed)
    rng = np.random.default_rng(seed)
    wide_calls = [dict(zip(WIDE_FEATURES, row)) for row in rng.standard_normal((len(calls), WIDE_DIM)).tolist()]
    res["ours_linear256_decide"] = latency(wide.decide, wide_calls, args.warmup)
    res["linear256_state_bytes"] = {"bytes": int(sum(a.nbytes for a in wide.policy.state_arrays().values()))}
    return res


WIDE_DIM = 256
WIDE_FEATURES = [f"e{j}" for j in range(WIDE_DIM)]


def wide_linear_router(data: Data, seed: int, n_history: int = 2000) -> br.Router:
    """``policy="linear"`` over a 256-dimensional embedding, trained on ``n_history`` outcomes."""
    router = br.Router(data.profiles, objective=br.Objective(quality=1.0), policy="linear", n_draws=N_DRAWS,
                       features={f: 1.0 for f in WIDE_FEATURES}, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_history, WIDE_DIM)) / np.sqrt(WIDE_DIM)
    arms = rng.integers(0, N_ARMS, n_history)
    reward = (rng.random(n_history) < 0.5 + 0.3 * np.tanh(x[np.arange(n_history), arms])).astype(float)
    learner, w = router.policy, np.ones(1)
    for row, k, r in zip(x.tolist(), arms.tolist(), reward.tolist()):
        learner.learn_task(dict(zip(WIDE_FEATURES, row)), w, k, r, 1.0 / N_ARMS)
    learner.refresh()
    return router


# -- OBP (its own venv) ----------------------------------------------------------------------
def run_obp(args, data: Data) -> dict | None:
    if not args.obp_python or not os.path.exists(args.obp_python):
        print(f"OBP rows skipped: no OBP venv at {args.obp_python} (bash benchmarks/setup_obp_venv.sh, "
              "or --obp-python PATH)", file=sys.stderr)
        return None
    spec = {"alpha": (1.0 + data.successes).tolist(), "beta": (1.0 + data.failures).tolist(), "n_sim": N_DRAWS,
            "reps": args.mc_reps, "runs": args.runs, "seed": 2000}
    proc = subprocess.run([args.obp_python, os.path.join(HERE, "peers_obp_ts.py")], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"OBP rows skipped: {args.obp_python} peers_obp_ts.py failed (exit code {proc.returncode})"
              f"{':' if tail else ''}\n{tail}", file=sys.stderr)
        return None
    out = json.loads(proc.stdout)
    exact = data.exact
    for r in out["runs"]:
        pmf = np.asarray(r["pmf"])
        r["obp_vs_exact"] = agreement(pmf, exact, N_DRAWS)
    return out


# -- report ----------------------------------------------------------------------------------
LABELS = {
    "mab_ts_predict": "MABWiser TS `predict()` (an arm, no propensity) **[anchor]**",
    "ours_decide": "banditroute `decide()` TS, logging off (exact propensity + pmf)",
    "ours_decide_live": "banditroute `decide()` TS, logging off, `record()` after every decision",
    "ours_decide_logged": "banditroute `decide()` TS, logging on (group commit)",
    "vw_raw_predict": "VW squarecb: build 9 ADF examples from text + `predict_one` **[anchor]**",
    "ours_vwpolicy_distribution": "banditroute `VWPolicy.distribution()` (hashed, reused examples)",
    "ours_vw_router_decide": "banditroute `Router(learner=VWPolicy).decide()`",
    "mab_ts_batch": "MABWiser TS `predict(contexts)` **[anchor]**",
    "ours_batch_rows": "banditroute `decide_batch(list of dicts)`",
    "ours_batch_frame": "banditroute `decide_batch(polars DataFrame)`",
    "vw_raw_loop": "VW squarecb, build + predict per row",
    "ours_vw_router_batch": "banditroute `Router(learner=VWPolicy).decide_batch(list)`",
    "mab_lints_batch": "MABWiser LinTS `predict(contexts)` **[anchor]**",
    "ours_linear_batch": "banditroute linear `decide_batch(list)`",
    "ours_linear_batch_frame": "banditroute linear `decide_batch(polars DataFrame)` (vectorised, exact propensity)",
    "ours_linear256_decide": "banditroute `Router(policy=\"linear\").decide()`, d = 256, 8 profiles, M = 1,024",
    "mab_mc_loop": "MABWiser TS, Monte Carlo: 1,024 `predict()` calls **[anchor]**",
    "mab_mc_vectorised": "MABWiser TS, Monte Carlo: one `predict()` over 1,024 dummy rows",
    "ours_pmf_cached": "banditroute `probabilities()` (cached pmf, bank unchanged)",
    "ours_pmf_bank": "banditroute pmf from the bank (after an update: cache miss)",
    "ours_pmf_redraw": "banditroute pmf after redrawing the whole bank (8 x 1,024 Beta draws)",
    "mab_partial_fit": "MABWiser TS `partial_fit` of one observation **[anchor]**",
    "ours_record": "banditroute `record()` (logging off; bank refresh every 16)",
    "mab_lints_predict": "MABWiser LinTS `predict(one context)` (no propensity) **[anchor]**",
    "ours_linear_decide": "banditroute `Router(policy=\"linear\").decide()` (exact propensity)",
    "ours_linear_distribution": "of which `LinearTS.distribution()` (the pmf over 1,024 draws)",
    "ours_stub_learner_decide": "diagnostic: `Router(learner=<constant pmf>).decide()` (router's own cost)",
}
SECTIONS = [
    ("1. Per-decision latency, Thompson sampling (8 arms; µs per call)", "latency",
     [("mab_ts_predict", ["ours_decide", "ours_decide_live", "ours_decide_logged"]),
      ("vw_raw_predict", ["ours_vwpolicy_distribution", "ours_vw_router_decide"])]),
    ("1b. Batch throughput (decisions/s; ratio = ours / anchor, > 1 is faster)", "throughput",
     [("mab_ts_batch", ["ours_batch_rows", "ours_batch_frame"]),
      ("vw_raw_loop", ["ours_vw_router_batch"]),
      ("mab_lints_batch", ["ours_linear_batch", "ours_linear_batch_frame"])]),
    ("2. Propensity: one pmf vector with M = 1,024 draws (µs per vector)", "latency",
     [("mab_mc_loop", ["mab_mc_vectorised", "ours_pmf_cached", "ours_pmf_bank", "ours_pmf_redraw"])]),
    ("3. Learning from one outcome (µs per call)", "latency", [("mab_partial_fit", ["ours_record"])]),
    ("4. Contextual: LinTS, 10 features, 8 arms (µs per call)", "latency",
     [("mab_lints_predict", ["ours_linear_decide", "ours_linear_distribution", "ours_stub_learner_decide",
                             "ours_linear256_decide"])]),
]


def spread(values, fmt) -> str:
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def us(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def summarise(results: dict) -> tuple[str, list]:
    runs = results["runs"]
    lines = []
    for title, kind, groups in SECTIONS:
        present = [(a, [o for o in ours if o in runs[0]]) for a, ours in groups if a in runs[0]]
        if not present:
            continue
        lines += ["", f"### {title}", ""]
        if kind == "latency":
            lines += ["| path | median | p99 | median / anchor |", "|---|---|---|---|"]
        else:
            lines += ["| path | decisions/s | ratio to anchor |", "|---|---|---|"]
        for anchor, ours in present:
            for key in [anchor, *ours]:
                if kind == "latency":
                    med = [r[key]["median_us"] for r in runs]
                    p99 = [r[key]["p99_us"] for r in runs]
                    ratio = [r[key]["median_us"] / r[anchor]["median_us"] for r in runs]
                    lines.append(f"| {LABELS[key]} | {spread(med, us)} | {spread(p99, us)} | "
                                 f"{spread(ratio, lambda v: f'{v:.3f}')} |")
                else:
                    per_s = [r[key]["per_s"] for r in runs]
                    ratio = [r[key]["per_s"] / r[anchor]["per_s"] for r in runs]
                    lines.append(f"| {LABELS[key]} | {spread(per_s, lambda v: f'{v:,.0f}')} | "
                                 f"{spread(ratio, lambda v: f'{v:.2f}')} |")
    obp = results.get("obp")
    if obp:
        lines += ["", "### 2b. Open Bandit Pipeline `BernoulliTS.compute_batch_action_dist(n_sim=1024)` "
                  f"(OBP {obp['obp']}, its own venv and process; µs per pmf vector)", "",
                  "| path | median | ratio to OBP (same process) |", "|---|---|---|"]
        o = [r["obp_us"] for r in obp["runs"]]
        lines.append(f"| OBP `compute_batch_action_dist(n_rounds=1, n_sim=1024)` **[anchor]** | {spread(o, us)} | 1 |")
        for key, label in (("ours_bank_us", "banditroute pmf from the bank (cache miss)"),
                           ("ours_redraw_us", "banditroute pmf after redrawing the whole bank")):
            v = [r[key] for r in obp["runs"]]
            ratio = [r[key] / r["obp_us"] for r in obp["runs"]]
            lines.append(f"| {label} | {spread(v, us)} | {spread(ratio, lambda x: f'{x:.4f}')} |")
    lines += ["", "Notes: a decision reads a cached pmf until an outcome changes the bank (every `refresh_every` "
              "= 16 outcomes), so `decide()` pays the pmf only on a cache miss (the \"`record()` after every "
              "decision\" row); the whole-bank redraw is the worst case (every cell changed). The Monte Carlo "
              "rows are single long calls (ms): on a loaded machine they absorb preemption that the medians "
              "of short calls mostly avoid, so compare them on a quiet machine."]
    lines += ["", "### 2c. Agreement of the pmfs with the exact Thompson probabilities "
              "(numerical integration; M = 1,024; z = |diff| / sqrt(p(1-p)/M))", "",
              "| pmf | max abs diff, median [min, max] over runs | max z, median [min, max] |", "|---|---|---|"]
    rows = [("banditroute (exploration 0)", [r["agreement"]["ours_vs_exact"] for r in runs]),
            ("MABWiser Monte Carlo", [r["agreement"]["mab_mc_vs_exact"] for r in runs])]
    if obp:
        rows.append(("OBP BernoulliTS", [r["obp_vs_exact"] for r in obp["runs"]]))
    for name, ag in rows:
        lines.append(f"| {name} | {spread([a['max_abs'] for a in ag], lambda v: f'{v:.4f}')} | "
                     f"{spread([a['max_z'] for a in ag], lambda v: f'{v:.2f}')} |")
    exact = runs[0]["agreement"]["exact"]
    lines.append(f"\nexact TS probabilities: {', '.join(f'{p:.3f}' for p in exact)}; largest MC standard error "
                 f"sqrt(p(1-p)/M) = {runs[0]['agreement']['ours_vs_exact']['se_max']:.4f}")
    if obp:
        diffs = [float(np.abs(np.asarray(o["pmf"]) - np.asarray(r["agreement"]["ours_pmf"])).max())
                 for o, r in zip(obp["runs"], runs)]
        lines.append(f"max |banditroute - OBP| per run: {', '.join(f'{d:.4f}' for d in diffs)} (two independent "
                     f"M = 1,024 estimates: standard error of the difference up to "
                     f"{np.sqrt(2) * runs[0]['agreement']['ours_vs_exact']['se_max']:.4f})")
    bars = []
    lines += ["", "### Bars (speed-up = anchor median / ours median, median over runs)", ""]
    for section, ours, anchor, target in BARS:
        if ours not in runs[0] or anchor not in runs[0]:
            continue
        speed = statistics.median(r[anchor]["median_us"] / r[ours]["median_us"] for r in runs)
        met = None if target is None else speed >= target
        bars.append({"section": section, "ours": ours, "anchor": anchor, "speedup": speed, "target": target,
                     "met": met})
        verdict = "informational, no bar" if met is None else f"bar {target:g}x: {'met' if met else 'NOT met'}"
        lines.append(f"- {section}: {LABELS[ours].split(' (')[0]} is {speed:.1f}x faster than "
                     f"{LABELS[anchor].split(' **')[0]} ({verdict})")
    if "ours_linear_batch_frame" in runs[0] and "mab_lints_batch" in runs[0]:
        ratio = statistics.median(r["ours_linear_batch_frame"]["per_s"] / r["mab_lints_batch"]["per_s"] for r in runs)
        bars.append({"section": "linear batch", "ratio": ratio, "target": 0.2, "met": ratio >= 0.2})
        lines.append(f"- linear batch: banditroute `decide_batch(DataFrame)` runs at {ratio:.2f}x MABWiser LinTS "
                     f"`predict(contexts)` throughput (bar 0.2x: {'met' if ratio >= 0.2 else 'NOT met'})")
    if "ours_linear256_decide" in runs[0]:
        wide = statistics.median(r["ours_linear256_decide"]["median_us"] for r in runs)
        mib = runs[0]["linear256_state_bytes"]["bytes"] / 2**20
        bars.append({"section": "linear d=256", "median_us": wide, "target": 1000.0, "met": wide < 1000.0})
        lines.append(f"- linear d = 256: `decide()` median {wide:.0f} µs (bar < 1,000 µs: "
                     f"{'met' if wide < 1000 else 'NOT met'}); learned state {mib:.1f} MiB")
    if obp:
        speed = statistics.median(r["obp_us"] / r["ours_bank_us"] for r in obp["runs"])
        lines.append(f"- propensity vs OBP: banditroute pmf from the bank is {speed:.0f}x faster than OBP's "
                     f"compute_batch_action_dist (bar 10x): {'met' if speed >= 10 else 'NOT met'}")
        bars.append({"section": "propensity_obp", "speedup": speed, "target": 10.0, "met": speed >= 10})
    return "\n".join(lines), bars


def machine() -> dict:
    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "polars": pl.__version__,
            "mabwiser": ver("mabwiser"), "vowpal-wabbit-next": ver("vowpal-wabbit-next"),
            "banditroute": ver("banditroute"),
            "blas_threads_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                                 if k in os.environ}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5000, help="timed single calls per latency row and run")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--batch", type=int, default=20_000, help="rows per batch (vectorised paths)")
    parser.add_argument("--batch-slow", type=int, default=5_000, help="rows per batch for per-row loops (VW, linear)")
    parser.add_argument("--mc-reps", type=int, default=10, help="Monte Carlo pmf vectors timed per run (loop peers)")
    parser.add_argument("--history", type=int, default=2_000, help="logged rounds every learner is fitted on")
    parser.add_argument("--obp-python", default="/work/venv-obp/bin/python",
                        help="python of a venv with obp 0.5.7 (empty to skip the OBP rows)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.runs < 1 or args.calls < 100:
        parser.error("--runs must be >= 1 and --calls >= 100")
    args.vw = vw.available()
    if not args.vw:
        print("VW rows skipped: vowpal-wabbit-next cannot be imported here", file=sys.stderr)
    warnings.filterwarnings("ignore", category=FutureWarning)
    info = machine()
    load_start = os.getloadavg()
    print(f"machine: {info['cpu']}, {info['nproc']} cores, Python {info['python']}; numpy {info['numpy']}, "
          f"polars {info['polars']}, mabwiser {info['mabwiser']}, vowpal-wabbit-next {info['vowpal-wabbit-next']}",
          flush=True)
    data = Data(args.history, max(args.calls, args.batch, args.batch_slow), seed=0)
    results = {"machine": info, "config": {k: v for k, v in vars(args).items()}, "runs": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            gc.collect()
            row = one_run(run, data, args, tmp)
            results["runs"].append(row)
            print(f"run {run}: TS decide {row['ours_decide']['median_us']:.1f} µs vs MABWiser "
                  f"{row['mab_ts_predict']['median_us']:.1f}; linear {row['ours_linear_decide']['median_us']:.1f} "
                  f"vs LinTS {row['mab_lints_predict']['median_us']:.1f}; load {os.getloadavg()[0]:.2f}", flush=True)
    results["obp"] = run_obp(args, data)
    if results["obp"]:
        info["obp"] = results["obp"]["obp"]
    load_end = os.getloadavg()
    results["load_average"] = {"start": load_start, "end": load_end}
    results["elapsed_s"] = time.perf_counter() - started
    table, bars = summarise(results)
    results["bars"] = bars
    print(f"\n## banditroute vs peers: {args.runs} runs x {args.calls:,} calls; 8 arms, 10 features, "
          f"M = {N_DRAWS}; history {args.history:,} rounds")
    print(f"machine: {info['cpu']}, {info['nproc']} cores, Python {info['python']}, numpy {info['numpy']}, "
          f"polars {info['polars']}, mabwiser {info['mabwiser']}, vowpal-wabbit-next {info['vowpal-wabbit-next']}, "
          f"obp {info.get('obp', 'skipped')}; load average (1/5/15 min) at start "
          f"{'/'.join(f'{v:.2f}' for v in load_start)}, at end {'/'.join(f'{v:.2f}' for v in load_end)}; "
          f"{results['elapsed_s']:.0f} s")
    print(table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
