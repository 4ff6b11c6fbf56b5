"""Tests that kill surviving mutants of the deciding core (router, batch, beliefs, policy,
linear, drift), second sample.

Each test states the promise it checks; the mutants it was written against are named in
brackets. Known answers are derived in the comments from the model's definition.
"""

import time

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

import banditroute as br
from test_mutants_router import FixedDraws  # the policy template with a fixed scenario bank

M = 2048  # the router's default bank size: a share of the bank has sd <= sqrt(0.25 / M) ~ 0.011


def p_first_wins(a1, b1, a2, b2):
    """P(X > Y) for independent X ~ Beta(a1, b1), Y ~ Beta(a2, b2)."""
    value, _ = integrate.quad(lambda x: stats.beta.pdf(x, a1, b1) * stats.beta.cdf(x, a2, b2), 0.0, 1.0,
                              limit=200)
    return value


def posterior_of(router, profile):
    row = router.beliefs().filter(pl.col("profile") == profile).row(0, named=True)
    return row["alpha"], row["beta"]


# -- router.py: the outcome log ------------------------------------------------------------------

def test_a_late_outcome_with_every_measurement_logs_its_reward_and_time(tmp_path):
    """[router record 71, 166] A late outcome teaches nothing but is logged with its reward
    (the objective of the measurements given) and the wall-clock time in epoch microseconds."""
    objective = br.Objective(quality=1.0, cost=10.0, latency=0.001)
    router = br.Router([br.Profile("a"), br.Profile("b")], objective=objective, max_pending=1,
                       log_dir=tmp_path, seed=0)
    first = router.decide({})
    router.decide({})  # max_pending=1: the first decision leaves the pending window
    before_us = time.time_ns() // 1000
    assert router.record(first.id, quality=0.5, cost_usd=0.01, latency_ms=200.0) == "late"
    after_us = time.time_ns() // 1000
    router.flush()
    row = br.scan_table(tmp_path, "outcomes").collect().row(0, named=True)
    assert row["decision_id"] == first.id and row["status"] == "late"
    # 1.0 * 0.5 - 10 * 0.01 - 0.001 * 200 = 0.2
    assert row["reward"] == pytest.approx(0.2, abs=1e-12)
    ts_us = row["ts"] if isinstance(row["ts"], int) else int(row["ts"].timestamp() * 1e6)
    assert before_us - 1000 <= ts_us <= after_us + 1000


# -- batch.py: the vectorised DataFrame path -----------------------------------------------------

def test_dataframe_nulls_are_logged_as_json_null_with_or_without_a_task_type_column(tmp_path):
    """[batch x_plan_frame 16, 33, 44, 45] The vectorised path (a single-task router without a
    task_type column, or a string task_type column) treats a null as an absent field for the
    allow-lists and logs it as JSON null (the row path would drop the key)."""
    profiles = [br.Profile("a", allow={"tier": ["gold"]}), br.Profile("b")]
    single = br.Router(profiles, log_dir=tmp_path / "single", seed=0)
    decisions = single.decide_batch(pl.DataFrame({"tier": ["gold", None, "silver"]}))
    assert [dict(d.probabilities)["a"] > 0 for d in decisions] == [True, False, False]
    assert [d.profile for d in decisions[1:]] == ["b", "b"]
    single.flush()
    logged = br.scan_table(tmp_path / "single", "decisions").collect().sort("seq")["context"].to_list()
    assert logged == ['{"tier":"gold"}', '{"tier":null}', '{"tier":"silver"}']

    multi = br.Router(profiles, task_types=["chat", "code"], log_dir=tmp_path / "multi", seed=0)
    decisions = multi.decide_batch(pl.DataFrame({"task_type": ["code", "chat"], "tier": [None, "gold"]}))
    assert [dict(d.task_probs) for d in decisions] == [{"chat": 0.0, "code": 1.0}, {"chat": 1.0, "code": 0.0}]
    assert decisions[0].profile == "b"
    multi.flush()
    logged = br.scan_table(tmp_path / "multi", "decisions").collect().sort("seq")["context"].to_list()
    assert logged == ['{"task_type":"code","tier":null}', '{"task_type":"chat","tier":"gold"}']


def test_dataframe_with_a_non_string_task_type_column_gets_the_row_error():
    """[batch x_plan_frame 33] A non-string task_type column is not looked up column-wise: the
    row path reports the first bad row with field and value."""
    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["chat", "code"], seed=0)
    with pytest.raises(br.InvalidRequestError, match=r"^context\.task_type must be one of \['chat', 'code'\], got 1$"):
        router.decide_batch(pl.DataFrame({"task_type": [1, 2]}))


# -- beliefs.py: when the bank is redrawn --------------------------------------------------------

def test_bank_is_redrawn_exactly_every_refresh_every_outcomes(seed):
    """[beliefs update 31] With refresh_every=3 the first two outcomes leave the bank (and so the
    probabilities) exactly as they were; the third redraws it from the posterior. Outcomes are
    quality 1 for 'a' and 0 for 'b', so after three of them P(a wins) >= 0.8 (checked exactly),
    far from the prior's 0.5."""
    router = br.Router([br.Profile("a"), br.Profile("b")], refresh_every=3, exploration=0.0, seed=seed)
    prior_pmf = router.probabilities({})
    assert abs(prior_pmf["a"] - 0.5) < 5 * np.sqrt(0.25 / M)
    for i in range(3):
        d = router.decide({})
        router.record(d.id, quality=1.0 if d.profile == "a" else 0.0)
        if i < 2:
            assert router.probabilities({}) == prior_pmf
    a1, b1 = posterior_of(router, "a")
    a2, b2 = posterior_of(router, "b")
    p = p_first_wins(a1, b1, a2, b2)
    assert p >= 0.8 - 1e-9  # exactly 0.8 when all three went to one profile
    assert abs(router.probabilities({})["a"] - p) < 5 * np.sqrt(p * (1 - p) / M)


def test_set_evidence_redraws_a_cell_whose_beta_alone_changed(seed):
    """[beliefs set_evidence 9] Evidence of 1000 failures for 'a' (its alpha unchanged) makes
    a ~ Beta(1, 1001): P(a beats b ~ Beta(1, 1)) = E[a] = 1/1002, so a gets (almost) nothing."""
    router = br.Router([br.Profile("a"), br.Profile("b")], exploration=0.0, seed=seed)
    router.set_evidence(np.zeros((2, 1)), np.array([[1000.0], [0.0]]))
    assert posterior_of(router, "a") == (1.0, 1001.0)
    assert router.probabilities({})["a"] < 1 / 1002 + 5 * np.sqrt(1 / 1002 / M)


def test_forgetting_alone_redraws_a_profile_once_its_evidence_has_shrunk(seed):
    """[beliefs refresh 8, 23] With discount 0.5, every outcome of 'b' halves 'a''s evidence too
    (per task-type clock). 'a' starts with 1000 successes (draws ~1) and never gets an outcome;
    after ~50 of b's, a's posterior is back at about its Beta(1, 1) prior and its bank must have
    been redrawn (forget_tolerance 5%). With exploration 0.5 the pmf of 'a' is
    0.25 + 0.5 * P(a beats b), P computed from the posteriors; the tolerance is the bank's
    sampling sd (0.5 * 0.011) plus the lag the 5% tolerance allows (< 0.03 here). An
    unredrawn bank would give 'a' about 0.75."""
    router = br.Router([br.Profile("a"), br.Profile("b")], discount=0.5, exploration=0.5, seed=seed)
    router.set_evidence(np.array([[1000.0], [0.0]]), np.zeros((2, 1)))
    assert router.probabilities({})["a"] > 0.74
    n_b = 0
    for _ in range(300):
        d = router.decide({})
        if d.profile == "b":
            router.record(d.id, quality=1.0)
            n_b += 1
    assert n_b >= 40
    a1, b1 = posterior_of(router, "a")
    assert a1 == pytest.approx(1.0, abs=1e-9) and b1 == 1.0
    p = p_first_wins(a1, b1, *posterior_of(router, "b"))
    assert p < 0.4  # b ~ Beta(~3, 1): a uniform a beats it with probability ~0.25
    assert abs(router.probabilities({})["a"] - (0.25 + 0.5 * p)) < 0.05


# -- policy.py: the template ---------------------------------------------------------------------

def test_bank_policy_floor_confidence_defaults_to_0_95():
    """[policy __init__ 2] With only a reliability floor, a profile below it in 24 of 25
    scenarios (0.96 > 0.95) is excluded; one below it in 9 of 10 (0.9) is kept."""
    all_ = np.array([True, True])
    draws = np.array([[0.1, 0.9]] * 24 + [[0.6, 0.5]])
    pmf, below = FixedDraws(draws, reliability_floor=0.5).distribution(0, all_, np.zeros(2), 1.0)
    assert below.tolist() == [True, False] and pmf.tolist() == [0.0, 1.0]
    draws = np.array([[0.1, 0.9]] * 9 + [[0.6, 0.5]])
    pmf, below = FixedDraws(draws, reliability_floor=0.5).distribution(0, all_, np.zeros(2), 1.0)
    assert below.tolist() == [False, False] and pmf.tolist() == [0.1, 0.9]  # b wins 9 scenarios of 10


def test_bank_policy_subtracts_the_cost_and_latency_offset():
    """[policy distribution 28] u = w_q * q - offset: with equal reliability draws the cheaper
    profile wins every scenario; a quality edge smaller than the offset gap does not help."""
    draws = [[0.5, 0.6], [0.7, 0.75], [0.2, 0.3]]
    pmf, _ = FixedDraws(draws).distribution(0, np.array([True, True]), np.array([0.0, 1.0]), 1.0)
    assert pmf.tolist() == [1.0, 0.0]
    pmf, _ = FixedDraws(draws).distribution(0, np.array([True, True]), np.array([1.0, 0.0]), 1.0)
    assert pmf.tolist() == [0.0, 1.0]


# -- linear.py: discounting ----------------------------------------------------------------------

def test_discounted_linear_router_still_learns_which_profile_pays(seed):
    """[linear learn_task 12] Discounting shrinks the precision toward the prior (it stays
    positive definite). 'a' always earns 1, 'b' 0; with discount 0.9 each keeps ~5 effective
    observations: precision ~ 1 + 5 * 4 = 21, means ~0.95 and ~0, sd ~0.22, so a wins
    ~Phi(0.95 / 0.31) > 0.99 of the scenarios and its pmf is ~0.25 + 0.5 * 0.99 > 0.7."""
    router = br.Router([br.Profile("a"), br.Profile("b")], policy="linear", discount=0.9, exploration=0.5,
                       seed=seed)
    for _ in range(200):
        d = router.decide({})
        router.record(d.id, quality=1.0 if d.profile == "a" else 0.0)
    assert router.probabilities({})["a"] > 0.7


# -- drift.py: the detector's defaults -----------------------------------------------------------

def test_page_hinkley_waits_for_30_samples_by_default():
    """[drift __init__ 3] 29 successes then a failure: the downward statistic jumps to
    mean - q - delta = 1 - 0 - 0.05 = 0.95 > threshold 0.5 on the 30th sample, which is the
    first the default min_samples=30 lets alarm."""
    ph = br.PageHinkley((1, 1), threshold=0.5)
    w = np.array([1.0])
    # the first sample raises 'up' by 0.95 (mean starts at 0), but it is not ready yet
    assert all(ph.update(0, w, 1.0) == [] for _ in range(29))
    alarms = ph.update(0, w, 0.0)
    assert [(cell, kind) for cell, kind, _ in alarms] == [((0, 0), "decrease")]
    assert alarms[0][2] == pytest.approx(0.95)
