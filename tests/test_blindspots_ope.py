"""Regression tests for two blind spots of ``ope`` found by mutation testing.

1. The outcome join's wait-window boundary: an outcome counts iff
   ``outcome.ts - decision.ts <= wait_window`` (ope/logs.py); logs carry
   microsecond timestamps, so the boundary is checked at -1 us, 0 and +1 us.
2. The weight-clipping / switching parameters of the model-based estimators
   (``DR(clip=)``, ``SwitchDR(threshold=)``, ``DRos(shrinkage=)``) and ``IPS(clip=)``:
   known answers computed by hand on a four-round log.
"""

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest

import ope
from banditroute.logs.store import DECISION_SCHEMA, OUTCOME_SCHEMA, LogWriter
from ope import DM, DR, IPS, DRos, LoggedFeedback, SwitchDR
from ope.cli import main as ope_cli

# ---------------------------------------------------------------------------
# 1. wait-window boundary of the outcome join
# ---------------------------------------------------------------------------

WINDOW = dt.timedelta(minutes=10)
WINDOW_US = 600_000_000
US = dt.timedelta(microseconds=1)
# decision times with a sub-millisecond part, so a join that rounded to ms or s would show
T0_US = 1_735_732_800_123_457  # 2025-01-01T12:00:00.123457Z
DELAYS_US = {"early": WINDOW_US - 1, "exact": WINDOW_US, "late": WINDOW_US + 1}
REWARDS = {"early": 0.25, "exact": 0.75, "late": 0.5}


def _row(schema: dict, values: dict) -> tuple:
    """A LogWriter row: every schema column but schema_version, in schema order."""
    return tuple(values.get(c) for c in schema if c != "schema_version")


def _decision(i: int, name: str, ts_us: int, profile: str) -> tuple:
    return _row(DECISION_SCHEMA, {
        "decision_id": name, "ts": ts_us, "writer": "w", "seq": i, "policy_version": "v1",
        "context": "{}", "task_types": ["chat"], "task_probs": [1.0], "profiles": ["a", "b"],
        "probabilities": [0.5, 0.5], "profile": profile, "propensity": 0.5, "excluded": "{}",
    })


def _outcome(i: int, name: str, ts_us: int, reward: float) -> tuple:
    return _row(OUTCOME_SCHEMA, {
        "decision_id": name, "ts": ts_us, "writer": "w", "seq": i, "quality": reward,
        "cost_usd": 0.001, "latency_ms": 500.0, "reward": reward, "status": "applied",
    })


@pytest.fixture
def boundary_logs(tmp_path):
    """Decisions at T0 + i ms with one outcome each at delay window - 1 us, window, window + 1 us;
    ``dup`` has an on-time outcome (exactly the window) and a late one; ``none`` has none."""
    writer = LogWriter(tmp_path, durability="sync", writer_id="w")
    starts = {}
    for i, name in enumerate(["early", "exact", "late", "dup", "none"]):
        starts[name] = T0_US + 1000 * i
        writer.append("decisions", _decision(i, name, starts[name], "a" if i % 2 == 0 else "b"))
    for i, name in enumerate(DELAYS_US):
        writer.append("outcomes", _outcome(i, name, starts[name] + DELAYS_US[name], REWARDS[name]))
    writer.append("outcomes", _outcome(3, "dup", starts["dup"] + WINDOW_US, 1.0))
    writer.append("outcomes", _outcome(4, "dup", starts["dup"] + WINDOW_US + 1, 0.0))
    writer.close()
    return tmp_path


def _joined(log_dir, **kw) -> dict:
    frame = ope.join_logs(log_dir, **kw).collect()
    return {d: (r, n) for d, r, n in frame.select("decision_id", "reward", "n_outcomes").iter_rows()}


def test_logwriter_keeps_microsecond_delays(boundary_logs):
    """Precondition of the boundary tests: the delays on disk are exact to the microsecond."""
    joined = ope.join_logs(boundary_logs).with_columns(
        ((pl.col("outcome_ts") - pl.col("ts")).dt.total_microseconds()).alias("delay_us")
    ).collect()
    delays = dict(joined.select("decision_id", "delay_us").iter_rows())
    assert {k: delays[k] for k in DELAYS_US} == DELAYS_US
    assert delays["dup"] == WINDOW_US  # "first" picks the earlier of the two


@pytest.mark.parametrize("duplicates", ["first", "last", "mean"])
def test_wait_window_boundary_is_inclusive(boundary_logs, duplicates):
    joined = _joined(boundary_logs, wait_window=WINDOW, default_reward=-1.0, duplicates=duplicates)
    assert joined == {
        "early": (0.25, 1),  # window - 1 us: counted
        "exact": (0.75, 1),  # delay == window: counted (documented `<=`)
        "late": (-1.0, 0),  # window + 1 us: treated as missing
        # the late duplicate is dropped before the duplicates rule: "last" and "mean" see only 1.0
        "dup": (1.0, 1),
        "none": (-1.0, 0),
    }


def test_wait_window_boundary_moves_with_the_window(boundary_logs):
    one_us_less = _joined(boundary_logs, wait_window=WINDOW - US, default_reward=-1.0)
    assert one_us_less == {"early": (0.25, 1), "exact": (-1.0, 0), "late": (-1.0, 0), "dup": (-1.0, 0),
                           "none": (-1.0, 0)}
    one_us_more = _joined(boundary_logs, wait_window=WINDOW + US, default_reward=-1.0, duplicates="last")
    assert one_us_more == {"early": (0.25, 1), "exact": (0.75, 1), "late": (0.5, 1), "dup": (0.0, 2),
                           "none": (-1.0, 0)}
    # no window: every outcome counts
    assert _joined(boundary_logs, default_reward=-1.0, duplicates="mean")["dup"] == (0.5, 2)


def test_wait_window_boundary_in_logged_feedback(boundary_logs):
    # without default_reward the rounds without a counted outcome are dropped
    fb = LoggedFeedback.from_logs(boundary_logs, wait_window=WINDOW)
    assert fb.n_rounds == 3
    assert fb.rewards.tolist() == [0.25, 0.75, 1.0]  # early, exact, dup, in decision order
    assert fb.actions.tolist() == [0, 1, 1]
    assert fb.metrics["quality"].to_list() == [0.25, 0.75, 1.0]
    fb = LoggedFeedback.from_logs(boundary_logs, wait_window=WINDOW, default_reward=0.0)
    assert fb.rewards.tolist() == [0.25, 0.75, 0.0, 1.0, 0.0]
    assert fb.metrics["quality"].to_list() == [0.25, 0.75, None, 1.0, None]
    # the partitioned join applies the same boundary
    fb = ope.feedback_from_logs(boundary_logs, wait_window=WINDOW, default_reward=0.0, n_partitions=3)
    assert fb.rewards.tolist() == [0.25, 0.75, 0.0, 1.0, 0.0]


def test_wait_window_boundary_through_the_cli(boundary_logs, capsys):
    code = ope_cli([str(boundary_logs), "--wait-window-s", str(WINDOW_US / 1e6), "--estimators", "ips",
                    "--policy", "logging=logging", "--json", "-"])
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    # on-policy IPS is the mean reward of the three counted rounds
    assert row["n"] == 3 and row["value"] == pytest.approx((0.25 + 0.75 + 1.0) / 3, abs=1e-12)


# ---------------------------------------------------------------------------
# 2. clipping / switching / shrinkage: known answers by hand
# ---------------------------------------------------------------------------

# Four rounds, two actions. Weights w = pi_e(a_i) / p_i = [1/0.25, 1/0.5, 0.5/0.8, 1/0.1].
ACTIONS = [0, 1, 0, 1]
PROPENSITIES = [0.25, 0.5, 0.8, 0.1]
REWARDS_KA = [1.0, 0.0, 1.0, 1.0]
TARGET = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
Q = np.array([[0.5, 0.2], [0.3, 0.6], [0.4, 0.4], [0.1, 0.7]])
W = np.array([4.0, 2.0, 0.625, 10.0])
DIRECT = np.array([0.5, 0.6, 0.4, 0.7])  # sum_k pi_e(k|x_i) q(x_i, k)
RESIDUAL = np.array([0.5, -0.6, 0.6, 0.3])  # r_i - q(x_i, a_i)


@pytest.fixture
def fb():
    return LoggedFeedback(actions=ACTIONS, rewards=REWARDS_KA, propensities=PROPENSITIES, n_actions=2)


def test_hand_computed_ingredients(fb):
    assert ope.importance_weights(fb, TARGET).tolist() == W.tolist()
    assert np.allclose(DM(reward_predictions=Q).per_round(fb, TARGET), DIRECT, rtol=0, atol=1e-15)
    # unclipped DR: mean of [0.5 + 2, 0.6 - 1.2, 0.4 + 0.375, 0.7 + 3] = 6.375 / 4
    assert DR(reward_predictions=Q).estimate(fb, TARGET).value == pytest.approx(1.59375, abs=1e-12)


@pytest.mark.parametrize(("clip", "per_round", "value"), [
    # min(w, clip) = [3, 2, 0.625, 3]: rounds 0 and 3 clipped
    (3.0, [0.5 + 1.5, 0.6 - 1.2, 0.4 + 0.375, 0.7 + 0.9], 3.775 / 4),
    # min(w, clip) = [1, 1, 0.625, 1]: every round but round 2 clipped
    (1.0, [0.5 + 0.5, 0.6 - 0.6, 0.4 + 0.375, 0.7 + 0.3], 2.775 / 4),
    # min(w, clip) = [4, 2, 0.625, 5]: only round 3 clipped
    (5.0, [0.5 + 2.0, 0.6 - 1.2, 0.4 + 0.375, 0.7 + 1.5], 4.875 / 4),
])
def test_dr_clip_known_answer(fb, clip, per_round, value):
    est = DR(reward_predictions=Q, clip=clip).estimate(fb, TARGET)
    np.testing.assert_allclose(est.per_round, per_round, rtol=0, atol=1e-12)
    assert est.value == pytest.approx(value, abs=1e-12)
    # the docstring's formula, with numpy
    assert est.value == pytest.approx(np.mean(DIRECT + np.minimum(W, clip) * RESIDUAL), abs=1e-12)


def test_dr_clip_limits_and_direction(fb):
    unclipped = DR(reward_predictions=Q).estimate(fb, TARGET)
    for big in (math.inf, 10.0, 1e9):  # at or above the largest weight: nothing to clip
        est = DR(reward_predictions=Q, clip=big).estimate(fb, TARGET)
        np.testing.assert_allclose(est.per_round, unclipped.per_round, rtol=0, atol=1e-12)
    # the rounds with weights above 2 (0 and 3) have positive residuals, so lowering the clip from
    # the largest weight down to 2 lowers the value strictly, and only those rounds move
    values = [DR(reward_predictions=Q, clip=c).estimate(fb, TARGET).value for c in (10.0, 6.0, 4.0, 3.0, 2.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    moved = DR(reward_predictions=Q, clip=2.0).per_round(fb, TARGET) != unclipped.per_round
    assert moved.tolist() == [True, False, False, True]
    # the interval follows the clipped per-round values
    est = DR(reward_predictions=Q, clip=3.0).estimate(fb, TARGET)
    assert est.stderr == pytest.approx(np.std(est.per_round, ddof=1) / 2, rel=1e-9)


@pytest.mark.parametrize(("clip", "value"), [
    (3.0, (3.0 * 1 + 0 + 0.625 * 1 + 3.0 * 1) / 4),
    (1.0, (1.0 + 0 + 0.625 + 1.0) / 4),
    (None, (4.0 + 0 + 0.625 + 10.0) / 4),
    (math.inf, (4.0 + 0 + 0.625 + 10.0) / 4),
])
def test_ips_clip_known_answer(fb, clip, value):
    assert IPS(clip=clip).estimate(fb, TARGET).value == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize(("threshold", "per_round"), [
    # 1[w <= 2] = [0, 1, 1, 0]: a weight exactly at the threshold keeps its correction
    (2.0, [0.5, 0.6 - 1.2, 0.4 + 0.375, 0.7]),
    # just below: round 1 (w = 2) is switched to DM too
    (np.nextafter(2.0, 0.0), [0.5, 0.6, 0.4 + 0.375, 0.7]),
    # 1[w <= 4] = [1, 1, 1, 0]
    (4.0, [0.5 + 2.0, 0.6 - 1.2, 0.4 + 0.375, 0.7]),
    (10.0, [0.5 + 2.0, 0.6 - 1.2, 0.4 + 0.375, 0.7 + 3.0]),  # = DR
    (0.5, [0.5, 0.6, 0.4, 0.7]),  # = DM
])
def test_switch_dr_threshold_known_answer(fb, threshold, per_round):
    est = SwitchDR(reward_predictions=Q, threshold=float(threshold)).estimate(fb, TARGET)
    np.testing.assert_allclose(est.per_round, per_round, rtol=0, atol=1e-12)
    assert est.value == pytest.approx(np.mean(per_round), abs=1e-12)


@pytest.mark.parametrize("shrinkage", [1.0, 4.0, 25.0])
def test_dros_shrinkage_known_answer(fb, shrinkage):
    shrunk = shrinkage * W / (W ** 2 + shrinkage)  # e.g. lambda = 4: [0.8, 1, 0.5694.., 0.3846..]
    est = DRos(reward_predictions=Q, shrinkage=shrinkage).estimate(fb, TARGET)
    np.testing.assert_allclose(est.per_round, DIRECT + shrunk * RESIDUAL, rtol=0, atol=1e-12)
    if shrinkage == 4.0:
        expected = np.mean(DIRECT + np.array([16 / 20, 8 / 8, 2.5 / 4.390625, 40 / 104]) * RESIDUAL)
        assert est.value == pytest.approx(expected, abs=1e-12)
