"""Regression tests for five promotion/evaluation defects, each checked where the user meets it:

1. ``promote --candidate config:ROUTES`` on logs whose every context is ``{}`` crashed
   (``TypeError: 'NoneType' object is not iterable``);
2. a ``cost_usd`` guardrail on logs without cost said "actions is empty" instead of naming
   the metric;
3. ``calibration --cohort nosuchfield`` was accepted silently;
4. ``python -m ope`` on a missing directory exited 1 instead of 2 (bad input);
5. the ESS warning did not say which limit (``min_ess`` or ``min_ess_fraction``) was missed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ope
from banditroute import Profile, Router
from banditroute.errors import ConfigError
from banditroute.evaluation.calibration import calibration_report
from banditroute.evaluation.candidates import load_feedback, resolve_policy
from ope.cli import main as ope_main
from ope.diagnostics import DiagnosticThresholds, diagnose
from ope.errors import InvalidFeedbackError
from ope.gate import gate

ROUTES = """[[profiles]]
name = "small"
cost_usd = 0.001
latency_ms = 100
[[profiles]]
name = "large"
cost_usd = 0.01
latency_ms = 500
"""


@pytest.fixture(scope="module")
def empty_context_logs(tmp_path_factory):
    """Logs of a single-task-type router deciding on ``{}`` contexts; outcomes carry quality only."""
    root = tmp_path_factory.mktemp("empty_contexts")
    log_dir = root / "logs"
    router = Router([Profile("small", cost_usd=0.001, latency_ms=100),
                     Profile("large", cost_usd=0.01, latency_ms=500)], log_dir=str(log_dir), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(400):
        d = router.decide({})
        router.record(d.id, quality=float(rng.random() < (0.7 if d.profile == "large" else 0.5)))
    router.close()
    routes = root / "routes.toml"
    routes.write_text(ROUTES)
    return root, log_dir, routes


def run_cli(*argv, cwd=None):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd)


# -- 1. config candidate on logs whose contexts are all {} ------------------------------------------
def test_config_candidate_resolves_on_empty_contexts(empty_context_logs):
    _, log_dir, routes = empty_context_logs
    fb = load_feedback(log_dir)
    assert fb.contexts is None  # no logged context has a field
    target = resolve_policy(f"config:{routes}", fb, log_dir=log_dir)
    assert target.shape == (fb.n_rounds, fb.n_actions)
    np.testing.assert_allclose(target.sum(axis=1), 1.0)


def test_promote_config_candidate_on_empty_contexts(empty_context_logs):
    root, log_dir, routes = empty_context_logs
    out = run_cli("-m", "banditroute", "promote", "--logs", str(log_dir), "--config", str(routes),
                  "--candidate", f"config:{routes}", "--baseline", "uniform", cwd=root)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode in (0, 3), out.stderr
    assert f"candidate config:{routes} vs baseline uniform on 400 logged rounds" in out.stdout


# -- 2. a guardrail on a metric the logs never hold ----------------------------------------------------
def test_gate_names_guardrail_metric_without_values(empty_context_logs):
    _, log_dir, _ = empty_context_logs
    fb = load_feedback(log_dir)
    with pytest.raises(InvalidFeedbackError, match=r"metric 'cost_usd': the logs hold no values for it") as err:
        gate(fb, candidate=resolve_policy("always:large", fb), baseline=resolve_policy("uniform", fb),
             guardrails={"cost_usd": 0.001})
    assert err.value.field == "metric"


def test_promote_cost_guardrail_on_logs_without_cost(empty_context_logs):
    root, log_dir, _ = empty_context_logs
    out = run_cli("-m", "banditroute", "promote", "--logs", str(log_dir), "--candidate", "always:large",
                  "--baseline", "uniform", "--guardrail", "cost_usd=0.001", cwd=root)
    assert out.returncode == 2, out.stderr
    assert "cost_usd" in out.stderr and "no values" in out.stderr
    assert "actions is empty" not in out.stderr


# -- 3. calibration --cohort with an unknown name ----------------------------------------------------
def test_calibration_report_rejects_unknown_cohort(empty_context_logs):
    _, log_dir, _ = empty_context_logs
    with pytest.raises(ConfigError, match=r"cohorts must be one of \['profile', 'task_type'\].*got 'nosuchfield'"):
        calibration_report(log_dir, cohorts=("profile", "nosuchfield"))


def test_calibration_cli_unknown_cohort_is_bad_input(empty_context_logs):
    root, log_dir, _ = empty_context_logs
    out = run_cli("-m", "banditroute", "calibration", "--logs", str(log_dir), "--cohort", "nosuchfield", cwd=root)
    assert out.returncode == 2, out.stderr
    assert "--cohort" in out.stderr and "'nosuchfield'" in out.stderr
    assert "'profile'" in out.stderr and "'task_type'" in out.stderr
    ok = run_cli("-m", "banditroute", "calibration", "--logs", str(log_dir), "--cohort", "profile", cwd=root)
    assert ok.returncode == 0, ok.stderr


# -- 4. python -m ope on a missing directory ------------------------------------------------------------
def test_ope_cli_missing_directory_exits_2(tmp_path):
    missing = tmp_path / "no_such_logs"
    out = run_cli("-m", "ope", str(missing))
    assert out.returncode == 2, out.stderr
    assert str(missing) in out.stderr
    assert ope_main([str(missing)]) == 2


def test_ope_cli_directory_without_logs_exits_2(tmp_path, capsys):
    assert ope_main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


# -- 5. the ESS warning names the limit it missed -------------------------------------------------------
def _always_first(seed: int, n: int = 50_000, k: int = 200):
    """Uniform logging over k actions, target always action 0: ESS ~ n / k (~250 here)."""
    rng = np.random.default_rng(seed)
    fb = ope.LoggedFeedback(actions=rng.integers(0, k, n), rewards=rng.random(n), propensities=np.full(n, 1 / k),
                            n_actions=k)
    target = np.zeros((n, k))
    target[:, 0] = 1.0
    return fb, target


def _ess_warning(warnings):
    found = [w for w in warnings if w.startswith("effective sample size")]
    assert len(found) == 1, warnings
    return found[0]


def test_ess_warning_names_the_fraction_limit(seed):
    fb, target = _always_first(seed)
    d = diagnose(fb, target)  # defaults: min_ess=100 (met), min_ess_fraction=0.01 -> 500 rounds (missed)
    assert 100 < d.ess < 500
    w = _ess_warning(d.warnings)
    assert "min_ess_fraction=0.01 (= 500.0 rounds)" in w
    assert "min_ess=100" not in w


def test_ess_warning_names_the_absolute_limit(seed):
    fb, target = _always_first(seed)
    d = diagnose(fb, target, thresholds=DiagnosticThresholds(min_ess=1000, min_ess_fraction=0.0))
    w = _ess_warning(d.warnings)
    assert "the absolute limit min_ess=1000" in w
    assert "min_ess_fraction" not in w
    both = _ess_warning(diagnose(fb, target, thresholds=DiagnosticThresholds(min_ess=1000)).warnings)
    assert "min_ess=1000" in both and "min_ess_fraction=0.01 (= 500.0 rounds)" in both
