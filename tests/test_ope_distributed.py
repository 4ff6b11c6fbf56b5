"""ope.evaluate_logs (ope/distributed.py) and the mergeable statistics (ope/stats.py): the partitioned
evaluation, here or on a real Dask LocalCluster, gives the table of the in-memory path; summaries
merge exactly; the Poisson bucket bootstrap covers; old logs without ``bucket`` read the same."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import banditroute as br
import ope
import ope.cli
from banditroute.logs.rows import OutcomeRow
from banditroute.logs.store import LogWriter
from conftest import TASKS
from ope.buckets import stable_bucket
from ope.intervals import RoundTerms, interval_from_influence
from ope.stats import NB, TermStats, WeightStats, merge

distributed = pytest.importorskip("distributed")

PROFILES = [br.Profile("small", cost_usd=0.0004, latency_ms=400), br.Profile("medium", cost_usd=0.002, latency_ms=900),
            br.Profile("large", cost_usd=0.012, latency_ms=2500)]
TRUTH = {"small": 0.35, "medium": 0.55, "large": 0.7}
SPECS = {"u": "uniform", "logging": "logging", "large": "always:large"}
ESTIMATORS = [ope.IPS(), ope.IPS(clip=2.0), ope.SNIPS()]
NUMERIC = ["value", "stderr", "ci_low", "ci_high", "ess", "max_weight", "mean_weight", "support_deficiency"]
HOUR_US = 3_600_000_000


def _write_logs(root, *, n_per_writer=700, seed=0):
    """Three routers (three writers) and a fourth writer adding late and duplicate outcomes; some
    decisions have no outcome, some are escalated (some of those without the failed answer's outcome)."""
    rng = np.random.default_rng(seed)
    recorded = []
    for w in range(3):
        router = br.Router(PROFILES, task_types=TASKS, seed=seed + w, log_dir=root, exploration=0.3)
        for i in range(n_per_writer):
            d = router.decide({"task_type": TASKS[i % 3], "tenant": f"t{i % 4}"})
            u = rng.random()
            if u < 0.03:  # escalated: the child always has an outcome, the parent (failed) only sometimes
                child = router.escalate(d.id)
                router.record(child.id, quality=float(rng.random() < TRUTH[child.profile]))
                if u < 0.015:
                    router.record(d.id, quality=0.0)
            elif u < 0.9:
                router.record(d.id, quality=float(rng.random() < TRUTH[d.profile]))
                recorded.append(d.id)
        router.flush()
    decisions = pl.read_parquet(str(root / "decisions" / "**" / "*.parquet")).select("decision_id", "ts", "parent_id")
    roots = decisions.filter(pl.col("parent_id").is_null())
    ts = dict(zip(roots["decision_id"].to_list(), roots["ts"].dt.epoch("us").to_list()))
    late = LogWriter(root, writer_id="late", durability="sync")
    unrecorded = sorted(set(ts) - set(recorded))
    for seq, did in enumerate(recorded[::9]):  # duplicates: a second outcome a minute later
        q = float(rng.random() < 0.5)
        late.append(OutcomeRow(did, ts[did] + 60_000_000, "late", seq, q, None, 100.0, q, "duplicate"))
    for seq, did in enumerate(unrecorded[::2], start=10_000):  # late: two hours after the decision
        q = float(rng.random() < 0.5)
        late.append(OutcomeRow(did, ts[did] + 2 * HOUR_US, "late", seq, q, None, 100.0, q, "late"))
    late.close()
    return root


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return _write_logs(tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


def _in_memory(log_dir, policies=SPECS, estimators=ESTIMATORS, **join):
    fb = ope.feedback_from_logs(log_dir, **join)
    targets = {}
    for name, spec in policies.items():
        if spec == "uniform":
            targets[name] = ope.uniform(fb.n_rounds, fb.n_actions)
        elif spec == "logging":
            targets[name] = fb.logging_distribution
        else:
            targets[name] = ope.one_hot(np.full(fb.n_rounds, fb.action_names.index(spec.split(":")[1])), fb.n_actions)
    return ope.evaluate(fb, targets, estimators)


def _assert_same_table(got: pl.DataFrame, ref: pl.DataFrame, rtol=1e-9):
    assert got.schema == ref.schema
    assert got.select("policy", "estimator", "interval", "alpha", "n", "evaluation").equals(
        ref.select("policy", "estimator", "interval", "alpha", "n", "evaluation"))
    for column in NUMERIC:
        np.testing.assert_allclose(got[column].to_numpy(), ref[column].to_numpy(), rtol=rtol, atol=1e-15, err_msg=column)
    assert got["warnings"].to_list() == ref["warnings"].to_list()


JOINS = [
    {},
    {"wait_window": dt.timedelta(hours=1), "default_reward": 0.0, "duplicates": "last"},
    {"duplicates": "mean", "escalations": "all"},
]


@pytest.mark.parametrize("join", JOINS, ids=["default", "window-default-last", "mean-all"])
def test_dask_and_local_engines_give_the_in_memory_table(logs, client, join):
    ref = _in_memory(logs, **join)
    assert ref["n"][0] > 1500
    on_cluster = ope.evaluate_logs(logs, SPECS, ESTIMATORS, engine=client, n_partitions=5, **join)
    _assert_same_table(on_cluster, ref)
    here = ope.evaluate_logs(logs, SPECS, ESTIMATORS, engine="local", n_partitions=3, **join)
    _assert_same_table(here, ref)
    assert client.status == "running"  # a given client is not closed


def test_the_logs_have_what_the_join_rules_are_about(logs):
    joined = ope.join_logs(logs, default_reward=0.0, escalations="all").collect()
    assert joined["writer"].n_unique() == 3
    assert (joined["n_outcomes"] >= 2).sum() > 50  # duplicates
    assert (joined["n_outcomes"] == 0).sum() > 50  # missing
    late = ope.join_logs(logs, wait_window=dt.timedelta(hours=1), default_reward=0.0).collect()
    assert (late["n_outcomes"] == 0).sum() > (ope.join_logs(logs, default_reward=0.0).collect()["n_outcomes"] == 0).sum()
    columns = ope.log_columns.read_log_columns(logs)
    assert columns.n_escalated > 10 and columns.n_escalated_without_outcome > 0


def test_a_partition_read_in_the_scan_numbers_its_own_rounds(logs):
    whole = ope.join_logs(logs, escalations="all").select("decision_id", "row_index", "bucket").collect()
    buckets = ope.scan_decisions(logs).select("bucket").collect()["bucket"]
    for i in range(3):
        part = ope.join_logs(logs, partition=(i, 3), row_index="partition", escalations="all").collect().sort("row_index")
        mine = whole.filter(pl.col("bucket") % 3 == i).sort("row_index")
        assert part["decision_id"].to_list() == mine["decision_id"].to_list()  # the same rounds, in scan order
        assert part["row_index"].max() < (buckets % 3 == i).sum() < whole.height  # positions among the partition's
    with pytest.raises(ope.InvalidConfigError, match=r"row_index must be 'log' or 'partition', got 'file'"):
        ope.join_logs(logs, partition=(0, 2), row_index="file")


def test_escalation_counts_match_the_in_memory_reading(logs):
    columns = ope.log_columns.read_log_columns(logs)
    result = ope.distributed.run_log_evaluation(logs, {"u": "uniform"}, engine="local", n_partitions=4)
    assert (result.n_escalated, result.n_escalated_without_outcome) == (
        columns.n_escalated, columns.n_escalated_without_outcome)


def test_bootstrap_and_bernstein_on_the_cluster(logs, client):
    kw = dict(engine=client, seed=3, n_bootstrap=300)
    boot = ope.evaluate_logs(logs, SPECS, ESTIMATORS, interval="bootstrap", **kw)
    assert boot.equals(ope.evaluate_logs(logs, SPECS, ESTIMATORS, interval="bootstrap", **kw))  # seeded
    assert (boot["ci_low"] < boot["value"]).all() and (boot["value"] < boot["ci_high"]).all()
    normal = _in_memory(logs)
    np.testing.assert_allclose(boot["stderr"].to_numpy(), normal["stderr"].to_numpy(), rtol=0.25)
    bern = ope.evaluate_logs(logs, SPECS, ESTIMATORS, interval="bernstein", engine=client)
    fb = ope.feedback_from_logs(logs)
    ref = ope.IPS(clip=2.0).estimate(fb, ope.uniform(fb.n_rounds, fb.n_actions), interval="bernstein")
    row = bern.filter((pl.col("policy") == "u") & (pl.col("estimator") == "IPS#2")).row(0, named=True)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.ci_low, ref.ci_high), rel=1e-9)
    snips = bern.filter(pl.col("estimator") == "SNIPS")
    assert all("no finite-sample guarantee" in " ".join(w) for w in snips["warnings"].to_list())


def test_unsupported_policies_and_estimators_are_clear_errors(logs, client):
    class Learner:
        def action_distribution(self, contexts, action_names):
            return ope.uniform(contexts.height, len(action_names))

        def learn(self, feedback):
            return self

    with pytest.raises(ope.InvalidConfigError, match="progressive replay is sequential") as info:
        ope.evaluate_logs(logs, {"l": Learner()}, engine=client)
    assert info.value.field == "policy"
    with pytest.raises(ope.InvalidConfigError, match="cannot be split by bucket"):
        ope.evaluate_logs(logs, {"f": "file:/tmp/target.npy"}, engine=client)
    with pytest.raises(ope.InvalidConfigError, match="unknown profile"):
        ope.evaluate_logs(logs, {"x": "always:huge"}, engine="local")
    with pytest.raises(ope.InvalidConfigError, match="reward_predictions are aligned") as info:
        ope.evaluate_logs(logs, {"u": "uniform"}, [ope.DR(reward_predictions=np.zeros((3, 3)))], engine="local")
    assert info.value.field == "estimators"
    with pytest.raises(ope.InvalidConfigError, match=r"engine must be .* got 'spark'") as info:
        ope.evaluate_logs(logs, {"u": "uniform"}, engine="spark")
    assert info.value.field == "engine"
    with pytest.raises(ope.InvalidConfigError, match="dask_workers applies to engine 'dask'"):
        ope.evaluate_logs(logs, {"u": "uniform"}, engine="local", dask_workers=2)


def test_a_policy_object_is_evaluated_per_row(logs, client):
    class Cheap:  # per row, from the context: small on chat, large otherwise
        def action_distribution(self, contexts, action_names):
            pick = np.where(contexts["task_type"].to_numpy() == "chat", action_names.index("small"),
                            action_names.index("large"))
            return ope.one_hot(pick, len(action_names))

    got = ope.evaluate_logs(logs, {"cheap": Cheap()}, engine=client)
    fb = ope.feedback_from_logs(logs, contexts=True)
    ref = ope.evaluate(fb, {"cheap": Cheap()})
    _assert_same_table(got, ref)


def test_reordered_and_growing_profile_lists(tmp_path):
    """Profiles lists in several orders (the action space grows): one numbering for every partition."""
    from test_ope_logs import decision, outcome, write

    lists = [(["a", "b"], [0.4, 0.6]), (["b", "c", "a"], [0.1, 0.2, 0.7]), (["c", "a"], [0.5, 0.5])]
    rng = np.random.default_rng(5)
    rows = [decision(i, *lists[i % 3], lists[i % 3][0][int(rng.integers(0, len(lists[i % 3][0])))], minutes=i)
            for i in range(300)]
    write(tmp_path, "decisions", rows)
    write(tmp_path, "outcomes", [outcome(i, float(rng.random() < 0.5)) for i in range(0, 300, 1)])
    plan = ope.log_columns.plan_reading(tmp_path)
    assert plan.action_names == ope.action_space(tmp_path) == ("a", "b", "c") and plan.positions is not None
    assert plan.n_decisions == 300
    specs = {"logging": "logging", "c": "always:c", "u": "uniform"}
    _assert_same_table(ope.evaluate_logs(tmp_path, specs, ESTIMATORS, n_partitions=7), _in_memory(tmp_path, specs))


def test_missing_dask_extra_is_a_clear_error(logs, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ope.InvalidConfigError, match=r"pip install 'banditroute\[dask\]'") as info:
        ope.evaluate_logs(logs, {"u": "uniform"}, engine="dask")
    assert info.value.field == "engine"


# ---------------------------------------------------------------- the CLI


def test_cli_engine_dask_prints_the_in_memory_numbers(logs, tmp_path):
    base = [sys.executable, "-m", "ope", str(logs), "--policy", "u=uniform", "--policy", "big=always:large"]
    plain = subprocess.run([*base, "--json", str(tmp_path / "a.json")], capture_output=True, text=True, timeout=120)
    on_dask = subprocess.run([*base, "--engine", "dask", "--dask-workers", "2", "--json", str(tmp_path / "b.json")],
                             capture_output=True, text=True, timeout=180)
    assert plain.returncode == 0 and on_dask.returncode == 0, on_dask.stderr
    assert on_dask.stdout == plain.stdout  # the table (6 significant digits) and the escalation notes
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    for x, y in zip(a, b):
        assert (x["policy"], x["estimator"], x["n"], x["warnings"]) == (y["policy"], y["estimator"], y["n"], y["warnings"])
        for column in NUMERIC:
            assert y[column] == pytest.approx(x[column], rel=1e-9, abs=1e-15), column


def test_cli_bad_engine_exits_2_naming_it(logs):
    proc = subprocess.run([sys.executable, "-m", "ope", str(logs), "--engine", "foo"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "argument --engine: must be local, dask or dask:ADDRESS, got 'foo'" in proc.stderr


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "dask:"], "argument --engine: must be local, dask or dask:ADDRESS, got 'dask:'"),
    (["--partitions", "0"], "argument --partitions: must be an integer >= 1, got '0'"),
    (["--dask-workers", "2"], "--dask-workers 2 needs --engine dask"),
    (["--engine", "local", "--policy", "f=file:/tmp/x.npy"], "policy f=file:/tmp/x.npy"),
    (["--engine", "local", "--reward-sample", "0"], "argument --reward-sample: must be an integer >= 1, got '0'"),
])
def test_cli_bad_engine_options_exit_2_naming_them(logs, capsys, argv, needle):
    try:
        code = ope.cli.main([str(logs), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2 and needle in capsys.readouterr().err


def test_cli_engine_local_and_partitions_print_the_in_memory_table(logs, capsys):
    assert ope.cli.main([str(logs), "--policy", "u=uniform"]) == 0
    plain = capsys.readouterr().out
    assert ope.cli.main([str(logs), "--policy", "u=uniform", "--engine", "local", "--partitions", "4"]) == 0
    assert capsys.readouterr().out == plain
    assert ope.cli.main([str(logs), "--policy", "u=uniform", "--partitions", "4"]) == 0
    assert capsys.readouterr().out == plain


# ---------------------------------------------------------------- old logs (no bucket column)


def _rewrite(root, keep_bucket: bool, only=None):
    for path in sorted(root.glob("*/**/*.parquet")):
        if only is not None and path not in only:
            continue
        frame = pl.read_parquet(path)
        if not keep_bucket and "bucket" in frame.columns:
            frame.drop("bucket").with_columns(pl.lit(3, dtype=pl.Int32).alias("schema_version")).write_parquet(path)


def old_and_mixed_copies(logs, tmp_path):
    """Two copies of ``logs`` written before schema 4: all parts without ``bucket``, and some of them."""
    old, mixed = tmp_path / "old", tmp_path / "mixed"
    shutil.copytree(logs, old)
    shutil.copytree(logs, mixed)
    _rewrite(old, keep_bucket=False)
    decision_files = sorted((mixed / "decisions").glob("**/*.parquet"))
    _rewrite(mixed, keep_bucket=False, only={decision_files[0], *sorted((mixed / "outcomes").glob("**/*.parquet"))[1:]})
    return old, mixed


def test_old_logs_without_bucket_read_with_the_computed_bucket(logs, tmp_path):
    old, mixed = old_and_mixed_copies(logs, tmp_path)
    assert "bucket" not in pl.read_parquet_schema(sorted((old / "decisions").glob("**/*.parquet"))[0])
    stored = ope.join_logs(logs).select("decision_id", "bucket").collect().sort("decision_id")
    for root in (old, mixed):
        filled = ope.join_logs(root).select("decision_id", "bucket").collect().sort("decision_id")
        assert filled.equals(stored)
        assert filled["bucket"].to_list() == stable_bucket(filled["decision_id"].to_list()).tolist()
        a, b = (ope.feedback_from_logs(root, n_partitions=k, default_reward=0.0) for k in (1, 3))
        assert np.array_equal(a.rewards, b.rewards) and np.array_equal(a.actions, b.actions)
    kw = dict(n_partitions=3, interval="bootstrap", seed=1, n_bootstrap=200)
    ref = ope.evaluate_logs(logs, SPECS, ESTIMATORS, **kw)
    for root in (old, mixed):  # same buckets, same partitions: the same floats, the bootstrap's too
        assert ope.evaluate_logs(root, SPECS, ESTIMATORS, **kw).equals(ref)


# ---------------------------------------------------------------- TermStats / WeightStats


def _terms(rng, n, ratio):
    w = rng.exponential(size=n) * (rng.random(n) < 0.7)
    r = rng.binomial(1, 0.4, size=n).astype(float)
    if not ratio:
        return RoundTerms(base=w * r)
    return RoundTerms(base=0.3 * r, num=w * r, den=w)


def _slice(terms, s):
    return RoundTerms(terms.base[s], None if terms.num is None else terms.num[s], None if terms.den is None else terms.den[s])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 400), ratio=st.booleans(), n_cuts=st.integers(0, 6))
def test_merged_stats_equal_the_stats_of_the_concatenation(seed, n, ratio, n_cuts):
    rng = np.random.default_rng(seed)
    terms = _terms(rng, n, ratio)
    buckets = rng.integers(0, 2**32, n)
    whole = TermStats.of(terms, buckets)
    cuts = np.sort(rng.integers(0, n + 1, n_cuts))  # empty parts included
    parts = [TermStats.of(_slice(terms, s), buckets[s]) for s in np.split(np.arange(n), cuts)]
    order = rng.permutation(len(parts))  # any order, any grouping
    merged = TermStats.merge_all([parts[i] for i in order])
    tree = merge(TermStats.merge_all(parts[: len(parts) // 2 or 1]), TermStats.merge_all(parts[len(parts) // 2 or 1:])) \
        if len(parts) > 1 else parts[0]
    for m in (merged, tree):
        assert m.n == whole.n
        assert m.value == pytest.approx(whole.value, rel=1e-12, abs=1e-15) or (math.isnan(m.value) and math.isnan(whole.value))
        np.testing.assert_allclose(m.comoment, whole.comoment, rtol=1e-10, atol=1e-12 * max(1.0, abs(whole.comoment).max()))
        np.testing.assert_array_equal(m.low, whole.low)
        np.testing.assert_array_equal(m.high, whole.high)
        np.testing.assert_allclose(m.bucket_sums, whole.bucket_sums, rtol=1e-12, atol=1e-12)
    if terms.is_ratio and float(terms.den.mean()) == 0:
        return
    ref = interval_from_influence(terms, terms.influence(), "normal", 0.05, 1000, None, None, None)
    assert whole.value == ref.value
    assert whole.stderr == pytest.approx(ref.stderr, rel=1e-12, abs=1e-15)
    assert merged.stderr == pytest.approx(ref.stderr, rel=1e-11, abs=1e-15)
    got = merged.interval("normal")
    assert (got.ci_low, got.ci_high) == pytest.approx((ref.ci_low, ref.ci_high), rel=1e-11, abs=1e-14)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 300), n_cuts=st.integers(0, 5), exact=st.booleans())
def test_merged_weight_stats_give_the_diagnostics_of_the_whole(seed, n, n_cuts, exact):
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(3), size=n) * (rng.random((n, 3)) < 0.8)
    logging[:, 0] += 1e-3
    logging /= logging.sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(3, p=p) for p in logging])
    fb = ope.LoggedFeedback(actions=actions, rewards=np.ones(n), propensities=logging[np.arange(n), actions],
                            n_actions=3, logging_distribution=logging if exact else None)
    target = rng.dirichlet(np.ones(3), size=n)
    w = ope.importance_weights(fb, target)
    ref = ope.diagnose(fb, target, weights=w)
    parts = [WeightStats.of(w[s], target[s], actions[s], logging[s] if exact else None)
             for s in np.split(np.arange(n), np.sort(rng.integers(0, n + 1, n_cuts)))]
    got = WeightStats.merge_all(parts).diagnostics()
    assert (got.n, got.support_exact) == (ref.n, ref.support_exact)
    for name in ("ess", "max_weight", "mean_weight", "support_deficiency"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-10, abs=1e-14), name
    assert [x.split(":")[0] for x in got.warnings] == [x.split(":")[0] for x in ref.warnings]


def test_poisson_bucket_bootstrap_covers_the_true_value():
    """Coverage of the 90% bootstrap interval over independent replications of a synthetic problem
    with a known value: within 3 binomial standard errors of 0.90 (and not above 0.90 by more)."""
    problem = ope.SyntheticProblem(seed=4, n_actions=3, logging_beta=0.5, exploration=0.3, target_beta=2.0)
    truth = problem.true_value(n_rounds=1_000_000, seed=99)
    reps, alpha, n = 200, 0.10, 1000
    covered = {"IPS": 0, "SNIPS": 0}
    widths = []
    for rep in range(reps):
        data = problem.sample(n, seed=1000 + rep)
        buckets = stable_bucket(f"rep{rep}-{i}" for i in range(n))
        rng = np.random.default_rng(rep)
        for est in (ope.IPS(), ope.SNIPS()):
            stats = TermStats.of(est.terms(data.feedback, data.target), buckets)
            ci = stats.interval("bootstrap", alpha=alpha, n_bootstrap=300, rng=rng)
            covered[est.name] += ci.ci_low <= truth <= ci.ci_high
            widths.append(ci.ci_high - ci.ci_low)
    sd = math.sqrt(alpha * (1 - alpha) / reps)
    for name, hits in covered.items():
        assert abs(hits / reps - (1 - alpha)) <= 3 * sd, (name, hits / reps)
    assert np.median(widths) > 0


def test_bucket_sums_group_by_bucket_modulo_nb():
    terms = RoundTerms(base=np.array([1.0, 2.0, 4.0]))
    stats = TermStats.of(terms, np.array([5, 5 + NB, 7]))
    assert stats.bucket_sums[5].tolist() == [3.0, 2.0] and stats.bucket_sums[7].tolist() == [4.0, 1.0]
    assert TermStats.of(terms).bucket_sums is None
    with pytest.raises(ope.InvalidConfigError, match="bootstrap needs the per-bucket sums"):
        TermStats.of(terms).interval("bootstrap")
    with pytest.raises(ope.InvalidConfigError, match="cannot merge"):
        merge(TermStats.of(terms), TermStats.of(RoundTerms(base=np.zeros(2), num=np.ones(2), den=np.ones(2))))


def test_an_address_where_no_scheduler_answers_is_a_clear_error(logs):
    """``engine="dask:ADDRESS"`` with nothing listening there: an InvalidConfigError naming the engine
    and the address (after the 10 s connect timeout), not distributed's traceback."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ope.InvalidConfigError, match=rf"engine dask:tcp://127.0.0.1:{port}: no Dask scheduler answers"):
        ope.evaluate_logs(logs, {"u": "uniform"}, engine=f"dask:tcp://127.0.0.1:{port}")
