"""Bad input gets a clear error naming field and value, and changes nothing."""

import pickle

import pytest

import banditroute as br


@pytest.fixture
def router(profiles, tmp_path):
    r = br.Router(profiles, task_types=["chat", "code"], seed=0, log_dir=tmp_path, durability="sync")
    r.record(r.decide({"task_type": "chat"}).id, quality=1.0)
    return r


def state(router):
    return pickle.dumps(router), sorted(p.name for p in router.config.log_dir and
                                        __import__("pathlib").Path(router.config.log_dir).rglob("*.parquet"))


@pytest.mark.parametrize("context, error, message", [
    (["task_type", "chat"], br.InvalidRequestError, r"context must be a mapping of field -> value, got \['task_type', 'chat'\]"),
    ({"task_type": "chat", "x": float("nan")}, br.InvalidRequestError, r"context\.x must be a finite number, got nan"),
    ({"task_type": "chat", "x": float("inf")}, br.InvalidRequestError, r"context\.x must be a finite number, got inf"),
    ({"task_type": "chat", "x": [1.0, float("nan")]}, br.InvalidRequestError, r"context must be JSON-serialisable without NaN"),
    ({"task_type": "chat", "x": object()}, br.InvalidRequestError, r"context must be JSON-serialisable"),
    ({"task_type": "poetry"}, br.InvalidRequestError, r"context\.task_type must be one of \['chat', 'code'\], got 'poetry'"),
    ({"task_type": 3}, br.InvalidRequestError, r"context\.task_type must be one of \['chat', 'code'\], got 3"),
    ({}, br.InvalidRequestError, r"context\.task_type is required \(one of \['chat', 'code'\]\)"),
    ({"task_probs": {"chat": 0.5}}, br.InvalidRequestError, r"context\.task_probs must sum to 1"),
    ({"task_probs": {"poetry": 1.0}}, br.InvalidRequestError, r"context\.task_probs keys must be among"),
    ({"task_probs": {"chat": 1.5}}, br.InvalidRequestError, r"context\.task_probs\.chat must be a probability in \[0, 1\], got 1\.5"),
])
def test_bad_context(router, context, error, message):
    before = state(router)
    for call in (router.decide, router.probabilities, lambda c: router.decide_batch([{"task_type": "chat"}, c])):
        with pytest.raises(error, match=message):
            call(context)
    assert state(router) == before


@pytest.mark.parametrize("kwargs, message", [
    ({"quality": 1.5}, r"quality must be <= 1, got 1\.5"),
    ({"quality": -0.1}, r"quality must be >= 0, got -0\.1"),
    ({"quality": float("nan")}, r"quality must be finite, got nan"),
    ({"quality": "good"}, r"quality must be a number, got 'good'"),
    ({"quality": 1.0, "cost_usd": -1.0}, r"cost_usd must be >= 0, got -1\.0"),
    ({"quality": 1.0, "latency_ms": float("inf")}, r"latency_ms must be finite, got inf"),
])
def test_bad_outcome(router, kwargs, message):
    d = router.decide({"task_type": "code"})
    before = state(router)
    with pytest.raises(br.InvalidOutcomeError, match=message):
        router.record(d.id, **kwargs)
    assert state(router) == before
    assert router.record(d.id, quality=1.0) == "applied"  # the decision is still pending


def test_unknown_decision_id_changes_nothing(router):
    before = state(router)
    with pytest.raises(br.UnknownDecisionError, match=r"decision_id was not issued by this router, got 'abc'"):
        router.record("abc", quality=1.0)
    with pytest.raises(br.UnknownDecisionError, match=r"decision_id must be a decision id string, got 42"):
        router.record(42, quality=1.0)
    assert state(router) == before
    assert isinstance(br.UnknownDecisionError("f", 1), KeyError)
    assert str(br.UnknownDecisionError("decision_id", "x", "is unknown")) == "decision_id is unknown, got 'x'"


def test_bad_profile_arguments(router):
    with pytest.raises(br.ConfigError, match=r"profile must be a Profile, got 'medium'"):
        router.add_profile("medium")
    with pytest.raises(br.ConfigError, match=r"profiles must be a sequence of Profile"):
        br.Router(br.Profile("a"))
    with pytest.raises(br.ConfigError, match=r"profiles must be a non-empty sequence of Profile"):
        br.Router([])


def test_every_error_is_a_banditroute_error_and_a_builtin():
    for cls, builtin in [(br.ConfigError, ValueError), (br.InvalidRequestError, ValueError),
                         (br.InvalidOutcomeError, ValueError), (br.UnknownDecisionError, KeyError),
                         (br.NoFeasibleProfileError, RuntimeError), (br.LogError, OSError)]:
        assert issubclass(cls, br.BanditrouteError) and issubclass(cls, builtin)
        assert cls("some.field", 1, "is bad").field == "some.field"
