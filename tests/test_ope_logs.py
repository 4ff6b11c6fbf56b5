"""Reading banditroute-schema Parquet logs (fixtures written with polars)."""

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import ope
from ope import InvalidConfigError, InvalidFeedbackError, LoggedFeedback, LogsNotFoundError

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)

DECISION_SCHEMA = {
    "decision_id": pl.String, "ts": pl.Datetime("us", "UTC"), "writer": pl.String, "seq": pl.Int64,
    "policy_version": pl.String, "context": pl.String, "task_types": pl.List(pl.String),
    "task_probs": pl.List(pl.Float64), "profiles": pl.List(pl.String), "probabilities": pl.List(pl.Float64),
    "profile": pl.String, "propensity": pl.Float64, "excluded": pl.String, "fallback_reason": pl.String,
    "schema_version": pl.Int32,
}
OUTCOME_SCHEMA = {
    "decision_id": pl.String, "ts": pl.Datetime("us", "UTC"), "writer": pl.String, "seq": pl.Int64,
    "quality": pl.Float64, "cost_usd": pl.Float64, "latency_ms": pl.Float64, "reward": pl.Float64,
    "status": pl.String, "schema_version": pl.Int32,
}


def decision(i, profiles, probs, executed, *, minutes=0, context=None, writer="w1", extra=None):
    row = {
        "decision_id": f"d{i}", "ts": T0 + dt.timedelta(minutes=minutes), "writer": writer, "seq": i,
        "policy_version": "v1", "context": json.dumps(context or {"task_type": "code", "prompt_tokens": 100 + i, "tenant": "acme"}),
        "task_types": ["chat", "code"], "task_probs": [0.3, 0.7], "profiles": profiles, "probabilities": probs,
        "profile": executed, "propensity": probs[profiles.index(executed)], "excluded": "{}",
        "fallback_reason": None, "schema_version": 1,
    }
    row.update(extra or {})
    return row


def outcome(i, reward, *, minutes=1, quality=None, cost=0.001, latency=500.0, status="applied", writer="w1"):
    return {
        "decision_id": f"d{i}", "ts": T0 + dt.timedelta(minutes=minutes), "writer": writer, "seq": i,
        "quality": reward if quality is None else quality, "cost_usd": cost, "latency_ms": latency,
        "reward": reward, "status": status, "schema_version": 1,
    }


def write(root, kind, rows, *, date="2025-01-01", writer="w1", seq=0, schema=None):
    path = root / kind / f"date={date}"
    path.mkdir(parents=True, exist_ok=True)
    base = DECISION_SCHEMA if kind == "decisions" else OUTCOME_SCHEMA
    schema = {**base, **(schema or {})}
    pl.DataFrame(rows, schema=schema).write_parquet(path / f"part-{writer}-{seq:06d}.parquet")


@pytest.fixture
def logs(tmp_path):
    ab = (["a", "b"], [0.5, 0.5])
    abc = (["a", "b", "c"], [0.2, 0.3, 0.5])
    write(tmp_path, "decisions", [decision(0, *ab, "a"), decision(1, *ab, "b")], writer="w1")
    write(tmp_path, "decisions", [decision(2, *ab, "a", minutes=5, writer="w2")], writer="w2")
    write(tmp_path, "decisions", [decision(3, *abc, "c", minutes=60 * 24), decision(4, *abc, "b", minutes=60 * 24 + 1)],
          date="2025-01-02", writer="w1", seq=1)
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0, minutes=2), outcome(1, 1.0, minutes=3)])
    write(tmp_path, "outcomes", [outcome(2, 0.5, minutes=30, writer="w2"), outcome(3, 1.0, minutes=60 * 24 + 90, status="late")],
          date="2025-01-02", writer="w2", seq=3)
    # d4 has no outcome
    return tmp_path


def test_action_space_union_in_order(logs):
    assert ope.action_space(logs) == ("a", "b", "c")


def test_join_default_first_drops_missing(logs):
    fb = LoggedFeedback.from_logs(logs)
    assert fb.n_rounds == 4 and fb.action_names == ("a", "b", "c")
    order = np.argsort(fb.propensities * 0 + np.arange(4))
    assert fb.actions[order].tolist() == [0, 1, 0, 2]
    assert fb.rewards.tolist() == [1.0, 0.0, 0.5, 1.0]
    assert fb.propensities.tolist() == [0.5, 0.5, 0.5, 0.5]
    np.testing.assert_allclose(fb.logging_distribution[-1], [0.2, 0.3, 0.5])
    np.testing.assert_allclose(fb.logging_distribution[0], [0.5, 0.5, 0.0])


@pytest.mark.parametrize(("rule", "expected"), [("first", 0.0), ("last", 1.0), ("mean", 0.5)])
def test_duplicate_rules(logs, rule, expected):
    frame = ope.join_logs(logs, duplicates=rule).filter(pl.col("decision_id") == "d1").collect()
    assert frame["reward"].to_list() == [expected] and frame["n_outcomes"].to_list() == [2]


def test_wait_window_and_default_reward(logs):
    frame = ope.join_logs(logs, wait_window=dt.timedelta(minutes=20), default_reward=-1.0).sort("decision_id").collect()
    # d2 (30 min) and d3 (90 min) are too late, d4 never came
    assert frame["reward"].to_list() == [1.0, 0.0, -1.0, -1.0, -1.0]
    assert frame["n_outcomes"].to_list() == [1, 2, 0, 0, 0]
    fb = LoggedFeedback.from_logs(logs, wait_window=dt.timedelta(minutes=20))
    assert fb.n_rounds == 2
    fb = LoggedFeedback.from_logs(logs, default_reward=0.0)
    assert fb.n_rounds == 5


def test_metric_rewards_and_cohorts(logs):
    fb = LoggedFeedback.from_logs(logs, reward="cost_usd", cohorts=("task_type", "tenant", "profile"))
    assert np.allclose(fb.rewards, 0.001)
    assert fb.cohorts.columns == ["task_type", "tenant", "profile"]
    assert fb.cohorts["task_type"].to_list() == ["code"] * 4
    assert set(fb.metrics.columns) == {"reward", "quality", "cost_usd", "latency_ms"}
    assert fb.with_reward("latency_ms").rewards.tolist() == [500.0] * 4


def test_task_type_falls_back_to_posterior(tmp_path):
    write(tmp_path, "decisions", [decision(0, ["a", "b"], [0.5, 0.5], "a", context={"tenant": "x"})])
    write(tmp_path, "outcomes", [outcome(0, 1.0)])
    fb = LoggedFeedback.from_logs(tmp_path, cohorts=("task_type",))
    assert fb.cohorts["task_type"].to_list() == ["code"]


def test_contexts_decoded_only_when_asked(logs):
    assert LoggedFeedback.from_logs(logs).contexts is None
    fb = LoggedFeedback.from_logs(logs, contexts=True)
    assert fb.contexts.columns == ["task_type", "prompt_tokens", "tenant"]
    assert fb.contexts["prompt_tokens"].to_list() == [100, 101, 102, 103]
    fb = LoggedFeedback.from_logs(logs, contexts=["prompt_tokens"])
    assert fb.contexts.columns == ["prompt_tokens"]
    q = ope.cross_fit_predictions(LoggedFeedback.from_logs(logs, contexts=True), __import__("sklearn.linear_model").linear_model.Ridge(), n_folds=2, seed=0)
    assert q.shape == (4, 3)


def test_unknown_and_missing_columns(tmp_path):
    write(tmp_path, "decisions", [decision(0, ["a", "b"], [0.5, 0.5], "a")])
    write(tmp_path, "decisions", [decision(1, ["a", "b"], [0.5, 0.5], "b", extra={"shadow": "x"})], seq=1,
          schema={"shadow": pl.String})
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0)])
    assert LoggedFeedback.from_logs(tmp_path).n_rounds == 2


def test_bad_logs(tmp_path):
    with pytest.raises(LogsNotFoundError, match="log_dir has no decisions"):
        LoggedFeedback.from_logs(tmp_path)
    write(tmp_path, "decisions", [decision(0, ["a", "b"], [0.5, 0.5], "a")])
    with pytest.raises(InvalidFeedbackError, match="empty log after the join") as info:
        LoggedFeedback.from_logs(tmp_path)
    assert info.value.field == "log_dir"
    with pytest.raises(InvalidConfigError, match=r"wait_window must be a non-negative timedelta"):
        ope.join_logs(tmp_path, wait_window=5)
    with pytest.raises(InvalidConfigError, match=r"default_reward must be a finite number"):
        ope.join_logs(tmp_path, default_reward=float("nan"))
    write(tmp_path, "outcomes", [outcome(0, 1.0, quality=None) | {"quality": None}])
    with pytest.raises(InvalidFeedbackError, match="quality is null at round 0"):
        LoggedFeedback.from_logs(tmp_path, reward="quality")


def test_bad_propensity_in_logs(tmp_path):
    row = decision(0, ["a", "b"], [0.5, 0.5], "a")
    row["propensity"] = 0.0
    write(tmp_path, "decisions", [row])
    write(tmp_path, "outcomes", [outcome(0, 1.0)])
    with pytest.raises(InvalidFeedbackError, match=r"propensities must be in \(0, 1\], got 0.0 at round 0"):
        LoggedFeedback.from_logs(tmp_path, logging_distribution=False)


def test_cli_prints_and_writes_json(logs, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ope", str(logs), "--policy", "logging=logging", "--policy", "c=always:c",
         "--estimators", "ips,snips,dr", "--json", str(out), "--seed", "0", "--n-folds", "2"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SNIPS" in proc.stdout
    rows = json.loads(out.read_text())
    assert {(r["policy"], r["estimator"]) for r in rows} == {(p, e) for p in ("logging", "c") for e in ("IPS", "SNIPS", "DR")}
    logging_ips = next(r for r in rows if r["policy"] == "logging" and r["estimator"] == "IPS")
    assert logging_ips["value"] == pytest.approx(2.5 / 4)
    bad = subprocess.run([sys.executable, "-m", "ope", str(logs), "--policy", "x=always:zzz"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown profile" in bad.stderr


def test_partitions_give_identical_feedback(logs):
    one = ope.feedback_from_logs(logs, n_partitions=1, cohorts=("tenant",), contexts=True, default_reward=0.0)
    many = ope.feedback_from_logs(logs, n_partitions=3, cohorts=("tenant",), contexts=True, default_reward=0.0)
    for name in ("actions", "rewards", "propensities", "logging_distribution"):
        assert np.array_equal(getattr(one, name), getattr(many, name)), name
    assert one.contexts.equals(many.contexts) and one.cohorts.equals(many.cohorts) and one.metrics.equals(many.metrics)
    assert one.rewards.tolist() == [1.0, 0.0, 0.5, 1.0, 0.0]  # scan order, d4 filled with the default
    assert one.metrics["quality"].null_count() == 1
    with pytest.raises(InvalidConfigError, match=r"partition must be \(i, n\) with 0 <= i < n, got \(3, 3\)"):
        ope.join_logs(logs, partition=(3, 3))


def test_logging_distribution_with_reordered_profiles(tmp_path):
    write(tmp_path, "decisions", [decision(0, ["a", "b"], [0.4, 0.6], "a"), decision(1, ["b", "c", "a"], [0.1, 0.2, 0.7], "c", minutes=5)])
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0)])
    fb = LoggedFeedback.from_logs(tmp_path)
    assert fb.action_names == ("a", "b", "c")
    np.testing.assert_allclose(fb.logging_distribution, [[0.4, 0.6, 0.0], [0.7, 0.1, 0.2]])
    assert fb.actions.tolist() == [0, 2] and fb.propensities.tolist() == [0.4, 0.2]
