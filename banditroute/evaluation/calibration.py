"""Calibration of the routed aggregate: does the router's predicted success mean what it says?

Every decision logs ``expected_quality``, the posterior mean reliability of the executed
profile under the request's task-type posterior (the router's prediction of the outcome).
Joined with the observed quality (``ope.join_logs``), this gives, for the routed system as a
whole and per cohort (profile, task type or any context field):

- the expected calibration error ``ECE = sum_b (n_b / n) |mean(pred_b) - mean(obs_b)|`` over
  equal-width bins of the prediction (Naeini et al., 2015);
- the Brier score ``mean((pred - quality)^2)`` (Brier, 1950);
- the reliability diagram: per bin, the mean prediction against the mean observed quality.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> pred = rng.uniform(size=20_000)
>>> report = calibration_table(pred, (rng.uniform(size=20_000) < pred).astype(float))
>>> report["ece"] < 0.02, round(report["brier"], 2)
(True, 0.17)
"""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl

from ..errors import ConfigError

__all__ = ["calibration_table", "calibration_report", "reliability_diagram"]


def reliability_diagram(pred: np.ndarray, observed: np.ndarray, *, n_bins: int = 10) -> pl.DataFrame:
    """Per equal-width bin of the prediction: n, mean prediction, mean observed quality."""
    bins = np.minimum((pred * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(bins, weights=pred, minlength=n_bins) / n
        mean_obs = np.bincount(bins, weights=observed, minlength=n_bins) / n
    return pl.DataFrame({"bin_low": np.arange(n_bins) / n_bins, "bin_high": np.arange(1, n_bins + 1) / n_bins,
                         "n": n, "mean_predicted": mean_pred, "mean_observed": mean_obs}, nan_to_null=True)


def calibration_table(pred: np.ndarray, observed: np.ndarray, *, n_bins: int = 10) -> dict:
    """ECE, Brier score and the reliability diagram of predictions against outcomes in [0, 1]."""
    pred = np.asarray(pred, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    if pred.shape != observed.shape or pred.size == 0:
        raise ConfigError("predictions", pred.shape, f"must be a non-empty array shaped like the outcomes {observed.shape}")
    diagram = reliability_diagram(pred, observed, n_bins=n_bins)
    filled = diagram.drop_nulls()
    ece = float((filled["n"] * (filled["mean_predicted"] - filled["mean_observed"]).abs()).sum() / pred.size)
    return {"n": int(pred.size), "ece": ece, "brier": float(np.mean((pred - observed) ** 2)),
            "mean_predicted": float(pred.mean()), "mean_observed": float(observed.mean()), "diagram": diagram}


def calibration_report(log_dir: str | os.PathLike, *, cohorts: tuple[str, ...] = ("profile", "task_type"),
                       n_bins: int = 10, wait_window=None) -> dict:
    """Calibration of the routed aggregate, overall and per cohort, from a decision log.

    ``cohorts`` are ``profile``, ``task_type`` (the most probable task type of the request)
    or any field of the logged context (another name is a :class:`ConfigError` on ``cohorts``
    listing the valid ones). Only decisions with a logged prediction and an
    observed quality count (the first outcome of each decision).
    """
    import ope

    joined = ope.join_logs(log_dir, wait_window=wait_window, escalations="all")  # every prediction counts
    if "expected_quality" not in joined.collect_schema().names():
        raise ConfigError("log_dir", str(log_dir), "holds decisions without expected_quality "
                          "(logged before schema version 2): no predictions to calibrate")
    frame = (joined.filter(pl.col("quality").is_not_null() & pl.col("expected_quality").is_not_null())
             .select("expected_quality", "quality", "profile", "context",
                     pl.col("task_types").list.get(pl.col("task_probs").list.arg_max()).alias("task_type"))
             .collect())
    if frame.height == 0:
        raise ConfigError("log_dir", str(log_dir), "has no decisions with both a prediction and an observed quality")
    contexts = [(json.loads(c) if c else None) or {} for c in frame["context"].to_list()]
    valid = ["profile", "task_type", *sorted({k for c in contexts for k in c} - {"profile", "task_type"})]
    for cohort in cohorts:
        if cohort not in valid:
            raise ConfigError("cohorts", cohort, f"must be one of {valid} (profile, task_type or a logged context field)")
    overall = calibration_table(frame["expected_quality"].to_numpy(), frame["quality"].to_numpy(), n_bins=n_bins)
    per_cohort = {}
    for cohort in cohorts:
        if cohort in ("profile", "task_type"):
            keys = frame[cohort]
        else:
            keys = pl.Series([c.get(cohort) for c in contexts], dtype=pl.String)
        rows = []
        for key in keys.unique().sort(nulls_last=True).to_list():
            mask = (keys.is_null() if key is None else (keys == key).fill_null(False)).to_numpy()
            table = calibration_table(frame["expected_quality"].to_numpy()[mask], frame["quality"].to_numpy()[mask],
                                      n_bins=n_bins)
            rows.append({cohort: key, "n": table["n"], "ece": table["ece"], "brier": table["brier"],
                         "mean_predicted": table["mean_predicted"], "mean_observed": table["mean_observed"]})
        per_cohort[cohort] = pl.DataFrame(rows)
    return {"overall": overall, "cohorts": per_cohort}
