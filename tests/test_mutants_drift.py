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


def test_a_detector_needs_a_two_dimensional_shape():
    with pytest.raises(br.ConfigError, match=r"shape must be \(n_profiles, n_task_types\), got \(2,\)") as info:
        br.PageHinkley((2,))
    assert info.value.field == "shape"


def reference_page_hinkley(stream, shape, delta, threshold, min_samples):
    """The module docstring's two-sided Page-Hinkley, one scalar cell at a time."""
    cells = {(k, t): dict(n=0.0, mean=0.0, up=0.0, up_min=0.0, down=0.0, down_min=0.0)
             for k in range(shape[0]) for t in range(shape[1])}
    alarms = []
    for step, (k, w, q) in enumerate(stream):
        for t, wt in enumerate(w):
            if wt <= 0:
                continue
            c = cells[k, t]
            c["up"] += wt * (q - c["mean"] - delta)
            c["down"] += wt * (c["mean"] - q - delta)
            c["up_min"], c["down_min"] = min(c["up_min"], c["up"]), min(c["down_min"], c["down"])
            c["n"] += wt
            c["mean"] += wt * (q - c["mean"]) / c["n"]
            up, down = c["up"] - c["up_min"], c["down"] - c["down_min"]
            if c["n"] >= min_samples and (up > threshold or down > threshold):
                alarms.append((step, (k, t), "decrease" if down >= up else "increase", max(up, down)))
                cells[k, t] = dict(n=0.0, mean=0.0, up=0.0, up_min=0.0, down=0.0, down_min=0.0)
    return alarms


@pytest.mark.parametrize("delta", [0.0, 0.05])
def test_detector_alarms_match_the_documented_statistic(seed, delta):
    rng = np.random.default_rng(seed)
    shape, stream = (2, 3), []
    for i in range(3000):  # quality shifts up and down, mixed task posteriors
        k = int(rng.integers(2))
        w = rng.dirichlet(np.ones(3)) if rng.random() < 0.3 else np.eye(3)[rng.integers(3)]
        p = 0.8 if (i // 400) % 2 == 0 else 0.3
        stream.append((k, w, float(rng.random() < p)))
    detector = br.PageHinkley(shape, delta=delta, threshold=4.0, min_samples=10)
    got = [(step, cell, kind, stat) for step, (k, w, q) in enumerate(stream)
           for cell, kind, stat in detector.update(k, w, q)]
    want = reference_page_hinkley(stream, shape, delta, 4.0, 10)
    assert len(want) >= 10 and {a[2] for a in want} == {"increase", "decrease"}  # both directions exercised
    assert [a[:3] for a in got] == [a[:3] for a in want]
    assert np.allclose([a[3] for a in got], [a[3] for a in want], rtol=1e-9, atol=1e-12)


def test_an_alarm_can_fire_on_the_outcome_that_reaches_min_samples():
    d = br.PageHinkley((1, 1), delta=0.0, threshold=0.5, min_samples=5)
    # 1, 1, 1, 1 then 0: the fifth outcome takes the down statistic from 0 to 1 > 0.5, at n = 5
    alarms = [d.update(0, np.array([1.0]), q) for q in (1.0, 1.0, 1.0, 1.0, 0.0)]
    assert alarms[:4] == [[]] * 4
    assert [a[:2] for a in alarms[4]] == [((0, 0), "decrease")] and alarms[4][0][2] == pytest.approx(1.0)


def test_a_tie_between_the_two_statistics_is_reported_as_a_decrease():
    # delta = 0: up = -down, so 1.0 then 0.5 leaves both at 0.5 above their minimum
    d = br.PageHinkley((1, 1), delta=0.0, threshold=0.4, min_samples=2)
    assert d.update(0, np.array([1.0]), 1.0) == []
    assert d.update(0, np.array([1.0]), 0.5) == [((0, 0), "decrease", 0.5)]
