"""The promotion gate: should a candidate policy replace the baseline, on the logged traffic?

:func:`gate` compares a candidate with a baseline (two action distributions on the same
logged rounds) with one estimator, on the *paired* per-round differences
``d_i = v_i(candidate) - v_i(baseline)`` (the estimator's linearised per-round values, see
:meth:`ope.intervals.RoundTerms.influence`): both estimates use the same rounds and the same
reward model, so their correlation cancels in ``Var(d)`` instead of being ignored. One cell
of the gate is one (cohort, metric) pair:

- the **primary metric** (the objective's reward) must beat the baseline by ``margin``:
  ``H0: Delta <= margin`` is rejected (one-sided normal test on ``d``, level ``alpha``);
- in every **cohort** (each value of each cohort column) the primary metric must be
  non-inferior within ``cohort_margin``: ``H0: Delta <= -cohort_margin``;
- every **guardrail** metric (quality, cost_usd, latency_ms, ...) must be non-inferior within
  its margin, overall and in every cohort: ``H0: Delta <= -margin`` when higher is better,
  ``H0: Delta >= margin`` when lower is better (cost, latency).

The p-values of the whole family (cohorts x metrics, the overall cells included) are adjusted
with Benjamini-Hochberg; a cell passes when its adjusted p-value is <= ``alpha`` and its
diagnostics hold (at least ``min_n`` rounds, effective sample size >= ``min_ess`` for both
policies, largest importance weight <= ``max_weight``; overall also mean weight within
``mean_weight_z`` standard errors of 1 and no target mass where the logging policy never
plays). The candidate is promoted only when every cell passes. Because BH rejects every
hypothesis exactly when every raw p-value is <= ``alpha``, the verdict is an
intersection-union test: the probability of promoting a candidate that is bad in at least one
cell is at most ``alpha`` (up to the normal approximation), while the per-cell pass/fail
column controls the false discovery rate among the cells declared safe.

This module measures the cells (paired per-round differences, their intervals and raw
p-values) and runs the whole-log checks; the options are validated by
:class:`ope.gate_options.GateOptions` and the verdict and its reasons are written by
:func:`ope.gate_result.decide`.

References
----------
Benjamini & Hochberg (1995), "Controlling the False Discovery Rate".
Berger & Hsu (1996), "Bioequivalence Trials, Intersection-Union Tests and Equivalence
Confidence Sets".
Thomas, Theocharous & Ghavamzadeh (2015), "High Confidence Policy Improvement".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from scipy.special import ndtr

from ope.base import Estimator
from ope.diagnostics import Diagnostics, diagnose, importance_weights
from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.feedback import LoggedFeedback
from ope.gate_options import DIRECTIONS, GateOptions, Guardrail, default_reward_model
from ope.gate_result import ALL_TRAFFIC, GATE_TABLE_SCHEMA, GateResult, benjamini_hochberg, decide
from ope.intervals import RoundTerms, confidence_interval
from ope.learning import resolve_learning

__all__ = ["gate", "GateOptions", "Guardrail", "GateResult", "benjamini_hochberg", "default_reward_model",
           "DIRECTIONS", "GATE_TABLE_SCHEMA", "UNSET", "STATIC", "Check", "resolve_options", "checks_of",
           "cohort_labels", "metric_rounds", "unknown_metric", "check_metric_logged", "metric_feedback", "cell_row", "ess_of",
           "weight_problems"]

# the pieces below "gate" in __all__ are shared with ope.partition_gate (the gate on log partitions), so both
# paths apply the same rules: cells, metrics, p-values, rows, whole-log checks


class _Unset:
    """Default of the gate's option keywords: tells "not given" from any value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<GateOptions default>"


UNSET: Any = _Unset()
_UNSET = UNSET
#: how a policy that does not learn is evaluated (:attr:`GateResult.evaluation`)
STATIC = "static (the policy does not learn)"


class Check(NamedTuple):
    """One metric the gate checks, with the difference it must clear overall and per cohort."""

    metric: str
    role: str  # "primary" or "guardrail"
    direction: str  # "higher" or "lower" is better
    threshold: float
    cohort_threshold: float


def checks_of(options: GateOptions) -> list[Check]:
    """The metrics the gate checks, in the table's order: the primary metric, then each guardrail."""
    checks = [Check(options.metric, "primary", "higher", float(options.margin), options.cohort_threshold)]
    return checks + [Check(g.metric, "guardrail", g.direction, g.threshold, g.threshold)
                     for g in options.guardrail_list]


def cohort_labels(feedback: LoggedFeedback, column: str) -> np.ndarray:
    """Each round's value of cohort ``column`` as a string (``"(null)"`` when missing)."""
    frame = next((f for f in (feedback.cohorts, feedback.contexts) if f is not None and column in f.columns), None)
    if frame is None:
        have = sorted({*(feedback.cohorts.columns if feedback.cohorts is not None else []),
                       *(feedback.contexts.columns if feedback.contexts is not None else [])})
        raise InvalidConfigError("cohorts", f"cohort column {column!r} is not in the feedback's cohorts or "
                                 f"contexts {have}; load the logs with cohorts=[{column!r}]")
    return frame.get_column(column).cast(pl.String).fill_null("(null)").to_numpy()


def _cohort_cells(feedback: LoggedFeedback, cohorts: Sequence[str]) -> list[tuple[str | None, str | None, np.ndarray]]:
    cells: list[tuple[str | None, str | None, np.ndarray]] = [(None, None, np.ones(feedback.n_rounds, dtype=bool))]
    for column in cohorts:
        values = cohort_labels(feedback, column)
        for value in sorted(set(values.tolist())):
            cells.append((column, value, values == value))
    return cells


def _subset(terms: RoundTerms, mask: np.ndarray) -> RoundTerms:
    if terms.num is None:
        return RoundTerms(base=terms.base[mask])
    return RoundTerms(base=terms.base[mask], num=terms.num[mask], den=terms.den[mask])


def ess_of(total: float, sum_sq: float) -> float:
    """Effective sample size ``(sum w)^2 / sum w^2`` from the weights' sum and sum of squares (0 without weight)."""
    return total * total / sum_sq if sum_sq > 0 else 0.0


def _ess(w: np.ndarray) -> float:
    return ess_of(float(w.sum()), float(np.dot(w, w)))


def metric_rounds(feedback: LoggedFeedback, metric: str, *, require: bool = True) -> np.ndarray:
    """Mask of the rounds where ``metric`` is logged (``require``: an error when it is logged in none; a
    log partition may hold none, its caller checks the whole log with :func:`check_metric_logged`)."""
    if feedback.metrics is not None and metric in feedback.metrics.columns:
        keep = feedback.metrics.get_column(metric).cast(pl.Float64).fill_nan(None).is_not_null().to_numpy()
        if require:
            check_metric_logged(metric, int(keep.sum()), feedback.n_rounds)
        return keep
    if metric == "reward":
        return np.ones(feedback.n_rounds, dtype=bool)
    raise unknown_metric(metric, () if feedback.metrics is None else feedback.metrics.columns)


def unknown_metric(metric: str, have: Sequence[str]) -> InvalidConfigError:
    """The error of a ``metric`` the feedback does not log (``have``: the metric columns it logs)."""
    return InvalidConfigError("metric", f"metric {metric!r} is not logged in the feedback; "
                              f"have {sorted({'reward', *have})}")


def check_metric_logged(metric: str, n_logged: int, n_rounds: int) -> None:
    """Raise when ``metric`` is logged in none of the ``n_rounds`` rounds."""
    if n_logged == 0:
        raise InvalidFeedbackError(
            "metric", f"metric {metric!r}: the logs hold no values for it (null in all {n_rounds:,} "
            f"rounds: outcomes recorded without {metric}); record it with the outcomes or do not gate on it")


def metric_feedback(feedback: LoggedFeedback, metric: str, keep: np.ndarray) -> LoggedFeedback:
    """The rounds of ``keep`` (:func:`metric_rounds`, at least one) with ``metric`` as their rewards."""
    if feedback.metrics is None or metric not in feedback.metrics.columns:
        return feedback  # the reward itself
    return (feedback if keep.all() else feedback.filter(keep)).with_reward(metric)


def _metric_feedback(feedback: LoggedFeedback, metric: str) -> tuple[LoggedFeedback, np.ndarray]:
    """Feedback whose rewards are ``metric`` and the mask of rounds where it is logged."""
    keep = metric_rounds(feedback, metric)
    return metric_feedback(feedback, metric, keep), keep


def gate(
    feedback: LoggedFeedback,
    *,
    candidate: Any,
    baseline: Any,
    estimator: str | Estimator = _UNSET,
    metric: str = _UNSET,
    margin: float = _UNSET,
    guardrails: Mapping[str, Any] | None = _UNSET,
    cohorts: Sequence[str] = _UNSET,
    cohort_margin: float | None = _UNSET,
    alpha: float = _UNSET,
    min_n: int = _UNSET,
    min_ess: float = _UNSET,
    max_weight: float | None = _UNSET,
    mean_weight_z: float = _UNSET,
    max_support_deficiency: float = _UNSET,
    reward_model: Any = _UNSET,
    seed: int | np.random.Generator | None = _UNSET,
    learning: str = _UNSET,
    options: GateOptions | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``baseline``, from the logged traffic.

    Parameters
    ----------
    feedback : LoggedFeedback
        Logged rounds (with ``metrics`` for guardrails, and ``cohorts`` or ``contexts``
        holding the cohort columns).
    candidate, baseline : array-like (n_rounds, n_actions) or ope.Policy
        The two policies' action distributions on the logged rounds.
    estimator : {"dr", "sndr", "ips", "snips"} or Estimator, default "dr"
        Used for both policies and every metric (model-based ones cross-fit one reward
        model per metric, shared by both policies).
    metric : str, default "reward"
        The primary metric (higher is better).
    margin : float, default 0.0
        Required improvement of the primary metric overall: the one-sided ``1 - alpha``
        lower bound of ``candidate - baseline`` must exceed it (0: better at all; a negative
        value asks only for non-inferiority).
    guardrails : mapping metric -> margin, (margin, direction) or Guardrail, optional
        Non-inferiority margins in the metric's units; ``quality`` is higher-is-better,
        ``cost_usd`` and ``latency_ms`` lower-is-better, other metrics need a direction.
    cohorts : sequence of str, default ()
        Columns (of ``feedback.cohorts`` or ``feedback.contexts``) whose every value is a
        cohort checked on its own.
    cohort_margin : float, optional
        Non-inferiority margin of the primary metric within each cohort (>= 0); defaults
        to ``abs(margin)``.
    alpha : float in (0, 0.5), default 0.05
        Level of every one-sided test and of the BH procedure.
    min_n : int, default 100
        Fewest rounds a cell needs to be judged.
    min_ess : float, default 100.0
        Smallest effective sample size ``(sum w)^2 / sum w^2`` of either policy in a cell.
    max_weight : float or None, default 500.0
        Ceiling on the largest importance weight of either policy (None: no ceiling).
    mean_weight_z : float, default 4.0
        Overall, the mean importance weight of each policy must be within this many
        standard errors of its expectation (otherwise the propensities or the join are wrong).
    max_support_deficiency : float, default 0.001
        Largest target mass on actions the logging policy never plays.
    reward_model : scikit-learn estimator, optional
        For ``"dr"``/``"sndr"``; defaults to :func:`default_reward_model`.
    seed : int or numpy.random.Generator or None, default 0
        Seeds cross-fitting.
    learning : {"progressive", "progressive:B", "split:F"}, default "progressive"
        How a candidate or baseline that learns (an object with ``learn``, e.g. a banditroute
        ``Router``) is evaluated without scoring it on the rounds it learned from: progressive
        validation in the feedback's (time) order, or a time split (learn on the first
        fraction ``F``; both policies are then compared on the rest only); see
        :mod:`ope.learning`. The result's ``evaluation`` says which was used.
    options : GateOptions, optional
        All of the above in one validated object, instead of the keywords (giving both
        ``options`` and any of those keywords is an error).

    Returns
    -------
    GateResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 20_000
    >>> a = rng.integers(0, 2, n)
    >>> fb = LoggedFeedback(actions=a, rewards=rng.binomial(1, np.where(a == 1, 0.6, 0.5)),
    ...                     propensities=np.full(n, 0.5), n_actions=2)
    >>> always = lambda k: np.tile(np.eye(2)[k], (n, 1))
    >>> good = gate(fb, candidate=always(1), baseline=always(0), estimator="ips", margin=0.02)
    >>> good.promote
    True
    >>> bad = gate(fb, candidate=always(0), baseline=always(1), estimator="ips", margin=0.02)
    >>> bad.promote, bad.reasons[0].split(":")[:2]
    (False, ['reward (all traffic)', ' the candidate is worse than the baseline'])
    >>> opts = GateOptions(estimator="ips", margin=0.02)
    >>> gate(fb, candidate=always(1), baseline=always(0), options=opts).table.equals(good.table)
    True
    """
    if not isinstance(feedback, LoggedFeedback):
        raise InvalidConfigError("feedback", f"feedback must be a LoggedFeedback, got {type(feedback).__name__}")
    given = dict(
        estimator=estimator, metric=metric, margin=margin, guardrails=guardrails, cohorts=cohorts,
        cohort_margin=cohort_margin, alpha=alpha, min_n=min_n, min_ess=min_ess, max_weight=max_weight,
        mean_weight_z=mean_weight_z, max_support_deficiency=max_support_deficiency, reward_model=reward_model,
        seed=seed, learning=learning)
    options = resolve_options(options, given)
    est = options.build_estimator()
    # a learning policy is scored progressively (or on a time split's held-out rounds), never on
    # the rounds it learned from; a split evaluates both policies on the held-out rounds only
    learned = resolve_learning({"candidate": candidate, "baseline": baseline}, feedback, options.learning)
    feedback, t_cand, t_base = learned.feedback, learned.targets["candidate"], learned.targets["baseline"]
    seed = options.seed
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cells = _cohort_cells(feedback, options.cohort_columns)
    rows = []
    for check in checks_of(options):
        rows += _measure(feedback, t_cand, t_base, est, rng, cells, check, alpha=float(options.alpha))
    global_problems = _global_checks(feedback, t_cand, t_base, float(options.mean_weight_z),
                                     float(options.max_support_deficiency))
    return decide(rows, global_problems, options, learned.evaluation)


def resolve_options(options: Any, given: dict[str, Any]) -> GateOptions:
    """The gate's options: ``options`` itself, or built from the keywords given (those not :data:`UNSET`;
    not both)."""
    given = {name: value for name, value in given.items() if value is not UNSET}
    if options is None:
        return GateOptions(**given)
    if given:
        raise InvalidConfigError(
            "options", "pass the gate's options either as options=GateOptions(...) or as keywords, not both: "
            f"got options= and {', '.join(f'{k}=' for k in given)}")
    if not isinstance(options, GateOptions):
        raise InvalidConfigError("options", f"options must be a GateOptions, got {type(options).__name__}")
    return options


def _measure(feedback: LoggedFeedback, t_cand: np.ndarray, t_base: np.ndarray, est: Estimator,
             rng: np.random.Generator, cells: list[tuple[str | None, str | None, np.ndarray]],
             check: Check, *, alpha: float) -> list[dict[str, Any]]:
    """One row per cohort cell for one metric: both estimates, the paired difference, its
    ``1 - 2 alpha`` interval and the raw one-sided p-value against the cell's threshold."""
    fb_m, keep = _metric_feedback(feedback, check.metric)
    tc, tb = t_cand[keep], t_base[keep]
    w_c, w_b = importance_weights(fb_m, tc), importance_weights(fb_m, tb)
    cache: dict = {}  # one reward-model fit per metric, shared by both policies
    terms_c = est.validated_terms(fb_m, tc, weights=w_c, rng=rng, cache=cache)
    terms_b = est.validated_terms(fb_m, tb, weights=w_b, rng=rng, cache=cache)
    rows = []
    for column, value, mask in cells:
        m = mask[keep]
        n = int(m.sum())
        if n >= 2:
            sc, sb = _subset(terms_c, m), _subset(terms_b, m)
            diff_terms = sc.influence() - sb.influence()
            ci = confidence_interval(diff_terms, method="normal", alpha=2 * alpha)
            est_c, est_b = sc.value, sb.value
            diff, se, lower, upper = ci.value, ci.stderr, ci.ci_low, ci.ci_high
        else:
            est_c = est_b = diff = se = lower = upper = math.nan
        rows.append(cell_row(check, column, value, n, ess=(_ess(w_c[m]), _ess(w_b[m])),
                             max_weight=float(max(w_c[m].max(initial=0.0), w_b[m].max(initial=0.0))),
                             estimates=(est_c, est_b), diff=diff, stderr=se, bounds=(lower, upper)))
    return rows


def cell_row(check: Check, column: str | None, value: str | None, n: int, *, ess: tuple[float, float],
             max_weight: float, estimates: tuple[float, float], diff: float, stderr: float,
             bounds: tuple[float, float]) -> dict[str, Any]:
    """One cell's row of the table up to ``p_value`` (:func:`ope.gate_result.decide` adds the rest): the
    raw one-sided p-value of the paired difference ``diff`` (standard error ``stderr``) against the cell's
    threshold (``check.threshold`` overall, ``check.cohort_threshold`` in a cohort)."""
    threshold = check.threshold if column is None else check.cohort_threshold
    higher = check.direction == "higher"
    if not (math.isfinite(stderr) and math.isfinite(diff)):
        p = 1.0
    elif stderr == 0.0:
        beyond = diff > threshold if higher else diff < threshold
        p = 0.0 if beyond else 1.0
    else:
        stat = (diff - threshold) / stderr if higher else (threshold - diff) / stderr
        p = float(ndtr(-stat))
    return {"cohort": ALL_TRAFFIC if column is None else f"{column}={value}", "cohort_column": column,
            "cohort_value": value, "metric": check.metric, "role": check.role, "direction": check.direction,
            "threshold": threshold, "n": n, "ess_candidate": ess[0], "ess_baseline": ess[1], "max_weight": max_weight,
            "estimate_candidate": estimates[0], "estimate_baseline": estimates[1], "diff": diff, "stderr": stderr,
            "lower": bounds[0], "upper": bounds[1], "p_value": p}


def _global_checks(feedback: LoggedFeedback, t_cand: np.ndarray, t_base: np.ndarray, z_max: float,
                   max_def: float) -> list[str]:
    out = []
    for who, target in (("candidate", t_cand), ("baseline", t_base)):
        w = importance_weights(feedback, target)
        sd = float(w.std(ddof=1)) if w.size > 1 else 0.0
        out += weight_problems(who, diagnose(feedback, target), sd, z_max=z_max, max_def=max_def)
    return out


def weight_problems(who: str, d: Diagnostics, sd: float, *, z_max: float, max_def: float) -> list[str]:
    """The whole-log checks of one policy (``who``) from its weights' diagnostics and sample standard
    deviation ``sd``: target mass where the logging policy never plays, mean weight far from its expectation."""
    out = []
    expected = 1.0 - d.support_deficiency if d.support_exact else 1.0
    zval = abs(d.mean_weight - expected) / (sd / math.sqrt(d.n)) if sd > 0 else 0.0
    if d.support_deficiency > max_def:
        out.append(f"support: the {who} puts {d.support_deficiency:.2%} of its traffic on profiles the logging "
                   f"policy never played for those requests (max_support_deficiency = {max_def:g}); the logs "
                   f"cannot evaluate it there: run it as a shadow or canary first so its choices get logged.")
    elif zval > z_max:
        out.append(f"weights: the {who}'s mean importance weight is {d.mean_weight:.4f}, {zval:.1f} standard "
                   f"errors from its expectation {expected:.4f} (limit {z_max:g}); the logged propensities or "
                   f"the outcome join look wrong: check the logs before trusting any estimate.")
    return out
