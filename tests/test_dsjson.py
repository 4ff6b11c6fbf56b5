"""DSJSON export (banditroute) and import (ope), checked against VW's own DSJSON parser."""

import argparse
import json

import numpy as np
import pytest

import banditroute as br
from banditroute.sim import Scenario, Simulator
import ope
from banditroute.policies import vw_binding as vw
from banditroute.cli import export
from banditroute.logs.dsjson import dsjson_line, export_dsjson
from banditroute.policies.vw import VWConfig, VWPolicy, _hashed, action_namespaces, shared_namespaces
from ope.dsjson import feedback_from_dsjson

needs_vw = pytest.mark.skipif(not vw.available(), reason="vowpal_wabbit_next has no wheel here")
OBJECTIVE = br.Objective(quality=1.0, cost=10.0, latency=2e-5)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A Thompson router (exploration 0.1) on the simulator, logging to disk; one profile is
    allow-listed to two tenants, so some decisions have a masked profile."""
    log_dir = tmp_path_factory.mktemp("logs")
    sim = Simulator(Scenario.default(n_requests=6000).stationary(), seed=11)
    profiles = [br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms,
                           allow={"tenant": ["acme", "globex"]} if p.name == "medium" else None,
                           tags=("big",) if p.name == "large" else ())
                for p in sim.scenario.profiles]
    router = br.Router(profiles, task_types=list(sim.task_types), exploration=0.1, objective=OBJECTIVE,
                       log_dir=log_dir, seed=11)
    for _ in range(30):
        batch = sim.next_requests(200)
        decisions = router.decide_batch(batch.contexts())
        sim.submit(batch, np.array([router.profiles.index(d.profile) for d in decisions]),
                   tickets=[d.id for d in decisions])
        for out in (sim.poll(),):
            for t, q, c, lat in zip(out.tickets, out.quality, out.cost_usd, out.latency_ms):
                router.record(t, quality=float(q), cost_usd=float(c), latency_ms=float(lat))
    out = sim.drain()
    for t, q, c, lat in zip(out.tickets, out.quality, out.cost_usd, out.latency_ms):
        router.record(t, quality=float(q), cost_usd=float(c), latency_ms=float(lat))
    router.close()
    path = log_dir / "events.dsjson"
    result = export_dsjson(log_dir, path, profiles=profiles)
    return log_dir, path, result, profiles


def test_export_writes_every_joined_decision_labels_first(logged):
    log_dir, path, result, _ = logged
    lines = path.read_text().splitlines()
    assert result.n_written == len(lines) == 6000 and result.n_skipped == 0
    first = json.loads(lines[0])
    assert list(first)[:4] == ["_label_cost", "_label_probability", "_label_Action", "_labelIndex"]
    assert list(first).index("c") > 3
    assert {"EventId", "Timestamp", "a", "p", "c"} <= set(first) and first["Timestamp"].endswith("Z")
    for line in lines:
        e = json.loads(line)
        assert e["_labelIndex"] == e["_label_Action"] - 1 == e["a"][0] - 1
        assert e["p"][0] == e["_label_probability"] and abs(sum(e["p"]) - 1) < 1e-9


def test_import_round_trips_the_logs_exactly(logged):
    log_dir, path, _, _ = logged
    fb = feedback_from_dsjson(path)
    logs = ope.LoggedFeedback.from_logs(log_dir, contexts=True)
    order = {n: i for i, n in enumerate(logs.action_names)}
    remap = np.array([order[n] for n in fb.action_names])
    # the export is in time order, the logs in file order: align by sorting on a stable key
    fb_key = np.lexsort((fb.rewards, fb.propensities, remap[fb.actions]))
    logs_key = np.lexsort((logs.rewards, logs.propensities, logs.actions))
    np.testing.assert_array_equal(remap[fb.actions][fb_key], logs.actions[logs_key])
    np.testing.assert_array_equal(fb.rewards[fb_key], logs.rewards[logs_key])
    np.testing.assert_array_equal(fb.propensities[fb_key], logs.propensities[logs_key])
    dist = np.zeros_like(fb.logging_distribution)
    dist[:, remap] = fb.logging_distribution
    np.testing.assert_array_equal(dist[fb_key], logs.logging_distribution[logs_key])
    assert set(fb.contexts.columns) == {"prompt_tokens", "tenant", "task_type"}
    assert fb.cohorts.columns == ["task_type"]


@needs_vw
@pytest.mark.parametrize("args", [["--cb_adf"], ["--cb_explore_adf", "--squarecb"], ["--cb_explore_adf", "--bag", "3"]])
def test_vw_parser_reads_every_label_exactly(logged, args):
    _, path, _, _ = logged
    ws = vw.workspace(args)
    parser = vw.dsjson_parser(ws)
    for line in path.read_text().splitlines():
        e = json.loads(line)
        examples = parser.parse_json(line)
        assert len(examples) == 1 + len(e["c"]["_multi"])
        assert examples[0].get_label().shared
        labelled = [i for i, ex in enumerate(examples[1:]) if ex.get_label().label is not None]
        assert labelled == [e["_labelIndex"]]
        action, cost, prob = examples[1 + e["_labelIndex"]].get_label().label
        assert action == e["_label_Action"]
        assert cost == np.float32(e["_label_cost"]) and prob == np.float32(e["_label_probability"])


@needs_vw
@pytest.mark.parametrize("exploration", ["squarecb", "bag", "cover"])
def test_exported_features_are_the_live_policys_features(logged, exploration):
    """VW's parser and VWPolicy hash the same features, so models move between them."""
    _, path, _, profiles = logged
    policy = VWPolicy(profiles, config=VWConfig(exploration=exploration), seed=0)
    parser = vw.dsjson_parser(policy._ws)
    by_name = {p.name: p for p in profiles}
    for line in path.read_text().splitlines()[:200]:
        e = json.loads(line)
        parsed = parser.parse_json(line)
        context = {"task_type": max(e["c"]["t"], key=e["c"]["t"].get), **e["c"]["s"]}
        expected = [_hashed(policy._hasher, shared_namespaces(context))]
        expected += [_hashed(policy._hasher, action_namespaces(by_name[m["a"]["id"]])) for m in e["c"]["_multi"]]
        for ex, want in zip(parsed, expected):
            got = {chr(fg.feat_group_index): sorted(zip(fg.indices, np.float32(fg.values).tolist())) for fg in ex}
            want = {ns: sorted(zip(i, np.float32(v).tolist())) for ns, (i, v) in want.items() if i}
            assert got == want


@needs_vw
def test_cb_adf_trained_offline_on_the_export_beats_uniform(logged):
    """Train VW --cb_adf on the first 60% of the file through the binding; on the rest, its
    greedy policy's IPS value beats the uniform policy's (paired difference, 3 standard errors)."""
    _, path, _, _ = logged
    lines = path.read_text().splitlines()
    cut = int(0.6 * len(lines))
    ws = vw.workspace(["--cb_adf", "--interactions", "sa", "--interactions", "ta", "--random_seed", "1"])
    parser = vw.dsjson_parser(ws)
    for line in lines[:cut]:
        ws.learn_one(parser.parse_json(line))
    test = lines[cut:]
    fb = feedback_from_dsjson(test)
    names = fb.action_names
    greedy = np.zeros((fb.n_rounds, fb.n_actions))
    uniform = np.zeros_like(greedy)
    for i, line in enumerate(test):
        multi = [names.index(m["a"]["id"]) for m in json.loads(line)["c"]["_multi"]]
        scores = ws.predict_one(parser.parse_json(line))  # (index, cost) pairs, best first
        greedy[i, multi[min(scores, key=lambda s: s[1])[0]]] = 1.0
        uniform[i, multi] = 1.0 / len(multi)
    w = fb.rewards / fb.propensities
    diff = w * (greedy - uniform)[np.arange(fb.n_rounds), fb.actions]
    assert diff.mean() - 3 * diff.std(ddof=1) / np.sqrt(diff.size) > 0
    vw_value = ope.SNIPS().estimate(fb, greedy, seed=0)
    assert vw_value.ci_low > ope.SNIPS().estimate(fb, uniform, seed=0).value


def test_unlabelled_lines_are_skipped_and_bad_lines_named():
    good = dsjson_line(event_id="e", ts_us=0, context={"task_type": "chat"}, actions=[{"a": {"id": "x"}}],
                       chosen=0, probabilities=[1.0], reward=0.5)
    fb = feedback_from_dsjson([good, '{"c":{"_multi":[{}]}}', ""])
    assert fb.n_rounds == 1 and fb.rewards.tolist() == [0.5]
    with pytest.raises(ope.InvalidFeedbackError, match="dsjson line 2: is not valid JSON") as err:
        feedback_from_dsjson([good, "{"])
    assert err.value.field == "dsjson"
    bad = json.loads(good)
    bad["_labelIndex"] = 3
    with pytest.raises(ope.InvalidFeedbackError, match=r"dsjson line 1: _labelIndex 3 must be _label_Action - 1 \(0\)"):
        feedback_from_dsjson([json.dumps(bad)])
    with pytest.raises(ope.InvalidFeedbackError, match="no labelled line"):
        feedback_from_dsjson([])
    with pytest.raises(ope.LogsNotFoundError, match="path is not a DSJSON file"):
        feedback_from_dsjson("/nonexistent.json")


def test_export_command(logged, tmp_path, capsys):
    log_dir, path, _, _ = logged
    parser = argparse.ArgumentParser(prog="banditroute")
    export.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "x.json"
    args = parser.parse_args(["export", "--format", "dsjson", "--logs", str(log_dir), "--out", str(out), "--json"])
    assert args.run(args) == 0
    assert json.loads(capsys.readouterr().out) == {"written": 6000, "skipped": 0, "out": str(out)}
    # without profiles, actions carry only their id
    assert json.loads(out.read_text().splitlines()[0])["c"]["_multi"][0] == {"a": {"id": "small"}}
    bad = parser.parse_args(["export", "--format", "dsjson", "--logs", str(tmp_path / "none"), "--out", str(out)])
    with pytest.raises(br.LogError, match="log_dir has no decisions to export"):
        bad.run(bad)
