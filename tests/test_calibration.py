"""Calibration evidence for the routed aggregate."""

import json
import subprocess
import sys

import numpy as np
import pytest

import banditroute as br
from banditroute.sim import Scenario, run_demo


def test_known_answers(seed):
    rng = np.random.default_rng(seed)
    n = 40_000
    pred = rng.uniform(size=n)
    calibrated = br.calibration_table(pred, (rng.uniform(size=n) < pred).astype(float))
    # ECE of a calibrated predictor is sampling noise: per bin sd ~ sqrt(p(1-p)/n_bin) <= 0.008
    assert calibrated["ece"] < 0.02
    assert calibrated["brier"] == pytest.approx(1 / 6, abs=0.01)  # E[p(1-p)] for p ~ U(0, 1)
    overconfident = br.calibration_table(np.full(n, 0.9), (rng.uniform(size=n) < 0.5).astype(float))
    assert overconfident["ece"] == pytest.approx(0.4, abs=0.02)
    assert overconfident["diagram"].filter(n=n)["bin_low"].item() == 0.9


def test_stationary_run_is_calibrated(seed, tmp_path):
    scenario = Scenario.default(n_requests=20_000).stationary()
    run_demo(n_requests=20_000, seed=seed, scenario=scenario, log_dir=str(tmp_path), progress=False, out=None)
    report = br.calibration_report(tmp_path, cohorts=("profile", "task_type", "tenant"))
    assert report["overall"]["n"] >= 19_000
    assert report["overall"]["ece"] <= 0.03
    assert set(report["cohorts"]) == {"profile", "task_type", "tenant"}
    out = subprocess.run([sys.executable, "-m", "banditroute", "calibration", "--logs", str(tmp_path), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["ece"] == pytest.approx(report["overall"]["ece"]) and "brier" in payload


def test_calibration_of_an_empty_log(tmp_path):
    router = br.Router([br.Profile("a")], log_dir=tmp_path, seed=0)
    router.decide({})
    router.flush()
    with pytest.raises(br.ConfigError, match="has no decisions with both a prediction and an observed quality"):
        br.calibration_report(tmp_path)
