"""Beliefs and the router's bookkeeping: surviving mutants of ``beliefs.py`` and
``router.py`` (TESTING.md)."""

import numpy as np
import pytest
from scipy import stats

import banditroute as br

PROFILES = [br.Profile("a", cost_usd=0.0, latency_ms=1.0), br.Profile("b", cost_usd=0.0, latency_ms=1.0)]


@pytest.mark.parametrize("level", [0.95, 0.8, 0.5])
def test_beliefs_credible_interval_is_the_equal_tailed_beta_interval(level):
    router = br.Router(PROFILES, task_types=["x", "y"], seed=0)
    for quality in (1.0, 1.0, 0.0, 1.0, 0.25):
        router.record(router.decide({"task_type": "x"}).id, quality=quality)
    table = router.beliefs(level=level)
    for row in table.iter_rows(named=True):
        a, b = row["alpha"], row["beta"]
        assert row["ci_low"] == pytest.approx(stats.beta.ppf((1 - level) / 2, a, b), rel=1e-9)
        assert row["ci_high"] == pytest.approx(stats.beta.ppf((1 + level) / 2, a, b), rel=1e-9)
        assert row["ci_low"] < row["mean"] < row["ci_high"]


def test_set_evidence_redraws_cells_that_earlier_outcomes_left_stale():
    """Outcomes mark their cells for the next refresh of the bank; replacing the evidence
    (as merged shared state does) refreshes the bank and must redraw those cells too, even
    where the new evidence equals the current one."""
    router = br.Router(PROFILES, seed=0, exploration=0.0, n_draws=2000, refresh_every=10_000)
    for _ in range(60):  # 'a' always succeeds, 'b' always fails; the bank is not refreshed yet
        d = router.decide({})
        router.record(d.id, quality=1.0 if d.profile == "a" else 0.0)
    stale = router.probabilities({})["a"]
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev[0, 0] > 10 and beta_ev[1, 0] > 10
    router.set_evidence(alpha_ev, beta_ev)  # the same evidence: nothing new, but the bank catches up
    fresh = router.probabilities({})["a"]
    # Beta(1 + n_a, 1) vs Beta(1, 1 + n_b) with n_a, n_b > 10: P(a wins) > 0.99
    assert fresh > 0.99 and fresh - stale > 0.2


def test_issued_answers_for_this_router_only():
    router = br.Router(PROFILES, seed=0)
    other = br.Router(PROFILES, seed=0)
    d = router.decide({})
    assert router.issued(d.id)
    assert not other.issued(d.id)
    writer, _, seq = d.id.rpartition("-")
    assert not router.issued(f"{writer}-{int(seq) + 1}")  # not issued yet
    for bad in (None, 12, b"x", "", "nope", f"{writer}-x"):
        assert not router.issued(bad)
