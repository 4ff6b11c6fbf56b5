"""Evaluate several target policies with several estimators into one table.

:func:`evaluate` runs every (policy, estimator) pair with one seeded generator and one
cache of reward-model fits, and returns a polars table with the columns of
:data:`RESULT_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ope.base import Estimate, Estimator
from ope.diagnostics import DiagnosticThresholds
from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.learning import resolve_learning
from ope.intervals import DEFAULT_BOOTSTRAP_UNITS
from ope.ips import IPS, SNIPS

__all__ = ["evaluate", "name_estimators", "RESULT_SCHEMA"]

RESULT_SCHEMA = {
    "policy": pl.String,
    "estimator": pl.String,
    "value": pl.Float64,
    "stderr": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "interval": pl.String,
    "alpha": pl.Float64,
    "n": pl.Int64,
    "ess": pl.Float64,
    "max_weight": pl.Float64,
    "mean_weight": pl.Float64,
    "support_deficiency": pl.Float64,
    "warnings": pl.List(pl.String),
    "evaluation": pl.String,
}


def name_estimators(estimators: Sequence[Estimator] | Mapping[str, Estimator] | None) -> dict[str, Estimator]:
    """The estimators by name (None: IPS and SNIPS; a sequence: each one's ``name``, repeats numbered ``#2``, ...)."""
    if estimators is None:
        return {"IPS": IPS(), "SNIPS": SNIPS()}
    if isinstance(estimators, Mapping):
        items = list(estimators.items())
    else:
        items = []
        for est in estimators:
            name, i = est.name, 2
            while name in dict(items):
                name, i = f"{est.name}#{i}", i + 1
            items.append((name, est))
    for name, est in items:
        if not isinstance(est, Estimator):
            raise InvalidConfigError("estimators", f"estimators must be ope estimators, got {est!r} for {name!r}")
    if not items:
        raise InvalidConfigError("estimators", "estimators is empty")
    return dict(items)


def _row(policy: str, name: str, est: Estimate, evaluation: str) -> dict[str, Any]:
    return {
        "policy": policy,
        "estimator": name,
        "value": est.value,
        "stderr": est.stderr,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "interval": est.interval,
        "alpha": est.alpha,
        "n": est.n,
        "ess": est.ess,
        "max_weight": est.max_weight,
        "mean_weight": est.mean_weight,
        "support_deficiency": est.support_deficiency,
        "warnings": list(est.warnings),
        "evaluation": evaluation,
    }


def evaluate(
    feedback: LoggedFeedback,
    policies: Mapping[str, Any],
    estimators: Sequence[Estimator] | Mapping[str, Estimator] | None = None,
    *,
    alpha: float = 0.05,
    interval: str = "normal",
    n_bootstrap: int = 1000,
    seed: int | np.random.Generator | None = None,
    value_range: tuple[float, float] | None = None,
    bootstrap_units: int | None = DEFAULT_BOOTSTRAP_UNITS,
    thresholds: DiagnosticThresholds | None = None,
    learning: str = "progressive",
) -> pl.DataFrame:
    """Estimate every policy with every estimator.

    Reward models shared by several estimators are cross-fitted once.

    Parameters
    ----------
    feedback : LoggedFeedback
    policies : mapping of str to array-like (n_rounds, n_actions) or ope.Policy
        Target policies by name.
    estimators : sequence or mapping of Estimator, optional
        Defaults to ``[IPS(), SNIPS()]``. Repeated names get a ``#2`` suffix.
    alpha, interval, n_bootstrap, seed, value_range, bootstrap_units, thresholds
        As in :meth:`ope.Estimator.estimate`; ``seed`` builds one Generator used
        for every cell in order.
    learning : {"progressive", "progressive:B", "split:F"}, default "progressive"
        How a policy that learns (an object with ``learn``) is evaluated; see :mod:`ope.learning`.

    Returns
    -------
    polars.DataFrame
        One row per (policy, estimator) with the columns of :data:`RESULT_SCHEMA`.

    Examples
    --------
    >>> from ope import LoggedFeedback, one_hot
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 2, 1000)
    >>> fb = LoggedFeedback(actions=a, rewards=rng.binomial(1, 0.2 + 0.5 * a),
    ...                     propensities=np.full(1000, 0.5), n_actions=2)
    >>> table = evaluate(fb, {"always1": one_hot(np.ones(1000, int), 2)}, seed=0)
    >>> table.select("policy", "estimator", pl.col("value").round(3)).rows()
    [('always1', 'IPS', 0.76), ('always1', 'SNIPS', 0.708)]
    """
    if not isinstance(policies, Mapping) or not policies:
        raise InvalidConfigError("policies", f"policies must be a non-empty mapping of name to target, got {policies!r}")
    named = name_estimators(estimators)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cache: dict = {}
    rows = []
    # learning policies: progressive validation or a time split (then every policy is scored on
    # the held-out rounds only), see ope.learning; column "evaluation" says which
    learned = resolve_learning(policies, feedback, learning)
    for policy_name, target in learned.targets.items():
        for est_name, estimator in named.items():
            est = estimator.estimate(
                learned.feedback, target, alpha=alpha, interval=interval, n_bootstrap=n_bootstrap, seed=rng,
                value_range=value_range, bootstrap_units=bootstrap_units, thresholds=thresholds, cache=cache,
            )
            rows.append(_row(str(policy_name), est_name, est, learned.evaluation[policy_name]))
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)
