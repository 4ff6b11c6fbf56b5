"""LoggedFeedback validation, constructors and helpers."""

import numpy as np
import polars as pl
import pytest

import ope
from ope import InvalidFeedbackError, InvalidTargetError, LoggedFeedback


def make(**over):
    base = dict(actions=[0, 1, 2], rewards=[1.0, 0.0, 0.5], propensities=[0.5, 0.25, 0.25], n_actions=3)
    base.update(over)
    return LoggedFeedback(**base)


def test_valid_feedback_is_readonly():
    fb = make()
    assert fb.n_rounds == 3 and len(fb) == 3
    assert fb.actions.dtype == np.int64 and fb.rewards.dtype == np.float64
    with pytest.raises(ValueError):
        fb.rewards[0] = 2.0
    with pytest.raises(AttributeError, match="immutable"):
        fb.rewards = np.zeros(3)


def test_user_array_not_frozen():
    r = np.array([1.0, 0.0, 0.5])
    make(rewards=r)
    r[0] = 3.0  # caller's array stays writeable


@pytest.mark.parametrize(
    ("over", "field", "match"),
    [
        ({"propensities": [0.5, 0.0, 0.25]}, "propensities", r"propensities must be in \(0, 1\], got 0.0 at round 1"),
        ({"propensities": [0.5, -0.1, 0.25]}, "propensities", r"propensities must be in \(0, 1\], got -0.1"),
        ({"propensities": [0.5, 1.5, 0.25]}, "propensities", r"propensities must be in \(0, 1\], got 1.5"),
        ({"propensities": [0.5, np.nan, 0.25]}, "propensities", r"propensities must not be NaN, got nan at round 1"),
        ({"rewards": [1.0, np.nan, 0.0]}, "rewards", r"rewards must be finite, got nan at round 1"),
        ({"rewards": [1.0, np.inf, 0.0]}, "rewards", r"rewards must be finite, got inf"),
        ({"actions": [0, 3, 1]}, "actions", r"actions must be in \[0, 3\), got 3 at round 1"),
        ({"actions": [0, -1, 1]}, "actions", r"actions must be in \[0, 3\), got -1"),
        ({"actions": [0, 1.5, 1]}, "actions", r"actions must be integers, got 1.5 at round 1"),
        ({"rewards": [1.0, 0.0]}, "rewards", r"rewards has length 2 but actions has length 3"),
        ({"propensities": [0.5] * 4}, "propensities", r"propensities has length 4 but actions has length 3"),
        ({"actions": [], "rewards": [], "propensities": []}, "actions", r"actions is empty"),
        ({"n_actions": 0}, "n_actions", r"n_actions must be an integer >= 1, got 0"),
        ({"action_names": ["a", "b"]}, "action_names", r"action_names has 2 names but n_actions is 3"),
        ({"action_names": ["a", "a", "b"]}, "action_names", r"action_names must be unique"),
        ({"contexts": pl.DataFrame({"x": [1, 2]})}, "contexts", r"contexts has 2 rows but actions has length 3"),
        ({"cohorts": [1, 2, 3]}, "cohorts", r"cohorts must be a polars DataFrame, got list"),
        (
            {"logging_distribution": [[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.5, 0.25, 0.3]]},
            "logging_distribution",
            r"logging_distribution rows must be probabilities summing to 1, got .* at round 2",
        ),
        (
            {"logging_distribution": [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]]},
            "logging_distribution",
            r"logging_distribution gives 0.5 for the logged action but propensities is 0.25 at round 1",
        ),
    ],
)
def test_bad_feedback_names_field(over, field, match):
    with pytest.raises(InvalidFeedbackError, match=match) as info:
        make(**over)
    assert info.value.field == field
    assert isinstance(info.value, ValueError) and isinstance(info.value, ope.OPEError)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ([[1.0, 0.0, 0.0]] * 2, r"target must have shape \(3, 3\), got \(2, 3\)"),
        ([[1.0, 0.0, 0.0], [0.5, 0.4, 0.0], [1.0, 0.0, 0.0]], r"target rows must sum to 1, got sum 0.9 at round 1"),
        ([[1.0, 0.0, 0.0], [1.5, -0.5, 0.0], [1.0, 0.0, 0.0]], r"target must be >= 0, got \[1.5, -0.5, 0.0\] at round 1"),
        ([[1.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [1.0, 0.0, 0.0]], r"target must be finite"),
    ],
)
def test_bad_target_names_field(target, match):
    with pytest.raises(InvalidTargetError, match=match) as info:
        ope.IPS().estimate(make(), target)
    assert info.value.field == "target"


def test_from_obp_dict():
    rng = np.random.default_rng(0)
    pi_b = rng.dirichlet(np.ones(4), size=10)[:, :, None]
    action = np.array([rng.choice(4, p=p[:, 0]) for p in pi_b])
    bf = {
        "n_rounds": 10, "n_actions": 4, "action": action, "reward": rng.binomial(1, 0.5, 10),
        "position": np.zeros(10, int), "pscore": pi_b[np.arange(10), action, 0],
        "context": rng.normal(size=(10, 2)), "action_context": np.eye(4), "pi_b": pi_b,
    }
    fb = LoggedFeedback.from_obp(bf)
    assert fb.n_actions == 4 and fb.contexts.columns == ["x0", "x1"]
    np.testing.assert_allclose(fb.logging_distribution, pi_b[:, :, 0])
    with pytest.raises(InvalidFeedbackError, match="slates"):
        LoggedFeedback.from_obp({**bf, "position": np.arange(10) % 2})
    with pytest.raises(InvalidFeedbackError, match="missing the key 'pscore'"):
        LoggedFeedback.from_obp({k: v for k, v in bf.items() if k != "pscore"})


def test_filter_and_with_reward():
    fb = make(
        cohorts=pl.DataFrame({"task_type": ["a", "b", "a"]}),
        metrics=pl.DataFrame({"quality": [1.0, None, 0.0], "cost_usd": [0.1, 0.2, 0.3]}),
        logging_distribution=[[0.5, 0.25, 0.25]] * 3,
    )
    sub = fb.filter(fb.cohorts["task_type"] == "a")
    assert sub.n_rounds == 2 and sub.logging_distribution.shape == (2, 3)
    assert sub.metrics["cost_usd"].to_list() == [0.1, 0.3]
    assert fb.with_reward("cost_usd").rewards.tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(InvalidFeedbackError, match="metric 'quality' is null at round 1"):
        fb.with_reward("quality")
    with pytest.raises(InvalidFeedbackError, match="metric must be one of"):
        fb.with_reward("latency_ms")
    assert sub.with_reward("quality").rewards.tolist() == [1.0, 0.0]
