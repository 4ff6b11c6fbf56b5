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
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from ope.base import Estimator
from ope.diagnostics import importance_weights
from ope.dr import DR, SNDR
from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.intervals import RoundTerms, confidence_interval
from ope.ips import IPS, SNIPS
from ope.policies import resolve_target

__all__ = ["Guardrail", "GateResult", "gate", "benjamini_hochberg", "default_reward_model",
           "DIRECTIONS", "GATE_TABLE_SCHEMA"]

#: Which way is better for the metrics banditroute logs.
DIRECTIONS = {"reward": "higher", "quality": "higher", "cost_usd": "lower", "latency_ms": "lower"}

GATE_TABLE_SCHEMA = {
    "cohort": pl.String, "cohort_column": pl.String, "cohort_value": pl.String,
    "metric": pl.String, "role": pl.String, "direction": pl.String, "threshold": pl.Float64,
    "n": pl.Int64, "ess_candidate": pl.Float64, "ess_baseline": pl.Float64, "max_weight": pl.Float64,
    "estimate_candidate": pl.Float64, "estimate_baseline": pl.Float64, "diff": pl.Float64,
    "stderr": pl.Float64, "lower": pl.Float64, "upper": pl.Float64, "p_value": pl.Float64,
    "p_adjusted": pl.Float64, "bh_reject": pl.Boolean, "diagnostics_ok": pl.Boolean,
    "passed": pl.Boolean, "reason": pl.String,
}

_ALL = "all traffic"
_ESTIMATORS = ("dr", "sndr", "ips", "snips")


def _number(name: str, value: Any, *, lo: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise InvalidConfigError(name, f"{name} must be a finite number, got {value!r}")
    if lo is not None and (value <= lo if strict else value < lo):
        raise InvalidConfigError(name, f"{name} must be {'>' if strict else '>='} {lo:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class Guardrail:
    """A metric the candidate must not make worse by more than ``margin``.

    Parameters
    ----------
    metric : str
        A column of the feedback's ``metrics`` (``quality``, ``cost_usd``, ``latency_ms``...).
    margin : float
        Largest tolerated degradation, in the metric's units per round (>= 0).
    direction : {"higher", "lower"}
        Which way is better (cost and latency: ``"lower"``).

    Examples
    --------
    >>> Guardrail(metric="latency_ms", margin=50.0, direction="lower").threshold
    50.0
    >>> Guardrail(metric="quality", margin=0.02).threshold
    -0.02
    >>> Guardrail(metric="cost_usd", margin=-1.0, direction="lower")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: guardrails['cost_usd'].margin must be >= 0, got -1.0
    """

    metric: str
    margin: float
    direction: str = "higher"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidConfigError("guardrails", f"guardrail metric must be a non-empty string, got {self.metric!r}")
        _number(f"guardrails[{self.metric!r}].margin", self.margin, lo=0.0)
        if self.direction not in ("higher", "lower"):
            raise InvalidConfigError(
                f"guardrails[{self.metric!r}].direction",
                f"guardrails[{self.metric!r}].direction must be 'higher' or 'lower', got {self.direction!r}")

    @property
    def threshold(self) -> float:
        """The difference (candidate - baseline) the candidate must stay beyond."""
        return -float(self.margin) if self.direction == "higher" else float(self.margin)


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, every reason in words, and the table behind it.

    Attributes
    ----------
    promote : bool
    reasons : tuple of str
        When refusing, one actionable sentence per failed check (metric, cohort, numbers);
        when promoting, what was shown.
    table : polars.DataFrame
        One row per (cohort, metric) cell, columns :data:`GATE_TABLE_SCHEMA`.
    alpha : float

    Examples
    --------
    >>> r = GateResult(True, ("reward: fine",), pl.DataFrame(schema=GATE_TABLE_SCHEMA), 0.05)
    >>> r.verdict, r.summary().splitlines()[0]
    ('PROMOTE', 'PROMOTE: the candidate passes every check of the gate (alpha = 0.05).')
    """

    promote: bool
    reasons: tuple[str, ...]
    table: pl.DataFrame
    alpha: float

    @property
    def verdict(self) -> str:
        """``"PROMOTE"`` or ``"REFUSE"``."""
        return "PROMOTE" if self.promote else "REFUSE"

    @property
    def failures(self) -> pl.DataFrame:
        """The cells that did not pass."""
        return self.table.filter(~pl.col("passed"))

    def summary(self) -> str:
        """The verdict and the reasons, one per line."""
        head = ("PROMOTE: the candidate passes every check of the gate" if self.promote
                else "REFUSE: the candidate does not pass the gate")
        return "\n".join([f"{head} (alpha = {self.alpha:g}).", *(f"- {r}" for r in self.reasons)])

    def to_dict(self) -> dict:
        """JSON-serialisable form (NaN as None)."""
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                for row in self.table.to_dicts()]
        return {"promote": self.promote, "verdict": self.verdict, "alpha": self.alpha,
                "reasons": list(self.reasons), "table": rows}


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up; NaN counts as 1).

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.2]).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.2]
    """
    p = np.nan_to_num(np.asarray(p_values, dtype=np.float64), nan=1.0)
    m = p.shape[0]
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def default_reward_model() -> Any:
    """The reward model of ``estimator="dr"`` when none is given: ridge regression on
    standardised features with every pairwise interaction (so context x action effects
    are modelled), cheap enough to cross-fit once per metric.

    Examples
    --------
    >>> type(default_reward_model()).__name__
    'Pipeline'
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from sklearn.linear_model import Ridge

    return make_pipeline(StandardScaler(), PolynomialFeatures(degree=2, interaction_only=True, include_bias=False),
                         Ridge(alpha=1.0))


def _estimator(estimator: Any, reward_model: Any, n_metrics: int) -> Estimator:
    if isinstance(estimator, Estimator):
        if getattr(estimator, "reward_predictions", None) is not None and n_metrics > 1:
            raise InvalidConfigError(
                "estimator", f"estimator {estimator.name} has fixed reward_predictions, which fit one metric only; "
                "pass a reward_model so each guardrail metric gets its own")
        return estimator
    if not isinstance(estimator, str) or estimator.lower() not in _ESTIMATORS:
        raise InvalidConfigError("estimator", f"estimator must be one of {_ESTIMATORS} or an ope estimator, got {estimator!r}")
    name = estimator.lower()
    if name in ("ips", "snips"):
        return IPS() if name == "ips" else SNIPS()
    model = default_reward_model() if reward_model is None else reward_model
    return DR(reward_model=model) if name == "dr" else SNDR(reward_model=model)


def _guardrails(guardrails: Any) -> list[Guardrail]:
    if guardrails is None:
        return []
    if not isinstance(guardrails, Mapping):
        raise InvalidConfigError("guardrails", f"guardrails must be a mapping metric -> margin, got {guardrails!r}")
    out = []
    for metric, spec in guardrails.items():
        if isinstance(spec, Guardrail):
            out.append(spec)
        elif isinstance(spec, tuple) and len(spec) == 2:
            out.append(Guardrail(metric=metric, margin=spec[0], direction=spec[1]))
        else:
            if metric not in DIRECTIONS:
                raise InvalidConfigError(
                    f"guardrails[{metric!r}]", f"guardrails[{metric!r}] needs a direction: pass (margin, 'higher') or "
                    f"(margin, 'lower'), got {spec!r}")
            out.append(Guardrail(metric=metric, margin=spec, direction=DIRECTIONS[metric]))
    return out


def _cohort_cells(feedback: LoggedFeedback, cohorts: Sequence[str]) -> list[tuple[str | None, str | None, np.ndarray]]:
    cells: list[tuple[str | None, str | None, np.ndarray]] = [(None, None, np.ones(feedback.n_rounds, dtype=bool))]
    for column in cohorts:
        frame = next((f for f in (feedback.cohorts, feedback.contexts) if f is not None and column in f.columns), None)
        if frame is None:
            have = sorted({*(feedback.cohorts.columns if feedback.cohorts is not None else []),
                           *(feedback.contexts.columns if feedback.contexts is not None else [])})
            raise InvalidConfigError("cohorts", f"cohort column {column!r} is not in the feedback's cohorts or "
                                     f"contexts {have}; load the logs with cohorts=[{column!r}]")
        values = frame.get_column(column).cast(pl.String).fill_null("(null)").to_numpy()
        for value in sorted(set(values.tolist())):
            cells.append((column, value, values == value))
    return cells


def _subset(terms: RoundTerms, mask: np.ndarray) -> RoundTerms:
    if terms.num is None:
        return RoundTerms(base=terms.base[mask])
    return RoundTerms(base=terms.base[mask], num=terms.num[mask], den=terms.den[mask])


def _ess(w: np.ndarray) -> float:
    sq = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    x = x + 0.0  # no "-0"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3g}"


def _metric_feedback(feedback: LoggedFeedback, metric: str) -> tuple[LoggedFeedback, np.ndarray]:
    """Feedback whose rewards are ``metric`` and the mask of rounds where it is logged."""
    if feedback.metrics is not None and metric in feedback.metrics.columns:
        keep = feedback.metrics.get_column(metric).cast(pl.Float64).fill_nan(None).is_not_null().to_numpy()
        fb = feedback if keep.all() else feedback.filter(keep)
        return fb.with_reward(metric), keep
    if metric == "reward":
        return feedback, np.ones(feedback.n_rounds, dtype=bool)
    have = ["reward"] + ([] if feedback.metrics is None else list(feedback.metrics.columns))
    raise InvalidConfigError("metric", f"metric {metric!r} is not logged in the feedback; have {sorted(set(have))}")


def gate(
    feedback: LoggedFeedback,
    *,
    candidate: Any,
    baseline: Any,
    estimator: str | Estimator = "dr",
    metric: str = "reward",
    margin: float = 0.0,
    guardrails: Mapping[str, Any] | None = None,
    cohorts: Sequence[str] = (),
    cohort_margin: float | None = None,
    alpha: float = 0.05,
    min_n: int = 100,
    min_ess: float = 100.0,
    max_weight: float | None = 500.0,
    mean_weight_z: float = 4.0,
    max_support_deficiency: float = 0.001,
    reward_model: Any = None,
    seed: int | np.random.Generator | None = 0,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``baseline``, from the logged traffic.

    Parameters
    ----------
    feedback : LoggedFeedback
        Logged rounds (with ``metrics`` for guardrails, and ``cohorts`` or ``contexts``
        holding the cohort columns).
    candidate, baseline : array-like (n_rounds, n_actions) or ope.Policy
        The two policies' action distributions on the logged rounds.
    estimator : {"dr", "sndr", "ips", "snips"} or Estimator
        Used for both policies and every metric (model-based ones cross-fit one reward
        model per metric, shared by both policies).
    metric : str
        The primary metric (higher is better).
    margin : float
        Required improvement of the primary metric overall: the one-sided ``1 - alpha``
        lower bound of ``candidate - baseline`` must exceed it (0: better at all; a negative
        value asks only for non-inferiority).
    guardrails : mapping metric -> margin, (margin, direction) or Guardrail
        Non-inferiority margins in the metric's units; ``quality`` is higher-is-better,
        ``cost_usd`` and ``latency_ms`` lower-is-better, other metrics need a direction.
    cohorts : sequence of str
        Columns (of ``feedback.cohorts`` or ``feedback.contexts``) whose every value is a
        cohort checked on its own.
    cohort_margin : float, optional
        Non-inferiority margin of the primary metric within each cohort (>= 0); defaults
        to ``abs(margin)``.
    alpha : float in (0, 0.5)
        Level of every one-sided test and of the BH procedure.
    min_n : int
        Fewest rounds a cell needs to be judged.
    min_ess : float
        Smallest effective sample size ``(sum w)^2 / sum w^2`` of either policy in a cell.
    max_weight : float or None
        Ceiling on the largest importance weight of either policy (None: no ceiling).
    mean_weight_z : float
        Overall, the mean importance weight of each policy must be within this many
        standard errors of its expectation (otherwise the propensities or the join are wrong).
    max_support_deficiency : float
        Largest target mass on actions the logging policy never plays.
    reward_model : scikit-learn estimator, optional
        For ``"dr"``/``"sndr"``; defaults to :func:`default_reward_model`.
    seed : int or numpy.random.Generator or None
        Seeds cross-fitting.

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
    """
    if not isinstance(feedback, LoggedFeedback):
        raise InvalidConfigError("feedback", f"feedback must be a LoggedFeedback, got {type(feedback).__name__}")
    alpha = _number("alpha", alpha)
    if not 0.0 < alpha < 0.5:
        raise InvalidConfigError("alpha", f"alpha must be in (0, 0.5), got {alpha!r}")
    margin = _number("margin", margin)
    cohort_margin = abs(margin) if cohort_margin is None else _number("cohort_margin", cohort_margin, lo=0.0)
    if isinstance(min_n, bool) or not isinstance(min_n, (int, np.integer)) or min_n < 2:
        raise InvalidConfigError("min_n", f"min_n must be an integer >= 2, got {min_n!r}")
    min_ess = _number("min_ess", min_ess, lo=0.0)
    if max_weight is not None:
        max_weight = _number("max_weight", max_weight, lo=0.0, strict=True)
    mean_weight_z = _number("mean_weight_z", mean_weight_z, lo=0.0, strict=True)
    max_support_deficiency = _number("max_support_deficiency", max_support_deficiency, lo=0.0)
    if isinstance(cohorts, str):
        cohorts = (cohorts,)
    if not isinstance(metric, str):
        raise InvalidConfigError("metric", f"metric must be a metric name, got {metric!r}")
    rails = _guardrails(guardrails)
    if any(g.metric == metric for g in rails):
        raise InvalidConfigError("guardrails", f"guardrails must not repeat the primary metric {metric!r}")
    est = _estimator(estimator, reward_model, 1 + len(rails))
    t_cand = resolve_target(candidate, feedback)
    t_base = resolve_target(baseline, feedback)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cells = _cohort_cells(feedback, cohorts)
    z = float(ndtri(1.0 - alpha))

    # (metric, role, direction, overall threshold, cohort threshold)
    checks = [(metric, "primary", "higher", margin, -cohort_margin)]
    checks += [(g.metric, "guardrail", g.direction, g.threshold, g.threshold) for g in rails]
    rows = []
    for name, role, direction, thr_all, thr_cohort in checks:
        fb_m, keep = _metric_feedback(feedback, name)
        tc, tb = t_cand[keep], t_base[keep]
        w_c, w_b = importance_weights(fb_m, tc), importance_weights(fb_m, tb)
        cache: dict = {}
        terms_c = est._terms(fb_m, tc, w_c, rng, cache)
        terms_b = est._terms(fb_m, tb, w_b, rng, cache)
        for column, value, mask in cells:
            m = mask[keep]
            n = int(m.sum())
            threshold = thr_all if column is None else thr_cohort
            row = {"cohort": _ALL if column is None else f"{column}={value}", "cohort_column": column,
                   "cohort_value": value, "metric": name, "role": role, "direction": direction,
                   "threshold": threshold, "n": n}
            if n >= 2:
                sc, sb = _subset(terms_c, m), _subset(terms_b, m)
                diff_terms = sc.influence() - sb.influence()
                ci = confidence_interval(diff_terms, method="normal", alpha=2 * alpha)
                est_c, est_b = sc.value, sb.value
                diff, se, lower, upper = ci.value, ci.stderr, ci.ci_low, ci.ci_high
            else:
                est_c = est_b = diff = se = lower = upper = math.nan
            if not (math.isfinite(se) and math.isfinite(diff)):
                p = 1.0
            elif se == 0.0:
                beyond = diff > threshold if direction == "higher" else diff < threshold
                p = 0.0 if beyond else 1.0
            else:
                stat = (diff - threshold) / se if direction == "higher" else (threshold - diff) / se
                p = float(ndtr(-stat))
            row.update(ess_candidate=_ess(w_c[m]), ess_baseline=_ess(w_b[m]),
                       max_weight=float(max(w_c[m].max(initial=0.0), w_b[m].max(initial=0.0))),
                       estimate_candidate=est_c, estimate_baseline=est_b, diff=diff, stderr=se,
                       lower=lower, upper=upper, p_value=p)
            rows.append(row)

    p_adj = benjamini_hochberg([r["p_value"] for r in rows])
    for r, q in zip(rows, p_adj):
        r["p_adjusted"] = float(q)
        r["bh_reject"] = bool(q <= alpha)
        problems = _diagnostic_problems(r, min_n=min_n, min_ess=min_ess, max_weight=max_weight)
        r["diagnostics_ok"] = not problems
        r["passed"] = r["bh_reject"] and not problems
        r["reason"] = _cell_reason(r, problems, alpha=alpha, z=z)

    global_problems = _global_checks(feedback, t_cand, t_base, mean_weight_z, max_support_deficiency)
    table = pl.DataFrame(rows, schema=GATE_TABLE_SCHEMA)
    promote = bool(table.get_column("passed").all()) and not global_problems
    if promote:
        reasons = _promotion_reasons(table, alpha)
    else:
        reasons = tuple(global_problems) + _refusal_reasons(table)
    return GateResult(promote, reasons, table, alpha)


def _global_checks(feedback: LoggedFeedback, t_cand: np.ndarray, t_base: np.ndarray, z_max: float,
                   max_def: float) -> list[str]:
    from ope.diagnostics import diagnose

    out = []
    for who, target in (("candidate", t_cand), ("baseline", t_base)):
        d = diagnose(feedback, target)
        w = importance_weights(feedback, target)
        expected = 1.0 - d.support_deficiency if d.support_exact else 1.0
        sd = float(w.std(ddof=1)) if w.size > 1 else 0.0
        zval = abs(d.mean_weight - expected) / (sd / math.sqrt(w.size)) if sd > 0 else 0.0
        if d.support_deficiency > max_def:
            out.append(f"support: the {who} puts {d.support_deficiency:.2%} of its traffic on profiles the logging "
                       f"policy never played for those requests (max_support_deficiency = {max_def:g}); the logs "
                       f"cannot evaluate it there: run it as a shadow or canary first so its choices get logged.")
        elif zval > z_max:
            out.append(f"weights: the {who}'s mean importance weight is {d.mean_weight:.4f}, {zval:.1f} standard "
                       f"errors from its expectation {expected:.4f} (limit {z_max:g}); the logged propensities or "
                       f"the outcome join look wrong: check the logs before trusting any estimate.")
    return out


def _diagnostic_problems(r: dict, *, min_n: int, min_ess: float, max_weight: float | None) -> list[str]:
    problems = []
    if r["n"] < min_n:
        problems.append(f"only {r['n']:,} logged rounds (min_n = {min_n:,})")
    for who in ("candidate", "baseline"):
        ess = r[f"ess_{who}"]
        if r["n"] >= min_n and ess < min_ess:
            problems.append(f"the {who}'s effective sample size is {ess:.1f} of {r['n']:,} rounds (min_ess = {min_ess:g})")
    if max_weight is not None and r["max_weight"] > max_weight:
        problems.append(f"the largest importance weight is {r['max_weight']:.4g} (max_weight = {max_weight:g})")
    return problems


def _where(r: dict) -> str:
    return f"{r['metric']} ({_ALL})" if r["cohort_column"] is None else f"{r['metric']} on {r['cohort']}"


def _cell_reason(r: dict, problems: list[str], *, alpha: float, z: float) -> str:
    level = f"{1 - alpha:.0%}"
    where, diff, thr = _where(r), r["diff"], r["threshold"]
    if problems:
        return (f"{where}: cannot be judged: {'; '.join(problems)}. Collect more traffic where the candidate's "
                "choices are logged (shadow or canary), or drop this cohort column.")
    higher = r["direction"] == "higher"
    if r["role"] == "primary" and r["cohort_column"] is None:
        need = f"the required margin {_fmt(thr)}"
    elif higher:
        need = f"the non-inferiority limit {_fmt(thr)} (margin {_fmt(-thr)})"
    else:
        need = f"the non-inferiority limit +{_fmt(thr)} (margin {_fmt(thr)})"
    numbers = (f"candidate {_fmt(r['estimate_candidate'])} vs baseline {_fmt(r['estimate_baseline'])}, "
               f"difference {_fmt(diff)} [{level} bounds {_fmt(r['lower'])}, {_fmt(r['upper'])}], "
               f"p = {r['p_value']:.3g}, BH-adjusted {r['p_adjusted']:.3g}, n = {r['n']:,}")
    if r["passed"]:
        verb = "beats" if r["role"] == "primary" and r["cohort_column"] is None else "is within"
        return f"{where}: passes, the candidate {verb} {need} ({numbers})."
    bound = r["upper"] if higher else r["lower"]
    harmful = (bound < thr) if higher else (bound > thr)
    word = "worse" if (diff < 0) == higher else "better"
    if harmful:
        what = "is worse than the baseline" if word == "worse" else "does not improve enough on the baseline"
        act = ("do not promote; fix the candidate for this cohort or keep the baseline there"
               if r["cohort_column"] is not None else "do not promote this candidate")
        return f"{where}: the candidate {what}: even its {level} {'upper' if higher else 'lower'} bound " \
               f"{_fmt(bound)} misses {need} ({numbers}); {act}."
    gap = (diff - thr) if higher else (thr - diff)
    if gap > 0 and math.isfinite(r["stderr"]) and r["stderr"] > 0:
        factor = (z * r["stderr"] / gap) ** 2
        act = f"about {factor:.1f}x the traffic would be needed if the difference holds; keep the canary running"
    else:
        act = "the point estimate itself misses it; the candidate is unlikely to pass with more traffic"
    side = "lower" if higher else "upper"
    return f"{where}: not shown: the {level} {side} bound {_fmt(r['lower'] if higher else r['upper'])} does not " \
           f"clear {need} ({numbers}); {act}."


def _refusal_reasons(table: pl.DataFrame) -> tuple[str, ...]:
    failed = table.filter(~pl.col("passed"))
    # primary overall first, then guardrails overall, then cohorts (worst adjusted p first)
    failed = failed.with_columns((pl.col("cohort_column").is_not_null()).alias("_c"),
                                 (pl.col("role") != "primary").alias("_g")).sort("_c", "_g", "cohort", "metric")
    seen_diag: set[str] = set()
    out = []
    for r in failed.iter_rows(named=True):
        if not r["diagnostics_ok"]:
            if r["cohort"] in seen_diag:
                continue
            seen_diag.add(r["cohort"])
            label = "all traffic" if r["cohort_column"] is None else r["cohort"]
            out.append(label + r["reason"][len(_where(r)):])
            continue
        out.append(r["reason"])
    return tuple(out)


def _promotion_reasons(table: pl.DataFrame, alpha: float) -> tuple[str, ...]:
    overall = table.filter(pl.col("cohort_column").is_null())
    out = [r["reason"] for r in overall.iter_rows(named=True)]
    cohort_rows = table.filter(pl.col("cohort_column").is_not_null())
    if cohort_rows.height:
        cohorts = cohort_rows.get_column("cohort").unique().len()
        worst = cohort_rows.sort("p_adjusted", descending=True).row(0, named=True)
        out.append(f"all {cohorts} cohorts x {cohort_rows.get_column('metric').n_unique()} metrics are non-inferior "
                   f"(Benjamini-Hochberg at {alpha:g}); the closest call is {worst['metric']} on {worst['cohort']} "
                   f"(difference {_fmt(worst['diff'])}, limit {_fmt(worst['threshold'])}, "
                   f"BH-adjusted p = {worst['p_adjusted']:.3g}).")
    return tuple(out)
