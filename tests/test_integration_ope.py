"""banditroute's logs read back by ope: exact propensities make unbiased estimates."""

import json

import numpy as np
import pytest

import banditroute as br
import ope
from conftest import TASKS

TRUTH = {"small": {"chat": 0.8, "code": 0.3, "math": 0.2},
         "medium": {"chat": 0.8, "code": 0.6, "math": 0.5},
         "large": {"chat": 0.8, "code": 0.9, "math": 0.9}}


def run(profiles, seed, log_dir, n=6000, **kwargs):
    rng = np.random.default_rng(seed)
    router = br.Router(profiles, task_types=TASKS, seed=seed, log_dir=log_dir, exploration=0.2, **kwargs)
    decisions = []
    for i in range(n):
        ctx = {"task_type": TASKS[i % 3], "tenant": ["acme", "globex"][i % 2]}
        d = router.decide(ctx)
        router.record(d.id, quality=float(rng.random() < TRUTH[d.profile][ctx["task_type"]]))
        decisions.append(d)
    router.flush()
    return router, decisions


def test_from_logs_reads_exactly_what_was_logged(profiles, seed, tmp_path):
    router, decisions = run(profiles, seed, tmp_path, n=500)
    fb = ope.LoggedFeedback.from_logs(tmp_path, contexts=True, cohorts=("tenant", "task_type"))
    assert fb.n_rounds == 500 and list(fb.action_names) == router.profiles
    by_id = {d.id: d for d in decisions}
    assert np.allclose(sorted(fb.propensities), sorted(d.propensity for d in decisions), rtol=0, atol=0)
    assert set(fb.contexts.columns) >= {"task_type", "tenant"}
    assert len(by_id) == 500


def test_logged_policy_and_static_table_are_recovered(profiles, seed, tmp_path):
    _, decisions = run(profiles, seed, tmp_path)
    fb = ope.LoggedFeedback.from_logs(tmp_path, contexts=True)
    names = list(fb.action_names)
    tasks = fb.contexts["task_type"].to_list()
    table = {"chat": "small", "code": "large", "math": "medium"}
    target = np.zeros((fb.n_rounds, len(names)))
    target[np.arange(fb.n_rounds), [names.index(table[t]) for t in tasks]] = 1.0
    truth = np.mean([TRUTH[table[t]][t] for t in tasks])
    for estimator in (ope.IPS(), ope.SNIPS()):
        est = estimator.estimate(fb, target, alpha=0.001, seed=seed)
        assert est.ci_low <= truth <= est.ci_high, (type(estimator).__name__, est.value, truth)
    weights = ope.importance_weights(fb, target)
    assert abs(weights.mean() - 1.0) <= 4 * weights.std(ddof=1) / np.sqrt(weights.size)


def test_canary_logs_are_valid_for_ope(profiles, seed, tmp_path):
    class Table:
        def probabilities(self, context):
            return {{"chat": "small", "code": "large", "math": "medium"}[context["task_type"]]: 1.0}

    rng = np.random.default_rng(seed)
    router = br.Router(profiles, task_types=TASKS, seed=seed, log_dir=tmp_path, exploration=0.1)
    router.start_canary("table", Table(), fraction=0.3, who="test", why="canary OPE")
    for i in range(6000):
        ctx = {"task_type": TASKS[i % 3]}
        d = router.decide(ctx)
        router.record(d.id, quality=float(rng.random() < TRUTH[d.profile][ctx["task_type"]]))
    router.flush()
    fb = ope.LoggedFeedback.from_logs(tmp_path, contexts=True)
    names = list(fb.action_names)
    target = np.array([[Table().probabilities({"task_type": t}).get(p, 0.0) for p in names]
                       for t in fb.contexts["task_type"].to_list()])
    est = ope.IPS().estimate(fb, target, alpha=0.001, seed=seed)
    truth = np.mean([TRUTH[Table().probabilities({"task_type": t}).popitem()[0]][t] for t in TASKS])
    assert est.ci_low <= truth <= est.ci_high
    weights = ope.importance_weights(fb, target)
    assert abs(weights.mean() - 1.0) <= 4 * weights.std(ddof=1) / np.sqrt(weights.size)
