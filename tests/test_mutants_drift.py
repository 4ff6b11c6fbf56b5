"""Drift detection: its configuration's bounds and a profile added to a router that watches
for drift (surviving mutants of ``banditroute/drift.py``, TESTING.md)."""

import numpy as np
import pytest

import banditroute as br


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"delta": -0.1}, "drift.delta", r"drift.delta must be >= 0, got -0.1"),
    ({"threshold": 0.0}, "drift.threshold", r"drift.threshold must be > 0, got 0.0"),
    ({"threshold": -1.0}, "drift.threshold", r"drift.threshold must be > 0, got -1.0"),
    ({"min_samples": -1.0}, "drift.min_samples", r"drift.min_samples must be >= 0, got -1.0"),
    ({"keep": -0.1}, "drift.keep", r"drift.keep must be >= 0, got -0.1"),
    ({"keep": 1.0}, "drift.keep", r"drift.keep must be < 1, got 1.0"),
    ({"keep": 1.5}, "drift.keep", r"drift.keep must be < 1, got 1.5"),
])
def test_drift_config_refuses_out_of_range_values_by_name(kwargs, field, message):
    with pytest.raises(br.ConfigError, match=message) as info:
        br.DriftConfig(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("kwargs", [{"delta": 0.0}, {"threshold": 1e-9}, {"min_samples": 0.0},
                                    {"min_samples": 0.5}, {"keep": 0.0}, {"keep": 0.99}])
def test_drift_config_accepts_the_edges_of_its_ranges(kwargs):
    cfg = br.DriftConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(cfg, name) == value


def test_a_detector_grows_with_a_new_profile_and_keeps_the_state_of_the_others():
    d = br.PageHinkley((1, 2), delta=0.0, threshold=3.0, min_samples=5)
    for _ in range(10):
        assert d.update(0, np.array([1.0, 0.0]), 1.0) == []
    d.add_profile()
    # the old cell kept its evidence: 10 outcomes of 1.0, so a run of 0.0 raises an alarm
    # on the 4th (down statistic 1 + 10/11 + 10/12 + 10/13 = 3.51 > 3)
    alarms = [d.update(0, np.array([1.0, 0.0]), 0.0) for _ in range(6)]
    first = next(i for i, a in enumerate(alarms) if a)
    assert alarms[first][0][:2] == ((0, 0), "decrease") and first == 3
    # the new profile's cells start empty and detect on their own
    for _ in range(10):
        assert d.update(1, np.array([0.0, 1.0]), 0.0) == []
    alarms = [d.update(1, np.array([0.0, 1.0]), 1.0) for _ in range(6)]
    assert any(a and a[0][:2] == ((1, 1), "increase") for a in alarms)


def test_a_router_watching_for_drift_detects_it_on_a_profile_added_later():
    router = br.Router([br.Profile("a", cost_usd=0.0, latency_ms=1.0, allow={"lane": ["a"]})],
                       task_types=["t"], drift=br.DriftConfig(delta=0.0, threshold=3.0, min_samples=5),
                       seed=0)
    router.add_profile(br.Profile("b", cost_usd=0.0, latency_ms=1.0, allow={"lane": ["b"]}))
    for quality in [1.0] * 20 + [0.0] * 10:
        d = router.decide({"lane": "b"})
        assert d.profile == "b"
        router.record(d.id, quality=quality)
    assert [(e["profile"], e["task_type"], e["change"]) for e in router.drift_events][:1] == [("b", "t", "decrease")]
