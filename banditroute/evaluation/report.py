"""One self-contained HTML report of the logs, candidates, gate and beliefs in inline SVG (no plotting
dependency, script or external URL). One colour per profile and per candidate in every chart
(:func:`color_map`), green/red only for pass/fail; marks carry ``data-profile``, ``data-candidate`` or
``data-status`` and a tooltip; no exponents (:func:`fmt_num`); labels laid out apart (:data:`FONT_PX`).

>>> svg = interval_plot([{"label": "a", "value": 0.5, "low": 0.4, "high": 0.6}], title="t", xlabel="x")
>>> svg.startswith("<svg") and "</svg>" in svg
True
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import ConfigError
from .candidates import load_feedback, resolve_policies

__all__ = ["interval_plot", "histogram", "stacked_area", "routing_share", "render_report",
           "build_report", "color_map", "fmt_num", "PROFILE_PALETTE", "CANDIDATE_PALETTE", "FONT_PX"]

#: Profiles' colours and candidates' colours (neither has the gate's green or red).
PROFILE_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
CANDIDATE_PALETTE = ("#003f5c", "#bc5090", "#008b8b", "#b8860b", "#6a51a3", "#4d4d4d", "#6baed6", "#c7a76c")
PASS, FAIL = "#2ca02c", "#d62728"
#: Font size (px) of each text class of the page's CSS; the layout estimates text widths from it.
FONT_PX = {"t": 14, "tick": 11, "lab": 12, "rl": 12}
_SVG, _E = 'xmlns="http://www.w3.org/2000/svg"', html.escape
_EXP = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?[eE][+-]?\d+")
_MARKS = {"dot": '<circle cx="{x}" cy="{y}" r="4.5" fill="{c}"{a}/>', "diamond": (
    '<path d="M{x},{y} m0,-7 l5,7 l-5,7 l-5,-7 z" fill="none" stroke="{c}"/>'),
          "ring": '<circle cx="{x}" cy="{y}" r="4" fill="#fff" stroke="{c}" stroke-width="2"/>',
          "box": '<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"{a}/>'}


def color_map(names: Iterable[str], palette: Sequence[str] = PROFILE_PALETTE) -> dict[str, str]:
    """One colour per name, in sorted order: the same names get the same colours in every chart.

    >>> color_map(["small", "large", "small"], ("red", "blue"))
    {'large': 'red', 'small': 'blue'}
    """
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(names)))}


def fmt_num(x: float | None, *, sig: int = 4, decimals: int | None = None) -> str:
    """A number for reading: no exponent, thousands separators, exactly ``decimals`` or else ``sig``
    significant digits (at most 6 decimals, trailing zeros dropped); what would round to 0 is a bound.

    >>> fmt_num(50000.0), fmt_num(759.66), fmt_num(-0.02), fmt_num(2.9e-07), fmt_num(0.5, decimals=2)
    ('50,000', '759.7', '-0.02', '< 0.000001', '0.50')
    """
    if x is None or not math.isfinite(x):
        return "-"
    d = decimals if decimals is not None else 0 if x == 0 else min(max(sig - 1 - math.floor(math.log10(abs(x))), 0), 6)
    if x != 0 and abs(x) < 0.5 * 10.0 ** -d:
        return ("< " if x > 0 else "> -") + f"{10.0 ** -d:.{d}f}"
    s = f"{x + 0.0:,.{d}f}"
    return s.rstrip("0").rstrip(".") if decimals is None and "." in s else s


def _plain(text: Any) -> str:  # the numbers in exponent notation rewritten by fmt_num
    return _EXP.sub(lambda m: fmt_num(float(m[0])), str(text))


def _w(text: str, cls: str) -> float:
    return 0.65 * FONT_PX[cls] * len(text)


def _text(x: float, y: float, s: Any, cls: str, anchor: str = "start", color: str | None = None) -> str:
    style = f' style="fill:{color}"' if color else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{style}>{_E(str(s))}</text>'


def _attrs(data: Mapping[str, Any] | None) -> str:
    return "".join(f' data-{k}="{_E(str(v))}"' for k, v in (data or {}).items())


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return "".join([f'<svg {_SVG} width="{width}" height="{height:.0f}" viewBox="0 0 {width} {height:.0f}" '
                    f'role="img"><title>{_E(title)}</title>', _text(10, 18, title, "t"), *body, "</svg>"])


def _axis_ticks(lo: float, hi: float, px: float) -> tuple[list[float], list[str]]:
    """Round ticks over [lo, hi], labels with one number of decimals, as many as fit ``px`` apart."""
    for n in (6, 5, 4, 3, 2):
        mag = 10 ** math.floor(math.log10((hi - lo) / n))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= (hi - lo) / n)
        ticks = [t for i in range(int((hi - lo) / step) + 2) if lo <= (t := round((math.ceil(lo / step) + i) * step,
                                                                                   12)) <= hi]
        d = next((d for d in range(7) if all(abs(t - round(t, d)) <= 1e-9 * max(1.0, abs(t)) for t in ticks)), 6)
        labels = [fmt_num(round(t, d) + 0.0, decimals=d) for t in ticks]
        if len(ticks) < 2 or max(_w(s, "tick") for s in labels) + 8 <= step / (hi - lo) * px:
            break
    return ticks, labels


def interval_plot(rows: Sequence[Mapping[str, Any]], *, title: str, xlabel: str,
                  refs: Sequence[tuple[float, str, str]] = (), legend: Sequence[tuple] = (), width: int = 1100) -> str:
    """Horizontal point-and-interval plot, one row per dict: ``label``, ``value``, ``low``, ``high``;
    optional ``color``, ``truth`` (a diamond), ``group`` (a gap between groups), ``note`` (text at the
    right), ``tip`` (the point's tooltip), ``hollow``, ``data`` (``data-*`` of the marks). ``refs``:
    vertical lines ``(x, label, color)``, labelled above the plot in rows so that no two overlap;
    ``legend``: ``(color, label, shape, data)`` items under the title (shape: dot, ring or diamond)."""
    left = 18 + max([_w(str(r["label"]), "rl") for r in rows] + [40])
    right = 24 + max([_w(r.get("note", ""), "tick") for r in rows] + [_w(s, "tick") for _, s, _ in refs] + [10])
    xs = [v for r in rows for k in ("low", "high", "value", "truth")
          if (v := r.get(k)) is not None and math.isfinite(v)] + [x for x, *_ in refs]
    lo, hi = min(xs, default=0.0), max(xs, default=1.0)
    lo, hi, plot_w = lo - ((hi - lo) * 0.06 or 0.05), hi + ((hi - lo) * 0.06 or 0.05), width - left - right
    sx = lambda v: left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w  # noqa: E731
    out, x, y = [], 10.0, 40.0 if legend else 30.0
    for color, label, shape, data in legend:
        x, y = (10.0, y + 16) if x > 10 and x + 18 + _w(label, "tick") > width - 10 else (x, y)
        out.append(_MARKS[shape].format(x=x + 5, y=y - 4, c=color, a=_attrs(data)) + _text(x + 15, y, label, "tick"))
        x += 32 + _w(label, "tick")
    placed: list[tuple] = []  # (line x, label x0, label x1, row above the plot, label, color); from the right, each
    for x, label, color in sorted(refs, key=lambda r: -r[0]):  # label right of its line, in the first row where it
        x0, w = sx(x) + 4, _w(label, "tick")  # overlaps no label and no line (of a label to its right) crosses it
        row = next((k for k in range(len(placed)) if not any((r == k and x0 < b + 8 and a < x0 + w + 8) or (
            k <= r and x0 - 2 <= q <= x0 + w + 2) for q, a, b, r, _, _ in placed)), len(placed))
        placed.append((x0 - 4, x0, x0 + w, row, label, color))
    y = top = y + (16 if legend else 0) + 14 * max([p[3] + 1 for p in placed] + [0]) + 8
    base = top + 22 * (len(rows) + sum(a.get("group") != b.get("group") for a, b in zip(rows, rows[1:])))
    out += [f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{base}" class="grid"/>'
            + _text(sx(t), base + 14, s, "tick", "middle") for t, s in zip(*_axis_ticks(lo, hi, plot_w))]
    out += [f'<line x1="{px:.1f}" y1="{top - 15 - 14 * row:.1f}" x2="{px:.1f}" y2="{base}" stroke="{color}" '
            f'stroke-dasharray="5,3" stroke-width="1.5"/>' + _text(x0, top - 6 - 14 * row, label, "tick", color=color)
            for px, x0, _, row, label, color in placed] + [_text(left + plot_w / 2, base + 32, xlabel, "lab", "middle")]
    for i, r in enumerate(rows):
        y += 22 if i and r.get("group") != rows[i - 1].get("group") else 0
        cy, color, a = y + 11, r.get("color", PROFILE_PALETTE[0]), _attrs(r.get("data"))
        low, high, value, truth = (r.get(k) for k in ("low", "high", "value", "truth"))
        out.append(_text(left - 8, cy + 4, r["label"], "rl", "end")
                   + (_text(width - right + 12, cy + 4, r["note"], "tick") if r.get("note") else ""))
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            out.append(f'<line x1="{sx(low):.1f}" y1="{cy}" x2="{sx(high):.1f}" y2="{cy}" stroke="{color}" '
                       f'stroke-width="2.5"{a}/>')
        if value is not None and math.isfinite(value):
            fill = f'fill="#fff" stroke="{color}" stroke-width="2"' if r.get("hollow") else f'fill="{color}"'
            tip = r.get("tip") or f"{r['label']}: {fmt_num(value)} [{fmt_num(low)}, {fmt_num(high)}]"
            out.append(f'<circle cx="{sx(value):.1f}" cy="{cy}" r="4.5" {fill}{a}><title>{_E(tip)}</title></circle>')
        if truth is not None and math.isfinite(truth):
            out.append(f'<path d="M{sx(truth):.1f},{cy - 7} l5,7 l-5,7 l-5,-7 z" fill="none" stroke="#000" '
                       f'stroke-width="1.5"><title>true value {fmt_num(truth)}</title></path>')
        y += 22
    return _svg(width, base + 44, title, out)


def histogram(values: np.ndarray, *, title: str, xlabel: str, bins: int = 40, note: str = "",
              color: str = CANDIDATE_PALETTE[0], data: Mapping[str, Any] | None = None,
              width: int = 540, height: int = 250) -> str:
    """A histogram of the positive ``values`` on a log axis (whole decades), in requests per bin."""
    v = np.asarray(values, dtype=float)
    v = np.log10(v[np.isfinite(v) & (v > 0)])
    left, top, pw, ph = 56, 62, width - 86, height - 106
    out = [_text(10, 35, note, "tick"), _text(10, top - 10, "requests per bin", "tick"),
           f'<path d="M{left},{top} V{top + ph} H{left + pw}" fill="none" stroke="#444"/>',
           _text(left + pw / 2, height - 8, xlabel, "lab", "middle")]
    if v.size:
        lo, hi = math.floor(v.min()), max(math.ceil(v.max()), math.floor(v.min()) + 1)
        counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
        top_count, sx = int(counts.max()) or 1, lambda e: left + (e - lo) / (hi - lo) * pw
        out += [f'<rect x="{sx(a):.1f}" y="{top + ph - c / top_count * ph:.1f}" width="{max(sx(b) - sx(a) - 1, 1):.1f}"'
                f' height="{c / top_count * ph:.1f}" fill="{color}"{_attrs(data)}><title>{_E(fmt_num(10.0 ** a))} to '
                f'{_E(fmt_num(10.0 ** b))}: {c:,} requests</title></rect>' for c, a, b in zip(counts, edges, edges[1:])]
        labels = [fmt_num(10.0 ** t, decimals=max(0, -t)) for t in range(lo, hi + 1)]
        keep = next(k for k in range(1, hi - lo + 1)  # every keep-th decade, so that no two labels overlap
                    if max(_w(s, "tick") for s in labels) + 8 <= k * pw / (hi - lo) or k == hi - lo)
        out += [f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#444"/>'
                + _text(sx(t), top + ph + 15, labels[t - lo], "tick", "middle") for t in range(lo, hi + 1, keep)]
        out.append(_text(left - 6, top + 4, f"{top_count:,}", "tick", "end"))
    return _svg(width, height, title, out)


def stacked_area(shares: np.ndarray, names: Sequence[str], *, title: str, xlabels: Sequence[str],
                 colors: Mapping[str, str] | None = None, xlabel: str = "decisions in time order (equal-count bins)",
                 width: int = 1100, height: int = 300) -> str:
    """Stacked shares (n_bins, n_series) over equal-width x steps; the legend lists them as stacked."""
    shares, colors = np.asarray(shares, dtype=float), colors or color_map(names)
    left, top, pw, ph = 46, 34, width - 86 - max([_w(n, "rl") for n in names] + [40]), height - 74
    n = shares.shape[0]
    xs, out, cum = [left + (i + 0.5) / n * pw for i in range(n)], [], np.zeros(n)
    for k, name in enumerate(names):
        upper = cum + shares[:, k]
        pts = " ".join(f"{x:.1f},{top + ph * (1 - u):.1f}" for x, u in zip(xs + xs[::-1], [*upper, *cum[::-1]]))
        out.append(f'<polygon points="{pts}" fill="{colors[name]}" fill-opacity="0.85" data-profile="{_E(name)}">'
                   f'<title>{_E(name)}: {shares[:, k].mean():.0%} of the decisions</title></polygon>')
        cum = upper
    out += [_MARKS["box"].format(x=left + pw + 14, y=top + 18 * j, c=colors[name], a=_attrs({"profile": name}))
            + _text(left + pw + 32, top + 18 * j + 10, name, "rl") for j, name in enumerate(names[::-1])]
    out += [_text(left - 4, top + ph * (1 - t) + 4, f"{t:.0%}", "tick", "end") for t in (0, 0.25, 0.5, 0.75, 1)]
    for i in sorted({0, n // 2, n - 1}):
        anchor, dx = ("start", -4) if i == 0 else ("end", 4) if i == n - 1 else ("middle", 0)
        out.append(f'<line x1="{xs[i]:.1f}" y1="{top + ph}" x2="{xs[i]:.1f}" y2="{top + ph + 4}" stroke="#444"/>'
                   + _text(xs[i] + dx, top + ph + 16, xlabels[i], "tick", anchor))
    return _svg(width, height, title, out + [_text(left + pw / 2, height - 6, xlabel, "lab", "middle")])


def routing_share(log_dir: str | Path, *, n_bins: int = 40) -> tuple[np.ndarray, list[str], list[str]]:
    """Share of executed profiles per equal-count time bin of the decision log: ``(shares (n_bins,
    n_profiles), profile names (sorted), bin labels (the bin's first and last decision, its first time))``."""
    from ope.logs import scan_decisions

    d = scan_decisions(log_dir).select("ts", "seq", "profile").collect().sort("ts", "seq")
    names = sorted(d.get_column("profile").unique().to_list())
    n_bins = max(1, min(n_bins, d.height))
    idx = np.minimum(np.arange(d.height) * n_bins // max(d.height, 1), n_bins - 1)
    code = d.get_column("profile").replace_strict(names, list(range(len(names))), return_dtype=pl.Int64).to_numpy()
    counts = np.zeros((n_bins, len(names)))
    np.add.at(counts, (idx, code), 1.0)
    ts, starts = d.get_column("ts").to_list(), [int(np.flatnonzero(idx == b)[0]) for b in range(n_bins)] + [d.height]
    labels = [f"#{s + 1:,}\u2013{e:,}" + (f" at {ts[s]:%H:%M:%S}" if isinstance(ts[s], dt.datetime) else "")
              for s, e in zip(starts, starts[1:])]
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), names, labels


def _table_html(frame: pl.DataFrame, *, highlight: str | None = None, group: str | None = None) -> str:
    """The frame as a table; a column's floats (within one value of ``group``) share their decimals."""
    rows, mag = list(zip(frame.get_column(group) if group else [None] * frame.height, frame.iter_rows(named=True))), {}
    for key, row in rows:  # the largest magnitude of each column (in each group)
        mag.update({(c, key): max(mag.get((c, key), -99), math.floor(math.log10(abs(v)))) for c, v in row.items()
                    if isinstance(v, float) and math.isfinite(v) and v != 0})
    def cell(c: str, v: Any, key: Any) -> str:
        if isinstance(v, float):
            return f"<td class='n'>{_E(fmt_num(v, decimals=min(max(3 - mag.get((c, key), 0), 0), 6)))}</td>"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"<td class='n'>{v:,}</td>"
        return f"<td>{_E(_plain('; '.join(map(str, v)) if isinstance(v, list) else '' if v is None else v))}</td>"
    body = "".join(("<tr>" if highlight is None else f"<tr class='{'ok' if row[highlight] else 'bad'}'>")
                   + "".join(cell(c, v, key) for c, v in row.items()) + "</tr>" for key, row in rows)
    head = "".join(f"<th>{_E(c)}</th>" for c in frame.columns)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,-apple-system,'DejaVu Sans',Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222}h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:30px}.verdict{font-size:20px;font-weight:bold;padding:10px 14px;border-radius:6px;color:#fff;
display:inline-block}.promote{background:#2ca02c}.refuse{background:#d62728}.passc{color:#2ca02c}
.failc{color:#d62728}th{background:#f3f3f3}ul.reasons li{margin:6px 0;line-height:1.35}td.n{text-align:right;
font-variant-numeric:tabular-nums}.grid{stroke:#eee}table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px}tr.ok td:first-child{border-left:4px solid #2ca02c}
tr.bad td:first-child{border-left:4px solid #d62728}svg{display:block;margin:8px 0;background:#fff}.t{font-size:14px;
font-weight:bold}.tick{font-size:11px;fill:#555}.lab{font-size:12px;fill:#333}.rl{font-size:12px;fill:#222}
.row{display:flex;flex-wrap:wrap;gap:10px}.muted{color:#666;font-size:13px}"""
_GATE_LEGEND = {"pass": (PASS, "passes the gate", "dot", None), "fail": (FAIL, "fails", "dot", None),
                "unjudged": (FAIL, "cannot be judged (fails)", "ring", None)}


def _gate_status(r: Mapping[str, Any], alpha: float) -> tuple[str, str, str]:
    """``(pass|fail|unjudged, a few words for its row, the kind of failure)`` of a gate cell."""
    reason, higher = r["reason"] or "", r["direction"] == "higher"
    bound, thr, least = (r["lower"] if higher else r["upper"]), r["threshold"], re.search(r"min_ess = ([\d.]+)", reason)
    if r["passed"]:
        return "pass", "passes", ""
    if not r["diagnostics_ok"]:
        return (("unjudged", f"not judged: ESS {fmt_num(min(r['ess_candidate'], r['ess_baseline']), sig=3)} < "
                 f"{least[1] if least else 'min'}", "ESS below the minimum") if "effective sample size" in reason else
                ("unjudged", f"not judged: only {r['n']:,} rounds", "too few logged rounds") if "logged rounds" in
                reason else ("unjudged", f"not judged: max weight {fmt_num(r['max_weight'])}", "a weight too large"))
    if (bound > thr) if higher else (bound < thr):
        return ("fail", f"fails: BH-adjusted p = {fmt_num(r['p_adjusted'], sig=2)} > {alpha:g}",
                "not significant after the Benjamini-Hochberg adjustment")
    return ("fail", f"fails: {'lower' if higher else 'upper'} bound {fmt_num(bound, sig=3)} {'<' if higher else '>'}"
            f" limit {fmt_num(thr)}", "the bound misses the limit")


def _gate_section(result: Any, label: str) -> list[str]:
    t, level = result.table, f"{1 - result.alpha:.0%}"
    whys = "; ".join(sorted({_gate_status(r, result.alpha)[2] for r in t.iter_rows(named=True) if not r["passed"]}))
    parts = [f"<h2>Promotion gate {_E(label)}</h2><div class='verdict {result.verdict.lower()}'>{result.verdict}</div>"
             "<ul class='reasons'>" + "".join(f"<li>{_E(_plain(r))}</li>" for r in result.reasons) + "</ul>"
             f"<p class='muted'>Each row: the difference candidate - baseline in one cohort (dot) and its one-sided "
             f"{level} bounds (bar); dashed lines: 0 and the gate's limit. <b class='passc'>Green</b>: passes the gate."
             " <b class='failc'>Red</b>: fails the gate (filled: the bound misses the limit or is not significant after"
             " the Benjamini-Hochberg adjustment; hollow: cannot be judged)" + (f"; here: {_E(whys)}" if whys else "")
             + ". The reason is at the right of each row and, in full, in its tooltip.</p>"]
    for metric in t.get_column("metric").unique(maintain_order=True).to_list():
        sub, rows = t.filter(pl.col("metric") == metric), []
        for r in sub.iter_rows(named=True):
            status, note, _ = _gate_status(r, result.alpha)
            rows.append({"label": f"{r['cohort']} (n = {r['n']:,} rounds)", "value": r["diff"], "low": r["lower"],
                         "high": r["upper"], "color": PASS if status == "pass" else FAIL, "group": r["cohort_column"],
                         "hollow": status == "unjudged", "note": note, "tip": _plain(r["reason"]),
                         "data": {"status": status, "cohort": r["cohort"]}})
        limits = [x for x in sub.get_column("threshold").unique(maintain_order=True).to_list() if x != 0]
        parts.append(interval_plot(
            rows, title=f"{metric}: candidate - baseline per cohort ({sub.row(0, named=True)['direction']} is better; "
            f"one-sided {level} bounds)", xlabel=f"difference in {metric} per request",
            legend=[item for s, item in _GATE_LEGEND.items() if s in {r["data"]["status"] for r in rows}],
            refs=[(0.0, "0: no difference", "#444")] + [(x, f"limit {fmt_num(x)}", FAIL) for x in limits]))
    return parts + ["<details><summary>Gate table (left edge green: passes; red: fails)</summary>" + _table_html(
        t.drop("reason", "cohort_column", "cohort_value"), highlight="passed", group="metric") + "</details>"]


def _estimates_section(evaluation: pl.DataFrame, truths: Mapping[str, float], colors: Mapping[str, str]) -> list[str]:
    first = evaluation.row(0, named=True)
    level, n = f"{1 - first['alpha']:.0%}", f", out of n = {first['n']:,} logged rounds" if "n" in first else ""
    rows = [{"label": f"{r['policy']} / {r['estimator']}", "value": r["value"], "low": r["ci_low"],
             "high": r["ci_high"], "color": colors[r["policy"]], "group": r["policy"], "truth": truths.get(r["policy"]),
             "note": f"ESS {fmt_num(r['ess'], decimals=0)}" if "ess" in r else "", "data": {"candidate": r["policy"]}}
            for r in evaluation.iter_rows(named=True)]
    table = evaluation.select([c for c in ("policy", "estimator", "value", "ci_low", "ci_high", "stderr", "n", "ess",
                                           "max_weight", "mean_weight", "warnings") if c in evaluation.columns])
    table = table.with_columns(pl.col("policy").replace_strict(dict(truths), default=None, return_dtype=pl.Float64)
                               .alias("true value")) if truths else table
    return ["<h2>Estimated value per policy and estimator</h2><p class='muted'>Colour: the policy named at the left "
            f"(the same in the importance-weight histograms). Dot: the estimate; bar: its {level} interval"
            + ("; diamond: the simulator's true value" if truths else "")
            + f". At the right: the effective sample size (ESS) of the policy's importance weights{n}.</p>",
            interval_plot(rows, title=f"Reward per request, {level} intervals",
                          xlabel="reward per request (objective units)"), _table_html(table)]


def render_report(*, title: str, evaluation: pl.DataFrame | None = None, truths: Mapping[str, float] | None = None,
                  gate_result: Any = None, gate_label: str = "", weights: Mapping[str, np.ndarray] | None = None,
                  routing: tuple[np.ndarray, list[str], list[str]] | None = None, beliefs: pl.DataFrame | None = None,
                  notes: Sequence[str] = ()) -> str:
    """Assemble the HTML page from computed pieces (each optional); colours are chosen here, once, for every chart.

    >>> page = render_report(title="t", notes=["hello"])
    >>> page.startswith("<!DOCTYPE html>") and "hello" in page
    True
    """
    has_eval, has_beliefs = evaluation is not None and evaluation.height > 0, beliefs is not None and beliefs.height > 0
    profiles = color_map([*(routing[1] if routing is not None else ()),
                          *(beliefs.get_column("profile") if has_beliefs else ())], PROFILE_PALETTE)
    candidates = color_map([*(evaluation["policy"] if has_eval else ()), *(weights or ())], CANDIDATE_PALETTE)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_E(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_E(title)}</h1><p class='muted'>Generated "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by banditroute. Self-contained: no scripts, no "
             "external resources. Hover a mark for its numbers.</p>", *(f"<p>{_E(_plain(n))}</p>" for n in notes),
             *(_gate_section(gate_result, gate_label) if gate_result is not None else ()),
             *(_estimates_section(evaluation, truths or {}, candidates) if has_eval else ())]
    if weights:
        parts.append("<h2>Importance weights</h2><p class='muted'>w = candidate(logged profile) / logged propensity, "
                     "per request, in the candidate's colour; a heavy right tail or a small ESS (effective sample "
                     "size): few requests carry the estimate.</p><div class='row'>")
        for name, w in ((k, np.asarray(v, dtype=float)) for k, v in weights.items()):
            ess = float(w.sum()) ** 2 / float(np.dot(w, w)) if np.dot(w, w) > 0 else 0.0
            parts.append(histogram(w, title=f"{name}: importance weights w > 0", xlabel="w (log scale)", note=(
                f"n = {w.size:,} requests; w = 0 for {np.mean(w == 0):.0%}; ESS {fmt_num(ess, decimals=0)}; max w "
                f"{fmt_num(float(w.max()))}; mean w {fmt_num(float(w.mean()))}"), color=candidates[name],
                data={"candidate": name}))
        parts.append("</div>")
    if routing is not None:
        shares, names, labels = routing
        parts += ["<h2>Routing share over time</h2><p class='muted'>Colour: the profile (the same in the posterior "
                  "reliability chart). Each bin: the share of its decisions executed on each profile.</p>",
                  stacked_area(shares, names, title="Share of decisions executed on each profile", xlabels=labels,
                               colors=profiles, xlabel=f"decisions in time order ({len(labels)} equal-count bins)")]
    if has_beliefs:
        rows = [{"label": f"{r['task_type']} / {r['profile']}", "value": r["mean"], "low": r["ci_low"],
                 "high": r["ci_high"], "color": profiles[r["profile"]], "group": r["task_type"],
                 "note": f"n = {fmt_num(r['n'], decimals=0)} outcomes", "data": {"profile": r["profile"]}}
                for r in beliefs.sort("task_type", "profile").iter_rows(named=True)]
        parts += ["<h2>Posterior reliability per profile and task type</h2><p class='muted'>Colour: the profile (the "
                  "same in the routing share). Dot: posterior mean; bar: 95% credible interval; n at the right: the "
                  "outcomes learned from (an effective count when old outcomes are discounted).</p>",
                  interval_plot(rows, title="P(good outcome): posterior mean and 95% credible interval",
                                xlabel="reliability", legend=[(profiles[p], p, "dot", {"profile": p}) for p in
                                                              sorted(set(beliefs.get_column("profile")))])]
    return "\n".join(parts + ["</body></html>"])


def build_report(log_dir: str | Path, *, candidates: Mapping[str, Any], baseline: Any = "logged",
                 config: str | Path | None = None, router: Any = None, gate_candidate: str | None = None,
                 gate_kwargs: Mapping[str, Any] | None = None, feedback: Any = None,
                 truths: Mapping[str, float] | None = None, title: str | None = None,
                 wait_window_s: float | None = None, default_reward: float | None = None,
                 seed: int = 0) -> str:
    """Compute everything from the logs and render the report: ``candidates`` maps names to SPECs (see
    :mod:`banditroute.evaluation.candidates`) or arrays; ``router``: a Router or saved-router path for the beliefs
    (else ``config`` is replayed); the first candidate (or ``gate_candidate``) is gated with ``gate_kwargs``."""
    import ope
    from ope.gate import default_reward_model, gate

    from ..decide.router import Router

    gate_kwargs = dict(gate_kwargs or {})
    fb = feedback if feedback is not None else load_feedback(log_dir, cohorts=list(gate_kwargs.get("cohorts", ())),
                                                             wait_window_s=wait_window_s, default_reward=default_reward)
    base_name = baseline if isinstance(baseline, str) else "baseline"
    base_key = f"baseline ({base_name})"
    # learning candidates are evaluated once (progressively or on a time split): the table and the gate share them
    learned = resolve_policies({base_key: baseline, **candidates}, fb, log_dir=log_dir, config=config,
                               wait_window_s=wait_window_s, default_reward=default_reward,
                               learning=gate_kwargs.pop("learning", "progressive"))
    fb, policies = learned.feedback, learned.targets
    estimators = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_model=default_reward_model())}
    evaluation = ope.evaluate(fb, policies, estimators, seed=seed).with_columns(
        pl.col("policy").replace_strict(learned.evaluation).alias("evaluation"))
    truths = {("baseline (logged)" if k == "logged" else k): v for k, v in (truths or {}).items()}
    weights = {name: ope.importance_weights(fb, t) for name, t in policies.items() if name in candidates}
    chosen = gate_candidate or next(iter(candidates))
    if chosen not in candidates:
        raise ConfigError("gate_candidate", chosen, f"must be one of the candidates {list(candidates)}")
    result = replace(gate(fb, candidate=policies[chosen], baseline=policies[base_key], **{"seed": seed, **gate_kwargs}),
                     evaluation={"candidate": learned.evaluation[chosen], "baseline": learned.evaluation[base_key]})
    if router is None and config is not None:
        router = Router.from_config(config, log_dir=None)
        router.replay(log_dir)
    router = Router.load(router, log_dir=None) if isinstance(router, (str, Path)) else router
    return render_report(
        title=title or f"banditroute report: {log_dir}", evaluation=evaluation, truths=truths, gate_result=result,
        gate_label=f"({chosen} vs {base_name})", weights=weights, routing=routing_share(log_dir),
        beliefs=None if router is None else router.beliefs(),
        notes=[f"{fb.n_rounds:,} logged decisions with outcomes; profiles: {', '.join(fb.action_names)}.",
               *(f"'{name}' learns; evaluated by {how}." for name, how in learned.evaluation.items()
                 if not how.startswith("static"))])
