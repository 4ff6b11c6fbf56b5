"""One self-contained HTML report: logs, candidate estimates, the gate, beliefs.

The plots are hand-written inline SVG (no plotting dependency, no script, no external URL:
the file opens offline and renders the same in every browser, and stays a few hundred KB):

- estimates with intervals per policy and estimator (with the true value when known);
- a forest plot per metric of the candidate-minus-baseline difference per cohort, with the
  gate's threshold, coloured by pass/fail;
- the distribution of importance weights per candidate (log scale), with ESS and max weight;
- the routing share of each profile over time (from the decision log);
- the posterior reliability of each (profile, task type) with its credible interval.

>>> svg = interval_plot([{"label": "a", "value": 0.5, "low": 0.4, "high": 0.6}], title="t", xlabel="x")
>>> svg.startswith("<svg") and "</svg>" in svg
True
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .candidates import load_feedback, resolve_policies

__all__ = ["interval_plot", "histogram", "stacked_area", "routing_share", "render_report", "build_report"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
PASS, FAIL = "#2ca02c", "#d62728"
_SVG = 'xmlns="http://www.w3.org/2000/svg"'
_E = html.escape


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def interval_plot(rows: Sequence[Mapping[str, Any]], *, title: str, xlabel: str,
                  refs: Sequence[tuple[float, str, str]] = (), width: int = 860) -> str:
    """Horizontal point-and-interval plot (one row per dict: label, value, low, high, and
    optional color, truth, group). ``refs`` are vertical lines ``(x, label, color)``."""
    left, right, top, row_h = 260, 30, 46, 22
    plot_w = width - left - right
    groups = [r.get("group") for r in rows]
    n_gaps = sum(1 for a, b in zip(groups, groups[1:]) if a != b)
    height = top + row_h * (len(rows) + n_gaps) + 44
    xs = [v for r in rows for v in (r.get("low"), r.get("high"), r.get("value"), r.get("truth"))
          if v is not None and math.isfinite(v)] + [x for x, _, _ in refs]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    pad = (hi - lo) * 0.06 or 0.05
    lo, hi = lo - pad, hi + pad

    def sx(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    out = [f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
           f'<title>{_E(title)}</title>',
           f'<text x="10" y="20" class="t">{_E(title)}</text>']
    base = top + row_h * (len(rows) + n_gaps)
    for t in _ticks(lo, hi):
        out.append(f'<line x1="{sx(t):.1f}" y1="{top - 8}" x2="{sx(t):.1f}" y2="{base}" class="grid"/>'
                    f'<text x="{sx(t):.1f}" y="{base + 14}" class="tick" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{base + 32}" class="lab" text-anchor="middle">{_E(xlabel)}</text>')
    for x, label, color in refs:
        out.append(f'<line x1="{sx(x):.1f}" y1="{top - 12}" x2="{sx(x):.1f}" y2="{base}" stroke="{color}" '
                   f'stroke-dasharray="5,3" stroke-width="1.5"/>'
                   f'<text x="{sx(x) + 3:.1f}" y="{top - 14}" class="tick" fill="{color}">{_E(label)}</text>')
    y, prev = top, object()
    for r in rows:
        if r.get("group") != prev and prev is not object() and y > top:
            y += row_h
        prev = r.get("group")
        cy = y + row_h / 2
        color = r.get("color", PALETTE[0])
        out.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" class="rl" text-anchor="end">{_E(str(r["label"]))}</text>')
        low, high, value = r.get("low"), r.get("high"), r.get("value")
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            out.append(f'<line x1="{sx(low):.1f}" y1="{cy:.1f}" x2="{sx(high):.1f}" y2="{cy:.1f}" stroke="{color}" '
                       f'stroke-width="2.5"/>')
        if value is not None and math.isfinite(value):
            out.append(f'<circle cx="{sx(value):.1f}" cy="{cy:.1f}" r="4.5" fill="{color}">'
                       f'<title>{_E(str(r["label"]))}: {_num(value)} [{_num(low)}, {_num(high)}]</title></circle>')
        truth = r.get("truth")
        if truth is not None and math.isfinite(truth):
            out.append(f'<path d="M{sx(truth):.1f},{cy - 7:.1f} l5,7 l-5,7 l-5,-7 z" fill="none" stroke="#000" '
                       f'stroke-width="1.5"><title>true value {_num(truth)}</title></path>')
        y += row_h
    out.append("</svg>")
    return "".join(out)


def histogram(values: np.ndarray, *, title: str, xlabel: str, bins: int = 40, note: str = "",
              color: str = PALETTE[0], width: int = 420, height: int = 230) -> str:
    """A histogram of ``values`` (finite ones) as SVG."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    left, right, top, bottom = 46, 14, 40, 44
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
           f'<title>{_E(title)}</title><text x="8" y="18" class="t">{_E(title)}</text>',
           f'<text x="8" y="33" class="tick">{_E(note)}</text>']
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
        top_count = counts.max() or 1
        for c, a, b in zip(counts, edges, edges[1:]):
            x = left + (a - lo) / (hi - lo) * pw
            w = max((b - a) / (hi - lo) * pw - 1, 1)
            h = c / top_count * ph
            out.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}">'
                       f'<title>[{_num(a)}, {_num(b)}): {c}</title></rect>')
        for t in _ticks(lo, hi, 4):
            x = left + (t - lo) / (hi - lo) * pw
            out.append(f'<text x="{x:.1f}" y="{top + ph + 14}" class="tick" text-anchor="middle">{_num(t)}</text>')
        out.append(f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{top_count}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>'
               f'<text x="{left + pw / 2:.0f}" y="{height - 8}" class="lab" text-anchor="middle">{_E(xlabel)}</text></svg>')
    return "".join(out)


def stacked_area(shares: np.ndarray, names: Sequence[str], *, title: str, xlabels: Sequence[str],
                 events: Sequence[tuple[float, str]] = (), width: int = 860, height: int = 300) -> str:
    """Stacked shares (n_bins, n_series), each row summing to 1, over equal-width x steps."""
    shares = np.asarray(shares, dtype=float)
    left, right, top, bottom = 46, 150, 34, 40
    pw, ph = width - left - right, height - top - bottom
    n = shares.shape[0]
    xs = [left + (i + 0.5) / n * pw for i in range(n)]
    out = [f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
           f'<title>{_E(title)}</title><text x="8" y="18" class="t">{_E(title)}</text>']
    cum = np.zeros(n)
    for k, name in enumerate(names):
        upper = cum + shares[:, k]
        pts = [f"{x:.1f},{top + ph * (1 - u):.1f}" for x, u in zip(xs, upper)]
        pts += [f"{x:.1f},{top + ph * (1 - c):.1f}" for x, c in zip(xs[::-1], cum[::-1])]
        color = PALETTE[k % len(PALETTE)]
        out.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.85"><title>{_E(name)}</title></polygon>'
                   f'<rect x="{left + pw + 12}" y="{top + 18 * k}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{left + pw + 30}" y="{top + 18 * k + 10}" class="rl">{_E(name)}</text>')
        cum = upper
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph * (1 - t)
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{t:.0%}</text>')
    for i in sorted({0, n // 2, n - 1}):
        out.append(f'<text x="{xs[i]:.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_E(xlabels[i])}</text>')
    for frac, label in events:
        x = left + frac * pw
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#000" stroke-dasharray="4,3"/>'
                   f'<text x="{x + 3:.1f}" y="{top + 12}" class="tick">{_E(label)}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" class="lab" text-anchor="middle">'
               'decisions in time order (equal-count bins)</text></svg>')
    return "".join(out)


def routing_share(log_dir: str | Path, *, n_bins: int = 40) -> tuple[np.ndarray, list[str], list[str]]:
    """Share of executed profiles per equal-count time bin of the decision log:
    ``(shares (n_bins, n_profiles), profile names, bin labels)``."""
    from ope.logs import scan_decisions

    d = scan_decisions(log_dir).select("ts", "seq", "profile").collect().sort("ts", "seq")
    names = d.get_column("profile").unique(maintain_order=True).to_list()
    n_bins = max(1, min(n_bins, d.height))
    idx = np.minimum(np.arange(d.height) * n_bins // max(d.height, 1), n_bins - 1)
    code = d.get_column("profile").replace_strict(names, list(range(len(names))), return_dtype=pl.Int64).to_numpy()
    counts = np.zeros((n_bins, len(names)))
    np.add.at(counts, (idx, code), 1.0)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    ts = d.get_column("ts").to_list()
    starts = [int(np.flatnonzero(idx == b)[0]) for b in range(n_bins)]
    labels = [f"#{s:,} {ts[s]:%H:%M:%S}" if isinstance(ts[s], dt.datetime) else f"#{s:,}" for s in starts]
    return shares, names, labels


def _table_html(frame: pl.DataFrame, *, highlight: str | None = None) -> str:
    head = "".join(f"<th>{_E(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.iter_rows(named=True):
        cls = ""
        if highlight is not None:
            cls = ' class="ok"' if row[highlight] else ' class="bad"'
        cells = []
        for v in row.values():
            if isinstance(v, float):
                cells.append(f"<td class='n'>{_num(v)}</td>")
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f"<td class='n'>{v:,}</td>")
            elif isinstance(v, list):
                cells.append(f"<td>{_E('; '.join(map(str, v)))}</td>")
            else:
                cells.append(f"<td>{_E('' if v is None else str(v))}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,'DejaVu Sans',Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:30px}
.verdict{font-size:20px;font-weight:bold;padding:10px 14px;border-radius:6px;color:#fff;display:inline-block}
.promote{background:#2ca02c}.refuse{background:#d62728}
ul.reasons li{margin:6px 0;line-height:1.35}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 6px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.ok td:first-child{border-left:4px solid #2ca02c}tr.bad td:first-child{border-left:4px solid #d62728}
svg{display:block;margin:8px 0;background:#fff}.t{font-size:14px;font-weight:bold}.tick{font-size:11px;fill:#555}
.lab{font-size:12px;fill:#333}.rl{font-size:12px;fill:#222}.grid{stroke:#eee}
.row{display:flex;flex-wrap:wrap;gap:10px}.muted{color:#666;font-size:13px}
"""


def render_report(*, title: str, evaluation: pl.DataFrame | None = None, truths: Mapping[str, float] | None = None,
                  gate_result: Any = None, gate_label: str = "", weights: Mapping[str, np.ndarray] | None = None,
                  routing: tuple[np.ndarray, list[str], list[str]] | None = None,
                  beliefs: pl.DataFrame | None = None, notes: Sequence[str] = ()) -> str:
    """Assemble the HTML page from computed pieces (every piece optional).

    >>> page = render_report(title="t", notes=["hello"])
    >>> page.startswith("<!DOCTYPE html>") and "hello" in page
    True
    """
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_E(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_E(title)}</h1>",
             f"<p class='muted'>Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by banditroute. "
             "Self-contained: no scripts, no external resources.</p>"]
    parts += [f"<p>{_E(n)}</p>" for n in notes]
    if gate_result is not None:
        cls = "promote" if gate_result.promote else "refuse"
        parts.append(f"<h2>Promotion gate {_E(gate_label)}</h2><div class='verdict {cls}'>{gate_result.verdict}</div>")
        parts.append("<ul class='reasons'>" + "".join(f"<li>{_E(r)}</li>" for r in gate_result.reasons) + "</ul>")
        t = gate_result.table
        for metric in t.get_column("metric").unique(maintain_order=True).to_list():
            sub = t.filter(pl.col("metric") == metric)
            rows = [{"label": f"{r['cohort']} (n={r['n']:,})", "value": r["diff"], "low": r["lower"], "high": r["upper"],
                     "color": PASS if r["passed"] else FAIL, "group": r["cohort_column"]}
                    for r in sub.iter_rows(named=True)]
            thr = sub.get_column("threshold").unique(maintain_order=True).to_list()
            refs = [(0.0, "0", "#444")] + [(x, f"limit {_num(x)}", "#d62728") for x in thr if x != 0]
            better = "higher" if sub.row(0, named=True)["direction"] == "higher" else "lower"
            parts.append(interval_plot(
                rows, title=f"{metric}: candidate - baseline per cohort ({better} is better; one-sided "
                f"{1 - gate_result.alpha:.0%} bounds; green passes)", xlabel=f"difference in {metric} per request",
                refs=refs))
        parts.append("<details><summary>Gate table</summary>" + _table_html(
            t.drop("reason", "cohort_column", "cohort_value"), highlight="passed") + "</details>")
    if evaluation is not None and evaluation.height:
        rows = []
        policies = evaluation.get_column("policy").unique(maintain_order=True).to_list()
        for i, row in enumerate(evaluation.iter_rows(named=True)):
            color = PALETTE[policies.index(row["policy"]) % len(PALETTE)]
            rows.append({"label": f"{row['policy']} / {row['estimator']}", "value": row["value"], "low": row["ci_low"],
                         "high": row["ci_high"], "color": color, "group": row["policy"],
                         "truth": (truths or {}).get(row["policy"])})
        legend = " (diamond: the simulator's true value)" if truths else ""
        parts.append("<h2>Estimated value per policy and estimator</h2>")
        parts.append(interval_plot(rows, title=f"Reward per request, {1 - evaluation.row(0, named=True)['alpha']:.0%} "
                                   f"intervals{legend}", xlabel="reward per request (objective units)"))
        cols = [c for c in ("policy", "estimator", "value", "ci_low", "ci_high", "stderr", "n", "ess", "max_weight",
                            "mean_weight", "warnings") if c in evaluation.columns]
        table = evaluation.select(cols)
        if truths:
            table = table.with_columns(pl.col("policy").replace_strict(dict(truths), default=None,
                                                                       return_dtype=pl.Float64).alias("true value"))
        parts.append(_table_html(table))
    if weights:
        parts.append("<h2>Importance weights</h2><p class='muted'>w = candidate(logged profile) / logged "
                     "propensity; heavy right tails and a small ESS mean the estimate rests on few requests.</p>"
                     "<div class='row'>")
        for i, (name, w) in enumerate(weights.items()):
            w = np.asarray(w, dtype=float)
            pos = w[w > 0]
            ess = float(w.sum()) ** 2 / float(np.dot(w, w)) if np.dot(w, w) > 0 else 0.0
            note = (f"n={w.size:,}, zero weight {np.mean(w == 0):.0%}, ESS {ess:,.0f}, "
                    f"max {w.max():.3g}, mean {w.mean():.3f}")
            parts.append(histogram(np.log10(pos), title=f"{name}: log10 weight (w > 0)", xlabel="log10(w)", note=note,
                                   color=PALETTE[i % len(PALETTE)]))
        parts.append("</div>")
    if routing is not None:
        shares, names, labels = routing
        parts.append("<h2>Routing share over time</h2>")
        parts.append(stacked_area(shares, names, title="Share of decisions executed on each profile",
                                  xlabels=labels))
    if beliefs is not None and beliefs.height:
        parts.append("<h2>Posterior reliability per profile and task type</h2>")
        profiles = beliefs.get_column("profile").unique(maintain_order=True).to_list()
        rows = [{"label": f"{r['task_type']} / {r['profile']} (n={r['n']:.0f})", "value": r["mean"], "low": r["ci_low"],
                 "high": r["ci_high"], "color": PALETTE[profiles.index(r["profile"]) % len(PALETTE)],
                 "group": r["task_type"]}
                for r in beliefs.sort("task_type", maintain_order=True).iter_rows(named=True)]
        parts.append(interval_plot(rows, title="P(good outcome): posterior mean and 95% credible interval",
                                   xlabel="reliability"))
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(log_dir: str | Path, *, candidates: Mapping[str, Any], baseline: Any = "logged",
                 config: str | Path | None = None, router: Any = None, gate_candidate: str | None = None,
                 gate_kwargs: Mapping[str, Any] | None = None, feedback: Any = None,
                 truths: Mapping[str, float] | None = None, title: str | None = None,
                 wait_window_s: float | None = None, default_reward: float | None = None,
                 seed: int = 0) -> str:
    """Compute everything from the logs and render the report.

    ``candidates`` maps names to SPECs (see :mod:`banditroute.evaluation.candidates`) or arrays;
    ``router`` is a Router or a saved-router path for the beliefs (else ``config`` is
    replayed on the logs). The first candidate (or ``gate_candidate``) is gated against
    ``baseline`` with ``gate_kwargs``.
    """
    import ope
    from ope.gate import default_reward_model, gate

    from ..decide.router import Router

    gate_kwargs = dict(gate_kwargs or {})
    cohorts = list(gate_kwargs.get("cohorts", ()))
    fb = feedback if feedback is not None else load_feedback(log_dir, cohorts=cohorts, wait_window_s=wait_window_s,
                                                             default_reward=default_reward)
    where = dict(log_dir=log_dir, config=config, wait_window_s=wait_window_s, default_reward=default_reward)

    learning = gate_kwargs.pop("learning", "progressive")
    base_name = baseline if isinstance(baseline, str) else "baseline"
    base_key = f"baseline ({base_name})"
    # learning candidates are evaluated once, progressively or on a time split (then every
    # policy is compared on the held-out rounds), and the arrays shared by the table and the gate
    learned = resolve_policies({base_key: baseline, **candidates}, fb, learning=learning, **where)
    fb, policies = learned.feedback, learned.targets
    estimators = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_model=default_reward_model())}
    evaluation = ope.evaluate(fb, policies, estimators, seed=seed).with_columns(
        pl.col("policy").replace_strict(learned.evaluation).alias("evaluation"))
    truths = {("baseline (logged)" if k == "logged" else k): v for k, v in (truths or {}).items()}
    weights = {name: ope.importance_weights(fb, t) for name, t in policies.items() if name in candidates}
    chosen = gate_candidate or next(iter(candidates))
    if chosen not in candidates:
        from ..errors import ConfigError

        raise ConfigError("gate_candidate", chosen, f"must be one of the candidates {list(candidates)}")
    gate_kwargs.setdefault("seed", seed)
    result = replace(gate(fb, candidate=policies[chosen], baseline=policies[base_key], **gate_kwargs),
                     evaluation={"candidate": learned.evaluation[chosen], "baseline": learned.evaluation[base_key]})
    beliefs = None
    if router is not None:
        beliefs = (Router.load(router, log_dir=None) if isinstance(router, (str, Path)) else router).beliefs()
    elif config is not None:
        replayed = Router.from_config(config, log_dir=None)
        replayed.replay(log_dir)
        beliefs = replayed.beliefs()
    return render_report(
        title=title or f"banditroute report: {log_dir}", evaluation=evaluation, truths=truths, gate_result=result,
        gate_label=f"({chosen} vs {base_name})", weights=weights, routing=routing_share(log_dir), beliefs=beliefs,
        notes=[f"{fb.n_rounds:,} logged decisions with outcomes, {fb.n_actions} profiles: "
               f"{', '.join(fb.action_names)}.",
               *(f"'{name}' learns; evaluated by {how}." for name, how in learned.evaluation.items()
                 if not how.startswith("static"))])
