"""ope vs Open Bandit Pipeline 0.5.7: same inputs, same values, side-by-side timings.

Run in the OBP venv (see benchmarks/setup_obp_venv.sh):
    /work/venv-obp/bin/python benchmarks/bench_ope_obp.py --rounds 1000000 --actions 10 --repeats 5

1. Agreement: IPS (plain and clipped), SNIPS, DM, DR, SNDR, Switch-DR and DRos on the
   same actions, rewards, propensities, target distribution and reward predictions,
   for a stochastic and a deterministic target; prints the largest absolute difference.
2. Point-estimate speed for IPS, SNIPS and DR (reward predictions given) on
   n_rounds x n_actions, measured alternately (ours, OBP) `repeats` times.
3. Interval speed: 1,000 bootstrap resamples, ours (vectorised; grouped above 20,000
   rounds) vs OBP's estimate_interval (a Python loop over resamples), plus our normal
   and Bernstein intervals.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from obp.ope import estimators as obp

import ope
from ope.synthetic import SyntheticProblem


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def summary(ts: list[float]) -> str:
    return f"median {statistics.median(ts) * 1e3:9.1f} ms (min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f})"


def agreement(n_rounds: int) -> None:
    data = SyntheticProblem(seed=1, n_actions=8, logging_beta=1.5).sample(n_rounds, seed=2)
    rng = np.random.default_rng(3)
    q = np.clip(data.expected_rewards + rng.normal(0, 0.1, data.expected_rewards.shape), 0, 1)
    fb = data.feedback
    pairs = [
        ("IPS", ope.IPS(), obp.InverseProbabilityWeighting(), False),
        ("IPS clip=3", ope.IPS(clip=3.0), obp.InverseProbabilityWeighting(lambda_=3.0), False),
        ("SNIPS", ope.SNIPS(), obp.SelfNormalizedInverseProbabilityWeighting(), False),
        ("DM", ope.DM(reward_predictions=q), obp.DirectMethod(), True),
        ("DR", ope.DR(reward_predictions=q), obp.DoublyRobust(), True),
        ("DR clip=3", ope.DR(reward_predictions=q, clip=3.0), obp.DoublyRobust(lambda_=3.0), True),
        ("SNDR", ope.SNDR(reward_predictions=q), obp.SelfNormalizedDoublyRobust(), True),
        ("SwitchDR tau=2", ope.SwitchDR(reward_predictions=q, threshold=2.0), obp.SwitchDoublyRobust(lambda_=2.0), True),
        ("DRos lambda=5", ope.DRos(reward_predictions=q, shrinkage=5.0), obp.DoublyRobustWithShrinkage(lambda_=5.0), True),
    ]
    print(f"## Agreement on {n_rounds} rounds x 8 actions (|ours - OBP|)")
    for kind, target in (("stochastic", data.target), ("deterministic", ope.one_hot(data.target.argmax(axis=1), 8))):
        for name, ours, theirs, needs_q in pairs:
            kwargs = dict(reward=np.asarray(fb.rewards), action=np.asarray(fb.actions), action_dist=target[:, :, None])
            if not isinstance(theirs, obp.DirectMethod):
                kwargs["pscore"] = np.asarray(fb.propensities)
            if needs_q:
                kwargs["estimated_rewards_by_reg_model"] = q[:, :, None]
            a = ours.estimate(fb, target).value
            b = theirs.estimate_policy_value(**kwargs)
            print(f"{kind:13s} {name:15s} ours={a:.15f} obp={b:.15f} diff={abs(a - b):.2e}")


def speed(n_rounds: int, n_actions: int, repeats: int, boot_repeats: int) -> None:
    rng = np.random.default_rng(0)
    logging = rng.dirichlet(np.ones(n_actions), size=n_rounds) * 0.9 + 0.1 / n_actions
    actions = (logging.cumsum(axis=1) < rng.random((n_rounds, 1))).sum(axis=1).clip(max=n_actions - 1)
    pscore = logging[np.arange(n_rounds), actions]
    rewards = rng.binomial(1, 0.5, n_rounds).astype(float)
    target = rng.dirichlet(np.ones(n_actions), size=n_rounds)
    q = rng.random((n_rounds, n_actions))
    fb = ope.LoggedFeedback(actions=actions, rewards=rewards, propensities=pscore, n_actions=n_actions)
    target3, q3 = target[:, :, None], q[:, :, None]
    print(f"\n## Point estimates, {n_rounds} rounds x {n_actions} actions, {repeats} alternating runs")
    cases = [
        ("IPS", lambda: ope.IPS().estimate(fb, target),
         lambda: obp.InverseProbabilityWeighting().estimate_policy_value(reward=rewards, action=actions, pscore=pscore, action_dist=target3)),
        ("SNIPS", lambda: ope.SNIPS().estimate(fb, target),
         lambda: obp.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(reward=rewards, action=actions, pscore=pscore, action_dist=target3)),
        ("DR", lambda: ope.DR(reward_predictions=q).estimate(fb, target),
         lambda: obp.DoublyRobust().estimate_policy_value(reward=rewards, action=actions, pscore=pscore, action_dist=target3, estimated_rewards_by_reg_model=q3)),
    ]
    for name, ours, theirs in cases:
        t_ours, t_obp = [], []
        for _ in range(repeats):
            t_ours += timed(ours, 1)
            t_obp += timed(theirs, 1)
        ratio = statistics.median(t_obp) / statistics.median(t_ours)
        print(f"{name:6s} ours {summary(t_ours)} | OBP {summary(t_obp)} | OBP/ours {ratio:.2f}x")
        print("       (ours includes target validation, diagnostics and the normal interval)")

    if boot_repeats == 0:
        return
    print(f"\n## Intervals, 1000 bootstrap resamples, {n_rounds} rounds")
    kw_ips = dict(reward=rewards, action=actions, pscore=pscore, action_dist=target3)
    for name, ours, theirs in [
        ("IPS", lambda s: ope.IPS().estimate(fb, target, interval="bootstrap", n_bootstrap=1000, seed=s),
         lambda s: obp.InverseProbabilityWeighting().estimate_interval(**kw_ips, n_bootstrap_samples=1000, random_state=s)),
        ("SNIPS", lambda s: ope.SNIPS().estimate(fb, target, interval="bootstrap", n_bootstrap=1000, seed=s),
         lambda s: obp.SelfNormalizedInverseProbabilityWeighting().estimate_interval(**kw_ips, n_bootstrap_samples=1000, random_state=s)),
        ("DR", lambda s: ope.DR(reward_predictions=q).estimate(fb, target, interval="bootstrap", n_bootstrap=1000, seed=s),
         lambda s: obp.DoublyRobust().estimate_interval(**kw_ips, estimated_rewards_by_reg_model=q3, n_bootstrap_samples=1000, random_state=s)),
    ]:
        t_ours, t_obp, ours_ci, obp_ci = [], [], None, None
        for s in range(boot_repeats):
            t = time.perf_counter(); ours_ci = ours(s); t_ours.append(time.perf_counter() - t)
            t = time.perf_counter(); obp_ci = theirs(s); t_obp.append(time.perf_counter() - t)
        ratio = statistics.median(t_obp) / statistics.median(t_ours)
        lo, hi = list(obp_ci.values())[1:]
        print(f"{name:6s} ours {summary(t_ours)} | OBP {summary(t_obp)} | OBP/ours {ratio:.1f}x")
        print(f"       ours CI [{ours_ci.ci_low:.5f}, {ours_ci.ci_high:.5f}]  OBP CI [{lo:.5f}, {hi:.5f}]")
    for method in ("normal", "bernstein"):
        ts = timed(lambda: ope.IPS().estimate(fb, target, interval=method), repeats)
        print(f"IPS {method:9s} interval (whole estimate): {summary(ts)}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=1_000_000)
    p.add_argument("--actions", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--boot-repeats", type=int, default=3, help="0 skips the interval timings")
    p.add_argument("--agreement-rounds", type=int, default=100_000)
    args = p.parse_args()
    if args.agreement_rounds:
        agreement(args.agreement_rounds)
    speed(args.rounds, args.actions, args.repeats, args.boot_repeats)


if __name__ == "__main__":
    main()
