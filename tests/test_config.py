import textwrap

import pytest

import banditroute as br
from banditroute.errors import ConfigError


def test_profile_validation_names_field_and_value():
    with pytest.raises(ConfigError, match=r"profiles\[x\]\.cost_usd must be >= 0, got -1\.0"):
        br.Profile("x", cost_usd=-1.0)
    with pytest.raises(ConfigError, match=r"profiles\[x\]\.latency_ms must be finite, got nan"):
        br.Profile("x", latency_ms=float("nan"))
    with pytest.raises(ConfigError, match=r"profile\.name must be a non-empty name"):
        br.Profile("")
    with pytest.raises(ConfigError, match=r"profiles\[x\]\.allow\.tenant must be a list"):
        br.Profile("x", allow={"tenant": "acme"})


def test_objective_and_budget_validation():
    with pytest.raises(ConfigError, match=r"objective\.cost must be >= 0, got -2\.0"):
        br.Objective(cost=-2.0)
    with pytest.raises(ConfigError, match=r"budget\.max_latency_ms must be a number, got 'fast'"):
        br.Budget(max_latency_ms="fast")
    with pytest.raises(ConfigError, match=r"prior\.alpha must be > 0, got 0\.0"):
        br.BetaPrior(alpha=0.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"exploration": 1.0}, r"exploration must be < 1, got 1\.0"),
    ({"discount": 0.0}, r"discount must be > 0, got 0\.0"),
    ({"n_draws": 0}, r"n_draws must be an integer >= 1 and <= 100,000, got 0"),
    ({"n_draws": 10**9}, r"n_draws must be an integer >= 1 and <= 100,000, got 1000000000"),
    ({"max_pending": 10**12}, r"max_pending must be an integer >= 1 and <= 50,000,000, got 1000000000000"),
    ({"fallback": "nope"}, r"fallback must be one of the profiles .*, got 'nope'"),
    ({"task_types": ["a", "a"]}, r"task_types must not repeat a name"),
    ({"durability": "never"}, r"durability must be 'group' or 'sync', got 'never'"),
    ({"seed": -1}, r"seed must be a non-negative integer or None, got -1"),
    ({"reliability_floor": 1.5}, r"reliability_floor must be < 1, got 1\.5"),
    ({"policy": "exp3"}, r"policy must be 'thompson', 'greedy', 'linear', 'squarecb' or 'ucb', got 'exp3'"),
])
def test_router_settings_validation(profiles, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        br.Router(profiles, **kwargs)


def test_duplicate_profile_rejected():
    with pytest.raises(ConfigError, match=r"profiles\[1\]\.name is a duplicate, got 'a'"):
        br.Router([br.Profile("a"), br.Profile("a")])


def test_unknown_keyword_fails_loudly(profiles):
    with pytest.raises(TypeError, match="explorattion"):
        br.Router(profiles, explorattion=0.1)


ROUTES = """
[router]
task_types = ["chat", "code"]
exploration = 0.05
discount = 0.99
fallback = "small"
seed = 3

[objective]
quality = 1.0
cost = 20.0

[budget]
max_latency_ms = 3000

[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400

[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
tags = ["frontier"]
allow = { tenant = ["acme"] }
prior = { code = { alpha = 9, beta = 1 } }
"""


def test_from_config_builds_the_router(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    router = br.Router.from_config(path)
    cfg = router.config
    assert router.profiles == ["small", "large"]
    assert cfg.task_types == ("chat", "code") and cfg.exploration == 0.05 and cfg.discount == 0.99
    assert cfg.objective.cost == 20.0 and cfg.budget.max_latency_ms == 3000
    large = cfg.profiles[1]
    assert large.allow == {"tenant": frozenset({"acme"})} and large.tags == ("frontier",)
    beliefs = router.beliefs().filter(profile="large")
    assert beliefs.filter(task_type="code")["alpha"].item() == 9.0
    assert beliefs.filter(task_type="chat")["alpha"].item() == 1.0
    # the allow-list is applied: another tenant never gets "large"
    assert router.probabilities({"task_type": "code", "tenant": "other"})["large"] == 0.0


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("cost_usd = 0.0004", "cost_usd = -1"), r"routes\.toml: profiles\[0\]\.cost_usd must be >= 0, got -1"),
    (lambda s: s.replace("exploration = 0.05", "exploraton = 0.05"), r"routes\.toml: router\.exploraton is not a known key"),
    (lambda s: s.replace("quality = 1.0", "quality = 1.0\nspeed = 2"), r"routes\.toml: objective\.speed is not a known key"),
    (lambda s: s.replace('name = "large"', 'name = "large"\ncolour = "red"'), r"routes\.toml: profiles\[1\]\.colour is not a known key"),
    (lambda s: s.replace('fallback = "small"', 'fallback = "tiny"'), r"routes\.toml: router\.fallback must be one of the profiles"),
    (lambda s: s.replace("alpha = 9", "alpha = -9"), r"routes\.toml: profiles\[1\]\.prior\.code\.alpha must be > 0"),
    (lambda s: s + "\n[extra]\n", r"routes\.toml: extra is not a known section"),
    (lambda s: s.replace("[[profiles]]", "[[profilez]]"), r"routes\.toml: profilez is not a known section"),
    (lambda s: s.replace('task_types = ["chat", "code"]', 'task_types = "chat"'), r"routes\.toml: router\.task_types must be a list"),
    (lambda s: s + "\n[router\n", r"routes\.toml is not valid TOML"),
])
def test_malformed_config_names_the_key(tmp_path, edit, message):
    path = tmp_path / "routes.toml"
    path.write_text(edit(ROUTES))
    with pytest.raises(ConfigError, match=message):
        br.Router.from_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config cannot be read .*missing\.toml"):
        br.Router.from_config(tmp_path / "missing.toml")


def test_policy_version_tracks_decision_shaping_settings(profiles):
    a = br.Router(profiles, seed=0).policy_version
    assert a == br.Router(profiles, seed=1).policy_version  # the seed does not shape the policy
    assert a != br.Router(profiles, exploration=0.1).policy_version
    assert br.Router(profiles, policy_version="v7").policy_version == "v7"
