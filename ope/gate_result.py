"""The gate's verdict: from the measured cells to :class:`GateResult`.

:func:`decide` takes one row per (cohort, metric) cell as measured by :func:`ope.gate`
(estimates, paired difference, its interval and raw one-sided p-value), adjusts the
p-values of the whole family with Benjamini-Hochberg (:func:`benjamini_hochberg`),
applies the per-cell diagnostics (``min_n``, ``min_ess``, ``max_weight``) and writes every
reason in words: what failed, by how much, and what to do about it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtri

from ope.gate_options import GateOptions

__all__ = ["GateResult", "benjamini_hochberg", "decide", "GATE_TABLE_SCHEMA", "ALL_TRAFFIC"]

#: The cohort label of the overall cells.
ALL_TRAFFIC = "all traffic"

#: The columns of :attr:`GateResult.table`, one row per (cohort, metric) cell.
GATE_TABLE_SCHEMA = {
    "cohort": pl.String, "cohort_column": pl.String, "cohort_value": pl.String,
    "metric": pl.String, "role": pl.String, "direction": pl.String, "threshold": pl.Float64,
    "n": pl.Int64, "ess_candidate": pl.Float64, "ess_baseline": pl.Float64, "max_weight": pl.Float64,
    "estimate_candidate": pl.Float64, "estimate_baseline": pl.Float64, "diff": pl.Float64,
    "stderr": pl.Float64, "lower": pl.Float64, "upper": pl.Float64, "p_value": pl.Float64,
    "p_adjusted": pl.Float64, "bh_reject": pl.Boolean, "diagnostics_ok": pl.Boolean,
    "passed": pl.Boolean, "reason": pl.String,
}


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
    evaluation : mapping, optional
        How each policy was evaluated (``"candidate"``, ``"baseline"``): static, or for a
        learning policy progressive validation or a time split (see :mod:`ope.learning`).

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
    evaluation: Mapping[str, str] = field(default_factory=dict)

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
        how = [f"{who} evaluated by {text}" for who, text in self.evaluation.items() if not text.startswith("static")]
        return "\n".join([f"{head} (alpha = {self.alpha:g}).", *(f"- {r}" for r in self.reasons), *how])

    def to_dict(self) -> dict:
        """JSON-serialisable form (NaN as None)."""
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                for row in self.table.to_dicts()]
        return {"promote": self.promote, "verdict": self.verdict, "alpha": self.alpha,
                "reasons": list(self.reasons), "evaluation": dict(self.evaluation), "table": rows}


def _times(factor: float) -> str:
    """How many times the traffic, rounded as a person would say it.

    >>> _times(2.345), _times(18.08), _times(1808.4)
    ('about 2.3x', 'about 18x', 'more than 100x')
    """
    if factor < 10:
        return f"about {factor:.1f}x"
    return f"about {factor:.0f}x" if factor < 100 else "more than 100x"


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


def decide(rows: list[dict[str, Any]], global_problems: Sequence[str], options: GateOptions,
           evaluation: Mapping[str, str] | None = None) -> GateResult:
    """Adjust the cells' p-values, judge every cell and give the verdict with its reasons.

    Parameters
    ----------
    rows : list of dict
        One per (cohort, metric) cell, with the columns of :data:`GATE_TABLE_SCHEMA` up to
        ``p_value``; the rest are filled in here.
    global_problems : sequence of str
        Failed whole-log checks (support, mean weight); any of them refuses.
    options : GateOptions
        ``alpha``, ``min_n``, ``min_ess`` and ``max_weight`` are used.

    Examples
    --------
    >>> row = dict(cohort=ALL_TRAFFIC, cohort_column=None, cohort_value=None, metric="reward",
    ...            role="primary", direction="higher", threshold=0.0, n=1000, ess_candidate=500.0,
    ...            ess_baseline=500.0, max_weight=2.0, estimate_candidate=0.6, estimate_baseline=0.5,
    ...            diff=0.1, stderr=0.02, lower=0.067, upper=0.133, p_value=2.9e-7)
    >>> result = decide([row], [], GateOptions())
    >>> result.verdict, result.reasons[0].split(" (")[0]
    ('PROMOTE', 'reward')
    """
    alpha = float(options.alpha)
    z = float(ndtri(1.0 - alpha))
    min_ess = float(options.min_ess)
    max_weight = None if options.max_weight is None else float(options.max_weight)
    p_adj = benjamini_hochberg([r["p_value"] for r in rows])
    for r, q in zip(rows, p_adj):
        r["p_adjusted"] = float(q)
        r["bh_reject"] = bool(q <= alpha)
        problems = _diagnostic_problems(r, min_n=options.min_n, min_ess=min_ess, max_weight=max_weight)
        r["diagnostics_ok"] = not problems
        r["passed"] = r["bh_reject"] and not problems
        r["reason"] = _cell_reason(r, problems, alpha=alpha, z=z)
    table = pl.DataFrame(rows, schema=GATE_TABLE_SCHEMA)
    promote = bool(table.get_column("passed").all()) and not global_problems
    if promote:
        reasons = _promotion_reasons(table, alpha)
    else:
        reasons = tuple(global_problems) + _refusal_reasons(table)
    return GateResult(promote, reasons, table, alpha, dict(evaluation or {}))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    x = x + 0.0  # no "-0"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3g}"


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
    return f"{r['metric']} ({ALL_TRAFFIC})" if r["cohort_column"] is None else f"{r['metric']} on {r['cohort']}"


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
    side = "lower" if higher else "upper"
    own = r["lower"] if higher else r["upper"]
    if r["p_value"] <= alpha < r["p_adjusted"]:  # significant on its own: failed by the adjustment for many tests
        return (f"{where}: not shown once adjusted for the number of cohort x metric tests: its own {level} "
                f"{side} bound {_fmt(own)} clears {need}, but the Benjamini-Hochberg adjusted p "
                f"{r['p_adjusted']:.3g} is above {alpha:g} ({numbers}); a little more traffic, or fewer cohorts, "
                "would likely settle it; keep the canary running.")
    if gap > 0 and math.isfinite(r["stderr"]) and r["stderr"] > 0:
        factor = (z * r["stderr"] / gap) ** 2
        act = f"{_times(factor)} the traffic would be needed if the difference holds; keep the canary running"
    else:
        act = "the point estimate itself misses it; the candidate is unlikely to pass with more traffic"
    return f"{where}: not shown: the {level} {side} bound {_fmt(own)} does not " \
           f"clear {need} ({numbers}); {act}."


def _refusal_reasons(table: pl.DataFrame) -> tuple[str, ...]:
    failed = table.filter(~pl.col("passed"))
    # primary overall first, then guardrails overall, then cohorts (by cohort, then metric)
    failed = failed.with_columns((pl.col("cohort_column").is_not_null()).alias("_c"),
                                 (pl.col("role") != "primary").alias("_g")).sort("_c", "_g", "cohort", "metric")
    seen_diag: set[str] = set()
    out = []
    for r in failed.iter_rows(named=True):
        if not r["diagnostics_ok"]:
            if r["cohort"] in seen_diag:
                continue
            seen_diag.add(r["cohort"])
            label = ALL_TRAFFIC if r["cohort_column"] is None else r["cohort"]
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
