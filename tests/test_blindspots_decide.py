"""Regression tests for four blind spots of the deciding core, through the public API only.

1. The vectorised ``decide_batch`` on a polars DataFrame keys its cached distributions by
   (task type, failed allow-lists): rows whose task type and allow-list fields vary
   independently must each get the single-row pmf.
2. With ``discount < 1`` each task type forgets on its own clock: traffic of one task type
   leaves the evidence of the others untouched, and its own fades by ``discount ** w``.
3. A drift recalibration keeps exactly ``drift.keep`` of the cell's evidence beyond the prior.
4. A mixed task-type posterior is routed by the mixture ``sum_t p(t|x) theta[k, t]`` and
   learns with weight ``p(t|x)`` in every task type's cell.
"""

import itertools

import numpy as np
import polars as pl
import pytest

import banditroute as br

POLICIES = ["thompson", "greedy"]


# -- 1. DataFrame batch path: task type and allow-lists vary independently -----------------------

TENANT_ALLOW = {"acme", "globex"}
REGION_ALLOW = {"eu"}


def _allow_profiles():
    prior = {"chat": br.BetaPrior(alpha=8.0, beta=2.0), "code": br.BetaPrior(alpha=2.0, beta=8.0),
             "math": br.BetaPrior(alpha=5.0, beta=5.0)}
    flipped = {"chat": br.BetaPrior(alpha=2.0, beta=8.0), "code": br.BetaPrior(alpha=8.0, beta=2.0),
               "math": br.BetaPrior(alpha=6.0, beta=4.0)}
    return [
        br.Profile("tenant-only", allow={"tenant": sorted(TENANT_ALLOW)}, prior=prior),
        br.Profile("eu-only", allow={"region": sorted(REGION_ALLOW)}, prior=flipped),
        br.Profile("both", allow={"tenant": ["acme"], "region": ["eu", "us"]},
                   prior={"chat": br.BetaPrior(alpha=6.0, beta=4.0), "code": br.BetaPrior(alpha=6.0, beta=4.0),
                          "math": br.BetaPrior(alpha=9.0, beta=1.0)}),
        br.Profile("any", prior=br.BetaPrior(alpha=5.0, beta=5.0)),
    ]


def _forbidden(row: dict) -> set:
    """The profiles a row's allow-lists forbid, computed from the test's own specification."""
    out = set()
    if row.get("tenant") not in TENANT_ALLOW:
        out.add("tenant-only")
    if row.get("region") not in REGION_ALLOW:
        out.add("eu-only")
    if row.get("tenant") != "acme" or row.get("region") not in ("eu", "us"):
        out.add("both")
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_dataframe_batch_gives_each_row_its_own_pmf_when_task_and_allow_lists_vary_independently(
        policy, seed, tmp_path):
    tasks = ["chat", "code", "math"]
    combos = list(itertools.product(tasks, ["acme", "globex", "initech", None], ["eu", "us", "apac", None]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.tile(np.arange(len(combos)), 4))
    rows = [{"task_type": combos[i][0], "tenant": combos[i][1], "region": combos[i][2], "n": float(j)}
            for j, i in enumerate(order)]
    # task type and allow-list outcome are independent: every task type meets every feasible set
    feasible_sets = {(r["task_type"], frozenset(_forbidden(r))) for r in rows}
    assert len(feasible_sets) == len(tasks) * len({frozenset(_forbidden(r)) for r in rows})

    kwargs = dict(task_types=tasks, policy=policy, exploration=0.05, seed=seed)
    router = br.Router(_allow_profiles(), log_dir=tmp_path / "frame", **kwargs)
    by_frame = router.decide_batch(pl.DataFrame(rows))
    as_dicts = [{k: v for k, v in r.items() if v is not None} for r in rows]
    by_rows = br.Router(_allow_profiles(), **kwargs).decide_batch(as_dicts)

    assert len(by_frame) == len(rows)
    for d, ctx, row_d in zip(by_frame, as_dicts, by_rows):
        expected = router.probabilities(ctx)  # the single-row path
        assert dict(d.probabilities) == expected, ctx
        assert dict(d.probabilities) == dict(row_d.probabilities), ctx
        forbidden = _forbidden(ctx)
        assert all(d.probabilities[p] == 0.0 for p in forbidden), ctx
        assert all(d.probabilities[p] > 0.0 for p in set(router.profiles) - forbidden), ctx
        assert set(d.excluded) == forbidden, ctx
        assert d.profile not in forbidden and d.propensity == d.probabilities[d.profile]
        assert sum(d.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    # one uniform draw per row in order: the frame path draws what the row path draws
    assert [d.profile for d in by_frame] == [d.profile for d in by_rows]

    # a frame without an allow-listed column: the field is absent in every row, so forbidden
    no_region = pl.DataFrame(rows).drop("region")
    for d, ctx in zip(router.decide_batch(no_region), no_region.iter_rows(named=True)):
        ctx = {k: v for k, v in ctx.items() if v is not None}
        assert {"eu-only", "both"} <= _forbidden(ctx) == set(d.excluded)
        assert dict(d.probabilities) == router.probabilities(ctx), ctx
        assert d.profile not in _forbidden(ctx)

    # what was logged is what was used
    router.flush()
    logged = {rec["decision_id"]: rec for rec in
              br.scan_table(tmp_path / "frame", "decisions").collect().iter_rows(named=True)}
    assert len(logged) == 2 * len(rows)
    for d, ctx in zip(by_frame, as_dicts):
        rec = logged[d.id]
        assert rec["profile"] == d.profile and rec["propensity"] == d.propensity
        assert dict(zip(rec["profiles"], rec["probabilities"])) == router.probabilities(ctx)
        assert rec["profile"] not in _forbidden(ctx)


# -- 2. discounting runs on a per-task-type clock ------------------------------------------------

def _lane_profiles(names=("p", "q")):
    """Profiles routed deterministically by the request's ``lane`` field (one feasible each)."""
    return [br.Profile(name, allow={"lane": [name]}) for name in names]


def _feed(router, task, lane, quality):
    ctx = {"task_type": task, "lane": lane} if isinstance(task, str) else {"task_probs": task, "lane": lane}
    d = router.decide(ctx)
    assert d.profile == lane and d.propensity == 1.0
    assert router.record(d.id, quality=quality) == "applied"
    return d


def test_discount_fades_only_the_task_type_that_gets_traffic():
    gamma = 0.5  # powers of 1/2 are exact in floating point: the hand computation is exact
    router = br.Router(_lane_profiles(), task_types=["A", "B", "C"], discount=gamma, seed=0)
    p, q = 0, 1
    A, B, C = 0, 1, 2
    # task A: p succeeds, then q fails (the second outcome fades the first by gamma)
    _feed(router, "A", "p", 1.0)
    _feed(router, "A", "q", 0.0)
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev[:, A].tolist() == [0.5, 0.0] and beta_ev[:, A].tolist() == [0.0, 1.0]
    a_alpha, a_beta = alpha_ev[:, A].copy(), beta_ev[:, A].copy()
    reliability = ["profile", "task_type", "mean", "ci_low", "ci_high", "n", "alpha", "beta"]  # (availability
    beliefs_a = router.beliefs().filter(task_type="A").select(reliability).to_dict(as_series=False)  # is per profile)

    # task B by hand: (p, 1), (q, 1), (p, 0); each outcome first fades all of B by gamma
    _feed(router, "B", "p", 1.0)
    _feed(router, "B", "q", 1.0)
    _feed(router, "B", "p", 0.0)
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev[:, B].tolist() == [0.25, 0.5] and beta_ev[:, B].tolist() == [1.0, 0.0]
    # ... and then ten more successes of p on B only
    n = 10
    for _ in range(n):
        _feed(router, "B", "p", 1.0)
    alpha_ev, beta_ev = router.evidence()
    geometric = sum(gamma ** i for i in range(n))  # sum of the faded unit updates
    assert alpha_ev[p, B] == pytest.approx(0.25 * gamma ** n + geometric, rel=1e-12)
    assert alpha_ev[q, B] == pytest.approx(0.5 * gamma ** n, rel=1e-12)
    assert beta_ev[p, B] == pytest.approx(1.0 * gamma ** n, rel=1e-12)
    assert beta_ev[q, B] == 0.0

    # thirteen outcomes of B did not fade A at all, nor the untouched C
    assert alpha_ev[:, A].tolist() == a_alpha.tolist() and beta_ev[:, A].tolist() == a_beta.tolist()
    assert alpha_ev[:, C].tolist() == [0.0, 0.0] and beta_ev[:, C].tolist() == [0.0, 0.0]
    assert router.beliefs().filter(task_type="A").select(reliability).to_dict(as_series=False) == beliefs_a
    assert router.beliefs().filter(task_type="B", profile="p")["n"].item() == pytest.approx(
        alpha_ev[p, B] + beta_ev[p, B], rel=1e-12)


def test_discount_of_a_mixed_outcome_is_gamma_to_the_task_weight():
    gamma = 0.25  # gamma ** 0.5 == 0.5 exactly
    router = br.Router(_lane_profiles(), task_types=["A", "B", "C"], discount=gamma, seed=0)
    _feed(router, "A", "p", 1.0)
    _feed(router, "B", "q", 0.0)
    _feed(router, "C", "q", 1.0)
    # one outcome with p(A) = p(B) = 1/2: A and B fade by gamma ** 0.5, C (weight 0) not at all
    _feed(router, {"A": 0.5, "B": 0.5}, "p", 1.0)
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev.tolist() == [[1.0 * 0.5 + 0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    assert beta_ev.tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0 * 0.5, 0.0]]


# -- 3. drift recalibration keeps a fraction `keep` of the evidence ------------------------------

@pytest.mark.parametrize("keep", [0.5, 0.2, 0.0])
def test_drift_recalibration_keeps_exactly_keep_of_the_evidence(keep):
    drift = br.DriftConfig(delta=0.05, threshold=5.0, min_samples=10.0, keep=keep)
    router = br.Router(_lane_profiles(), task_types=["code", "chat"], seed=0, drift=drift)
    # evidence elsewhere that a recalibration of (q, code) must not touch
    for quality in (1.0, 0.0, 1.0):
        _feed(router, "chat", "q", quality)
        _feed(router, "code", "p", quality)
    prior = router.beliefs().filter(profile="q", task_type="code").row(0, named=True)  # copied out
    assert prior["n"] == 0.0
    alpha0, beta0 = prior["alpha"], prior["beta"]

    qualities = [1.0] * 40 + [0.0] * 40
    for i, quality in enumerate(qualities):
        n_events = len(router.drift_events)
        alpha_before, beta_before = router.evidence()
        _feed(router, "code", "q", quality)
        if len(router.drift_events) == n_events:
            continue
        event = router.drift_events[-1]
        assert (event["profile"], event["task_type"], event["change"]) == ("q", "code", "decrease")
        assert i >= 40  # no alarm on the stationary start
        alpha_after, beta_after = router.evidence()
        # the triggering outcome is learnt first, then the cell keeps `keep` of its evidence
        assert alpha_after[1, 0] == pytest.approx(keep * (alpha_before[1, 0] + quality), rel=1e-9, abs=1e-12)
        assert beta_after[1, 0] == pytest.approx(keep * (beta_before[1, 0] + 1.0 - quality), rel=1e-9, abs=1e-12)
        assert alpha_before[1, 0] + beta_before[1, 0] > 40  # there was real evidence to shrink
        # every other cell is untouched
        mask = np.ones(alpha_after.shape, dtype=bool)
        mask[1, 0] = False
        assert alpha_after[mask].tolist() == alpha_before[mask].tolist()
        assert beta_after[mask].tolist() == beta_before[mask].tolist()
        cell = router.beliefs().filter(profile="q", task_type="code")
        if keep == 0.0:  # back to the prior exactly
            assert (cell["alpha"].item(), cell["beta"].item(), cell["n"].item()) == (alpha0, beta0, 0.0)
        else:
            assert cell["n"].item() == pytest.approx(keep * (alpha_before[1, 0] + beta_before[1, 0] + 1.0),
                                                     rel=1e-9)
        break
    else:
        pytest.fail("no drift event after a drop of quality from 1 to 0")


# -- 4. a mixed task posterior is routed (and learns) by the mixture -----------------------------

MIX = {"chat": 0.6, "code": 0.4}  # argmax: chat


def _specialist_profiles(strength: float):
    """chatty is best on chat, coder on code, generalist on neither alone but on a 60/40 mix."""
    def beta(mean):
        return br.BetaPrior(alpha=strength * mean, beta=strength * (1.0 - mean))
    return [br.Profile("chatty", prior={"chat": beta(0.9), "code": beta(0.1)}),
            br.Profile("coder", prior={"chat": beta(0.1), "code": beta(0.9)}),
            br.Profile("generalist", prior={"chat": beta(0.62), "code": beta(0.62)})]


class _FixedTaskModel:
    """A stand-in classifier: p(code | x) is the request's ``p_code`` field."""

    classes_ = ["code", "chat"]

    def predict_proba(self, contexts):
        return np.array([[c["p_code"], 1.0 - c["p_code"]] for c in contexts])


def _mixed_contexts():
    return [{"task_probs": dict(MIX)}, {"p_code": MIX["code"]}]


def _router(policy, seed, strength):
    return br.Router(_specialist_profiles(strength), task_types=["chat", "code"], policy=policy, exploration=0.0,
                     seed=seed, n_draws=4096, task_model=br.TaskClassifier(_FixedTaskModel()))


def test_greedy_routes_a_mixed_posterior_by_the_mixture_of_posterior_means(seed):
    router = _router("greedy", seed, strength=20.0)
    means = {(r["profile"], r["task_type"]): r["mean"] for r in router.beliefs().iter_rows(named=True)}
    mixture = {p: sum(w * means[p, t] for t, w in MIX.items()) for p in router.profiles}
    winner = max(mixture, key=mixture.get)
    argmax_task = max(MIX, key=MIX.get)
    # the scenario is discriminating: the mixture's winner wins neither pure task type
    assert winner == "generalist"
    for t in ("chat", "code"):
        pure = max(router.profiles, key=lambda p: means[p, t])
        assert pure != winner
        assert router.probabilities({"task_type": t})[pure] == 1.0
    assert max(router.profiles, key=lambda p: means[p, argmax_task]) == "chatty"
    for ctx in _mixed_contexts():
        assert router.probabilities(ctx) == {p: float(p == winner) for p in router.profiles}
        d = router.decide(ctx)
        assert dict(d.task_probs) == pytest.approx(MIX, abs=1e-12)
        assert d.profile == winner and d.propensity == 1.0


def test_thompson_routes_a_mixed_posterior_by_the_mixture_of_draws(seed):
    strength, n_mc = 40.0, 200_000
    router = _router("thompson", seed, strength=strength)
    beliefs = router.beliefs()
    ab = {(r["profile"], r["task_type"]): (r["alpha"], r["beta"]) for r in beliefs.iter_rows(named=True)}
    # Monte Carlo of P(k = argmax_j sum_t p(t|x) theta[j, t]) with independent Beta draws per cell
    rng = np.random.default_rng(seed + 12345)
    score = np.column_stack([sum(w * rng.beta(*ab[p, t], size=n_mc) for t, w in MIX.items())
                             for p in router.profiles])
    share = np.bincount(score.argmax(axis=1), minlength=len(router.profiles)) / n_mc
    expected = dict(zip(router.profiles, share))
    assert expected["generalist"] > 0.6 and expected["chatty"] < 0.4  # the mixture, not chat alone, wins
    n_draws = 4096  # the router's pmf is a share of its n_draws bank draws
    for ctx in _mixed_contexts():
        got = router.probabilities(ctx)
        for p in router.profiles:
            sd = np.sqrt(expected[p] * (1 - expected[p]) * (1 / n_draws + 1 / n_mc)) + 1e-4
            assert abs(got[p] - expected[p]) < 5 * sd, (ctx, p, got, expected)
    # sanity of the contrast: the argmax task type alone would route almost everything to chatty
    assert router.probabilities({"task_type": "chat"})["chatty"] > 0.9


@pytest.mark.parametrize("policy", POLICIES)
def test_record_on_a_mixed_decision_updates_each_task_cell_by_its_weight(policy, seed):
    router = _router(policy, seed, strength=20.0)
    quality = 0.75
    for i, ctx in enumerate(_mixed_contexts()):
        # plain lists: a beliefs() frame is a snapshot only once copied out
        before = {p: router.beliefs().filter(profile=p).select("alpha", "n").to_dict(as_series=False)
                  for p in router.profiles}
        alpha_before, beta_before = router.evidence()
        d = router.decide(ctx)
        assert dict(d.task_probs) == pytest.approx(MIX, abs=1e-12)
        assert router.record(d.id, quality=quality) == "applied"
        alpha_after, beta_after = router.evidence()
        k = router.profiles.index(d.profile)
        for j, t in enumerate(router.task_types):
            assert alpha_after[k, j] - alpha_before[k, j] == pytest.approx(MIX[t] * quality, abs=1e-12)
            assert beta_after[k, j] - beta_before[k, j] == pytest.approx(MIX[t] * (1 - quality), abs=1e-12)
        others = [j for j in range(len(router.profiles)) if j != k]
        assert np.array_equal(alpha_after[others], alpha_before[others])
        assert np.array_equal(beta_after[others], beta_before[others])
        after = router.beliefs().filter(profile=d.profile)
        old = before[d.profile]
        weights = [MIX[t] for t in after["task_type"]]
        assert [a - b for a, b in zip(after["alpha"].to_list(), old["alpha"])] == pytest.approx(
            [w * quality for w in weights], abs=1e-12)
        assert [a - b for a, b in zip(after["n"].to_list(), old["n"])] == pytest.approx(weights, abs=1e-12)


def test_a_beliefs_frame_is_a_snapshot_that_later_outcomes_do_not_change():
    router = br.Router([br.Profile("a", cost_usd=0.0, latency_ms=1.0)], seed=0)
    before = router.beliefs()
    kept = before.to_dict(as_series=False)
    for _ in range(3):
        router.record(router.decide({}).id, quality=1.0)
    assert before.to_dict(as_series=False) == kept
    assert router.beliefs().get_column("alpha").to_list() == [kept["alpha"][0] + 3.0]
