"""Drift-triggered recalibration: detection, false alarms, logging, replay."""

import numpy as np
import pytest

import banditroute as br
from conftest import TASKS, train

TRUTH = {"small": {"chat": 0.8, "code": 0.3, "math": 0.2},
         "medium": {"chat": 0.8, "code": 0.6, "math": 0.5},
         "large": {"chat": 0.8, "code": 0.9, "math": 0.9}}


def test_degradation_is_detected_and_routed_around(profiles, seed, tmp_path):
    rng = np.random.default_rng(seed)
    router = br.Router(profiles, task_types=["code"], seed=seed, exploration=0.02, drift=br.DriftConfig(),
                       log_dir=tmp_path)
    truth = {"small": {"code": 0.3}, "medium": {"code": 0.6}, "large": {"code": 0.9}}
    train(router, truth, 3000, rng, ["code"])
    assert router.drift_events == []  # no false alarm in 3,000 stationary outcomes
    truth["large"]["code"] = 0.2
    shares = []
    for _ in range(40):
        train(router, truth, 25, rng, ["code"])
        shares.append(router.probabilities({"task_type": "code"})["large"])
    assert router.drift_events[0]["profile"] == "large" and router.drift_events[0]["change"] == "decrease"
    assert router.drift_events[0]["n_updates"] - 3000 <= 200  # detected within a few hundred outcomes
    assert min(shares[:8]) < 0.1 and np.mean(shares[20:]) < 0.05
    events = br.scan_table(tmp_path, "events").collect()
    assert events["event"].to_list()[0] == "drift" and events["policy"].to_list()[0] == "large/code"
    assert "Page-Hinkley decrease statistic" in events["why"].to_list()[0]


def test_false_alarms_are_rare_on_stationary_traffic(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, exploration=0.1, drift=br.DriftConfig())
    train(router, TRUTH, 15_000, np.random.default_rng(seed))
    assert len(router.drift_events) <= 1


def test_replay_reproduces_recalibrations(profiles, seed, tmp_path):
    rng = np.random.default_rng(seed)
    kwargs = dict(task_types=["code"], seed=seed, drift=br.DriftConfig(threshold=8.0, keep=0.2))
    live = br.Router(profiles, log_dir=tmp_path, **kwargs)
    truth = {"small": {"code": 0.3}, "medium": {"code": 0.6}, "large": {"code": 0.9}}
    train(live, truth, 800, rng, ["code"])
    truth["large"]["code"], truth["small"]["code"] = 0.1, 0.95
    train(live, truth, 800, rng, ["code"])
    live.flush()
    assert live.drift_events
    fresh = br.Router(profiles, **kwargs)
    fresh.replay(tmp_path)
    assert fresh.drift_events == live.drift_events
    assert np.array_equal(fresh.evidence()[0], live.evidence()[0])


def test_drift_config_from_toml(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text("[drift]\nthreshold = 12.0\nkeep = 0.1\n[[profiles]]\nname = 'a'\n")
    assert br.Router.from_config(path).config.drift == br.DriftConfig(threshold=12.0, keep=0.1)
    path.write_text("[drift]\nthreshhold = 12.0\n[[profiles]]\nname = 'a'\n")
    with pytest.raises(br.ConfigError, match=r"routes\.toml: drift\.threshhold is not a known key"):
        br.Router.from_config(path)
