"""ope.gate_logs (ope/partition_gate.py) and ``banditroute promote --engine``: the promotion gate on log
partitions gives the in-memory gate's table, reasons and verdict (guardrails and cohorts included); the
local and Dask engines and any number of partitions agree; a zero-gain candidate is promoted at most
alpha of the time; what cannot be split into partitions is a clear error."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import numpy as np
import pytest

import banditroute as br
import ope
from banditroute.cli.main import main
from conftest import TASKS
from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.partition_gate import CellStats
from test_ope_distributed import PROFILES, TRUTH

distributed = pytest.importorskip("distributed")

COHORTS = ["task_type", "tenant"]
GATE = dict(metric="quality", cohorts=COHORTS, guardrails={"cost_usd": 0.02, "latency_ms": 3000.0}, min_ess=50)
EXACT = ["cohort", "cohort_column", "cohort_value", "metric", "role", "direction", "n", "bh_reject", "diagnostics_ok",
         "passed", "reason"]
NUMERIC = ["threshold", "ess_candidate", "ess_baseline", "max_weight", "estimate_candidate", "estimate_baseline",
           "diff", "stderr", "lower", "upper", "p_value", "p_adjusted"]


def _write_logs(root, *, n_per_writer=700, seed=0, truth=TRUTH, exploration=0.6, writers=3):
    """``writers`` routers on one log; contexts with a task_type and a tenant; outcomes with quality, latency
    and (not always: a null metric) cost; some decisions without an outcome."""
    rng = np.random.default_rng(seed)
    by_name = {p.name: p for p in PROFILES}
    for w in range(writers):
        router = br.Router(PROFILES, task_types=TASKS, seed=seed + w, log_dir=root, exploration=exploration)
        for i in range(n_per_writer):
            d = router.decide({"task_type": TASKS[i % 3], "tenant": f"t{i % 4}"})
            u, p = rng.random(), by_name[d.profile]
            if u < 0.9:
                router.record(d.id, quality=float(rng.random() < truth[d.profile]),
                              cost_usd=p.cost_usd * rng.lognormal(0, 0.3) if u < 0.75 else None,
                              latency_ms=p.latency_ms * rng.lognormal(0, 0.2))
        router.flush()
    return root


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return _write_logs(tmp_path_factory.mktemp("gate_logs"))


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


def _in_memory(log_dir, profile: str, **kw):
    fb = ope.feedback_from_logs(log_dir, cohorts=COHORTS, contexts=True)  # as promote reads them
    target = ope.one_hot(np.full(fb.n_rounds, fb.action_names.index(profile)), fb.n_actions)
    return ope.gate(fb, candidate=target, baseline=fb.logging_distribution, **kw)


def _assert_same(got: ope.GateResult, ref: ope.GateResult, rtol=1e-9):
    assert (got.promote, got.reasons, dict(got.evaluation)) == (ref.promote, ref.reasons, dict(ref.evaluation))
    assert got.table.schema == ref.table.schema
    assert got.table.select(EXACT).equals(ref.table.select(EXACT))
    for column in NUMERIC:
        np.testing.assert_allclose(got.table[column].to_numpy(), ref.table[column].to_numpy(), rtol=rtol, atol=1e-12,
                                   err_msg=column)


@pytest.mark.parametrize("estimator", ["ips", "snips", ope.IPS(clip=3.0)], ids=["ips", "snips", "ips-clip"])
@pytest.mark.parametrize("profile, verdict", [("large", "PROMOTE"), ("small", "REFUSE")])
def test_partitions_give_the_in_memory_gate_row_by_row(logs, estimator, profile, verdict):
    ref = _in_memory(logs, profile, estimator=estimator, **GATE)
    got = ope.gate_logs(logs, candidate=f"always:{profile}", baseline="logging", estimator=estimator, engine="local",
                        n_partitions=3, **GATE)
    assert ref.verdict == verdict
    assert got.table.height == 3 * (1 + 3 + 4)  # 3 metrics x (all traffic, 3 task types, 4 tenants)
    assert got.table.filter(got.table["metric"] == "cost_usd")["n"][0] < got.table["n"][0]  # cost is not always logged
    _assert_same(got, ref)


def test_options_object_and_a_zero_partition_are_handled(logs):
    ref = _in_memory(logs, "large", estimator="ips", **GATE)
    many = ope.gate_logs(logs, candidate="always:large", baseline="logging", n_partitions=40,
                         options=ope.GateOptions(estimator="ips", **GATE))
    _assert_same(many, ref)


@pytest.mark.parametrize("estimator", ["ips", "dr", "sndr"])
def test_engines_and_partition_counts_agree(logs, client, estimator, tmp_path):
    kw = dict(candidate="always:large", baseline="logging", estimator=estimator, seed=3, **GATE)
    one = ope.gate_logs(logs, engine="local", n_partitions=1, **kw)
    _assert_same(ope.gate_logs(logs, engine="local", n_partitions=4, shuffle=False, **kw), one)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _assert_same(ope.gate_logs(logs, engine="local", n_partitions=4, shuffle=True, shuffle_dir=scratch, **kw), one)
    assert not any(scratch.iterdir())  # the shuffled copy is deleted
    _assert_same(ope.gate_logs(logs, engine=client, **kw), one)
    if estimator != "ips":  # a reward model fitted on a sample, not the in-memory one: the same answer within noise
        ref = _in_memory(logs, "large", estimator=estimator, **GATE).table.row(0, named=True)
        row = one.table.row(0, named=True)
        assert abs(row["diff"] - ref["diff"]) < ref["stderr"] and one.promote


def test_engine_dask_starts_and_closes_its_own_cluster(logs):
    kw = dict(candidate="always:small", baseline="logging", estimator="ips", **GATE)
    _assert_same(ope.gate_logs(logs, engine="dask", dask_workers=2, **kw), ope.gate_logs(logs, **kw))


def test_a_zero_gain_candidate_is_promoted_at_most_alpha_of_the_time(tmp_path, seed):
    """Every profile has the same quality: the candidate gains nothing on the logging policy (margin 0).
    Over 100 independent logs the gate on partitions promotes it in at most alpha + 3 binomial s.e."""
    equal = {name: 0.5 for name in TRUTH}
    n_reps, alpha = 100, 0.05
    promoted, small_p = 0, 0
    for rep in range(n_reps):
        root = _write_logs(tmp_path / str(rep), n_per_writer=400, seed=seed * 1000 + rep, truth=equal, writers=1)
        result = ope.gate_logs(root, candidate="always:medium", baseline="logging", estimator="ips", metric="quality",
                               margin=0.0, alpha=alpha, min_ess=20, n_partitions=2)
        promoted += result.promote
        small_p += result.table["p_value"][0] <= 0.5
    assert promoted / n_reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_reps)
    # not vacuous: the raw p-value of a zero gain is about uniform (its median about 0.5)
    assert abs(small_p / n_reps - 0.5) <= 3 * math.sqrt(0.25 / n_reps)


def test_cell_stats_merge_exactly(seed):
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=50) for _ in range(6)]
    x[2], x[5] = np.abs(x[2]) + 0.1, np.abs(x[5]) + 0.1
    w = rng.random((2, 50))
    whole = CellStats.of(x, w[0], w[1])
    parts = [CellStats.of([c[s] for c in x], w[0, s], w[1, s]) for s in (slice(0, 0), slice(0, 7), slice(7, 50))]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    np.testing.assert_allclose(merged.measure(0.05), whole.measure(0.05), rtol=1e-12)
    np.testing.assert_allclose(merged.weights, whole.weights, rtol=1e-12)
    infl = [x[3 * k] + (x[3 * k + 1] - x[3 * k + 1].mean() / x[3 * k + 2].mean() * x[3 * k + 2]) / x[3 * k + 2].mean()
            for k in (0, 1)]
    assert math.isclose(whole.measure(0.05)[3], float((infl[0] - infl[1]).std(ddof=1)) / math.sqrt(50), rel_tol=1e-12)


def test_what_partitions_cannot_gate_is_a_clear_error(logs, tmp_path):
    class Learner:
        def action_distribution(self, contexts, action_names):
            return ope.uniform(contexts.height, len(action_names))

        def learn(self, contexts, actions, rewards):
            pass

    with pytest.raises(InvalidConfigError, match="the candidate learns: .* gate it in memory with ope.gate"):
        ope.gate_logs(logs, candidate=Learner(), baseline="logging", estimator="ips")
    with pytest.raises(InvalidConfigError, match="an array file is aligned with the rounds of one in-memory reading"):
        ope.gate_logs(logs, candidate="always:large", baseline=f"file:{tmp_path / 'b.npy'}", estimator="ips")
    fixed = ope.DR(reward_predictions=np.zeros((1, 3)))
    with pytest.raises(InvalidConfigError, match="estimator DR cannot gate log partitions: its reward_predictions"):
        ope.gate_logs(logs, candidate="always:large", baseline="logging", estimator=fixed)
    with pytest.raises(InvalidConfigError, match="n_partitions must be an integer >= 1 or None, got 0"):
        ope.gate_logs(logs, candidate="always:large", baseline="logging", n_partitions=0)
    with pytest.raises(InvalidConfigError, match="dask_workers applies to engine 'dask'"):
        ope.gate_logs(logs, candidate="always:large", baseline="logging", estimator="ips", dask_workers=2)
    with pytest.raises(InvalidConfigError, match="either as options=GateOptions"):
        ope.gate_logs(logs, candidate="always:large", baseline="logging", alpha=0.1, options=ope.GateOptions())


@pytest.mark.parametrize("estimator", ["ips", "dr"])
def test_metric_errors_are_the_in_memory_gates(logs, tmp_path, estimator):
    kw = dict(estimator=estimator, guardrails={"tokens": (1.0, "lower")})
    with pytest.raises(InvalidConfigError) as ref:
        _in_memory(logs, "large", **kw)
    with pytest.raises(InvalidConfigError) as got:
        ope.gate_logs(logs, candidate="always:large", baseline="logging", **kw)
    assert str(got.value) == str(ref.value) and "metric 'tokens' is not logged" in str(got.value)
    root = tmp_path / "no_cost"
    router = br.Router(PROFILES, task_types=TASKS, seed=0, log_dir=root, exploration=0.5)
    for _ in range(50):
        router.record(router.decide({"task_type": "chat"}).id, quality=1.0)
    router.flush()
    kw = dict(estimator=estimator, guardrails={"cost_usd": 0.01})
    with pytest.raises(InvalidFeedbackError) as ref:
        _in_memory(root, "large", **kw)
    with pytest.raises(InvalidFeedbackError) as got:
        ope.gate_logs(root, candidate="always:large", baseline="logging", n_partitions=3, **kw)
    assert str(got.value) == str(ref.value) and "no values for it (null in all 50 rounds" in str(got.value)


def test_gate_logs_takes_exactly_the_gates_keywords():
    params = inspect.signature(ope.gate_logs).parameters
    names = list(params)
    assert names[names.index("options") + 1:] == [f.name for f in dataclasses.fields(ope.GateOptions)]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name != "log_dir")


def _promote(*argv):
    return main(["promote", *argv])


@pytest.mark.parametrize("profile", ["large", "small"])
def test_cli_engine_local_exits_as_the_in_memory_promote(logs, capsys, profile):
    args = ["--logs", str(logs), "--candidate", f"c=always:{profile}", "--estimator", "ips", "--cohort", "task_type",
            "--guardrail", "quality=0.05", "--min-ess", "50"]
    in_memory = _promote(*args)
    memory_out = capsys.readouterr().out
    partitioned = _promote(*args, "--engine", "local", "--partitions", "3")
    out = capsys.readouterr().out
    assert in_memory == partitioned == (0 if profile == "large" else 3)
    assert "(engine local)" in out
    assert out.splitlines()[1:] == memory_out.splitlines()[1:]  # the same verdict and reasons, number for number


@pytest.mark.parametrize("argv, needle", [
    (["--candidate", "config", "--engine", "local"], "--candidate learns: .*got 'config'"),
    (["--candidate", "always:large", "--baseline", "router:saved.npz", "--engine", "dask"],
     "--baseline learns: .*got 'router:saved.npz'"),
    (["--candidate", "file:c.npy", "--engine", "local"], "--candidate is resolved on the rounds of one in-memory"),
    (["--candidate", "always:large", "--partitions", "2"], "--partitions needs --engine"),
    (["--candidate", "always:large", "--shuffle-dir", "/tmp"], "--shuffle-dir needs --engine.*got '/tmp'"),
    (["--candidate", "always:large", "--engine", "local", "--dask-workers", "2"], "--dask-workers needs --engine dask"),
])
def test_cli_what_partitions_cannot_gate_exits_2_naming_it(logs, capsys, argv, needle):
    assert _promote("--logs", str(logs), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("banditroute promote: error: ")
    assert re.search(needle, err), err


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "spark"], "argument --engine: must be local, dask or dask:ADDRESS, got 'spark'"),
    (["--engine", "local", "--partitions", "0"], "argument --partitions: must be an integer >= 1, got '0'"),
    (["--engine", "dask", "--dask-workers", "x"], "argument --dask-workers: must be an integer >= 1, got 'x'"),
])
def test_cli_invalid_engine_options_exit_2_naming_the_option(logs, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        _promote("--logs", str(logs), "--candidate", "always:large", *argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err
