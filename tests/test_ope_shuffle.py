"""The bucket shuffle of ope.evaluate_logs (ope/shuffle.py): each partition read from its shuffled files
gives the rounds of the filtered scan of the original files, in the same order, so the tables equal the
unshuffled and in-memory ones; other partition counts still scan; the scratch never outlives the call."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import banditroute as br
import ope
import ope.cli
import ope.distributed
import ope.log_columns
import ope.shuffle
from conftest import TASKS
from ope.log_columns import plan_reading, read_partition
from ope.shuffle import map_groups, shuffled_plan
from test_ope_distributed import (ESTIMATORS, PROFILES, SPECS, _assert_same_table, _in_memory, _write_logs,
                                  old_and_mixed_copies)

distributed = pytest.importorskip("distributed")

JOINS = {
    "default": {},
    "last-window-default": {"duplicates": "last", "wait_window": dt.timedelta(hours=1), "default_reward": 0.0},
    "mean-all": {"duplicates": "mean", "escalations": "all"},
    "first-all-window": {"escalations": "all", "wait_window": dt.timedelta(minutes=30)},
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return _write_logs(tmp_path_factory.mktemp("logs"))


@pytest.fixture
def sources(monkeypatch):
    """The roots each read_partition joined (a shuffled partition's root is in the scratch)."""
    seen = []
    original = ope.log_columns.partition_source

    def spy(*args):
        source = original(*args)
        seen.append(source.root)
        return source

    monkeypatch.setattr(ope.log_columns, "partition_source", spy)
    return seen


def _same_columns(got, ref):
    for name in ("actions", "rewards", "propensities", "logging_distribution", "buckets"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    for name in ("contexts", "cohorts", "metrics"):
        a, b = getattr(got, name), getattr(ref, name)
        assert (a is None and b is None) or a.equals(b), name
    assert (got.n_escalated, got.n_escalated_without_outcome) == (ref.n_escalated, ref.n_escalated_without_outcome)


@pytest.mark.parametrize("join", list(JOINS.values()), ids=list(JOINS))
def test_each_shuffled_partition_is_the_scanned_partition_in_the_same_order(logs, join, sources):
    plan = plan_reading(logs, contexts=True, cohorts=("tenant", "task_type", "profile"), metrics=True, **join)
    with shuffled_plan(plan, 3, shuffle=True, rows_per_map=300) as shuffled:  # several map tasks per table
        scratch = shuffled.shuffled[0]
        assert sorted(p.name for p in Path(scratch).iterdir()) == ["p00000", "p00001", "p00002"]
        assert len(list(Path(scratch).glob("p00000/decisions/*.parquet"))) == 3  # one per writer
        for i in range(3):
            _same_columns(read_partition(shuffled, i, 3), read_partition(plan, i, 3))
    assert sources[0::2] == [str(Path(scratch) / f"p{i:05d}") for i in range(3)]  # the shuffled reads read it
    assert sources[1::2] == [str(logs)] * 3
    assert not Path(scratch).exists()


def test_another_partition_count_scans_or_reads_the_multiple(logs, sources):
    plan = plan_reading(logs)
    with shuffled_plan(plan, 3, shuffle=True) as shuffled:
        for index, count in ((0, 7), (4, 5), (5, 6), (0, 1)):
            _same_columns(read_partition(shuffled, index, count), read_partition(plan, index, count))
    scratch = shuffled.shuffled[0]
    assert sources[0::2] == [str(logs), str(logs), str(Path(scratch) / "p00002"), str(logs)]  # 6 = 2 x 3: its files


@pytest.mark.parametrize("join", list(JOINS.values()), ids=list(JOINS))
def test_shuffled_local_table_is_the_unshuffled_and_in_memory_table(logs, join, sources, tmp_path):
    ref = _in_memory(logs, **join)
    for partitions in (2, 5):
        shuffled = ope.evaluate_logs(logs, SPECS, ESTIMATORS, n_partitions=partitions, shuffle=True, shuffle_dir=tmp_path,
                                     **join)
        assert any(str(tmp_path) in s for s in sources) and len(sources) == partitions
        sources.clear()
        _assert_same_table(shuffled, ref)
        _assert_same_table(ope.evaluate_logs(logs, SPECS, ESTIMATORS, n_partitions=partitions, shuffle=False, **join), ref)
        assert sources == [str(logs)] * partitions
        sources.clear()
    assert list(tmp_path.iterdir()) == []


def test_on_a_dask_cluster_the_shuffle_gives_the_in_memory_table_and_leaves_no_scratch(logs, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # engine "dask": the default scratch is made here
    made, mkdtemp = [], tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(mkdtemp(**kw)) or made[-1])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        for name in ("default", "last-window-default"):
            join = JOINS[name]
            ref = _in_memory(logs, **join)
            _assert_same_table(ope.evaluate_logs(logs, SPECS, ESTIMATORS, engine=client, n_partitions=4,
                                                 shuffle=True, shuffle_dir=tmp_path, **join), ref)
        result = ope.distributed.run_log_evaluation(logs, SPECS, ESTIMATORS, engine=client, n_partitions=4, shuffle=True,
                                                    shuffle_dir=tmp_path, interval="bootstrap", seed=1, n_bootstrap=200)
        unshuffled = ope.distributed.run_log_evaluation(logs, SPECS, ESTIMATORS, engine="local", n_partitions=4,
                                                        shuffle=False, interval="bootstrap", seed=1, n_bootstrap=200)
        assert result.table.equals(unshuffled.table)  # the same buckets in the same partitions: the same floats
        assert list(tmp_path.glob("ope-shuffle-*")) == []
    ref = _in_memory(logs, **JOINS["mean-all"])
    _assert_same_table(ope.evaluate_logs(logs, SPECS, ESTIMATORS, engine="dask", n_partitions=4, shuffle=True,
                                         **JOINS["mean-all"]), ref)
    assert list(tmp_path.glob("ope-shuffle-*")) == []  # (dask keeps its own dask-scratch-space there)
    scratches = [m for m in made if Path(m).name.startswith("ope-shuffle-")]
    assert len(scratches) == 4 and all(Path(m).parent == tmp_path for m in scratches)  # every call shuffled


def test_partitions_without_decisions_read_as_empty(tmp_path, sources):
    router = br.Router(PROFILES, task_types=TASKS, log_dir=tmp_path / "logs", seed=0, exploration=0.3)
    for i in range(6):
        router.record(router.decide({"task_type": TASKS[i % 3]}).id, quality=1.0)
    router.close()
    plan = plan_reading(tmp_path / "logs")
    with shuffled_plan(plan, 16, shuffle=True) as shuffled:
        parts = [read_partition(shuffled, i, 16) for i in range(16)]
        assert sum(p.actions.shape[0] == 0 for p in parts) >= 10
        for i, part in enumerate(parts):
            _same_columns(part, read_partition(plan, i, 16))
    assert sources[:16] == [str(Path(shuffled.shuffled[0]) / f"p{i:05d}") for i in range(16)]
    _assert_same_table(ope.evaluate_logs(tmp_path / "logs", SPECS, ESTIMATORS, n_partitions=16), _in_memory(tmp_path / "logs"))


def test_old_and_mixed_logs_without_bucket_shuffle_alike(logs, tmp_path):
    old, mixed = old_and_mixed_copies(logs, tmp_path)
    ref = _in_memory(logs)
    for root in (old, mixed):
        _assert_same_table(ope.evaluate_logs(root, SPECS, ESTIMATORS, n_partitions=3, shuffle=True), ref)
        plan = plan_reading(root, contexts=True)
        with shuffled_plan(plan, 3, shuffle=True) as shuffled:
            written = pl.read_parquet(sorted(Path(shuffled.shuffled[0]).glob("p00001/decisions/*.parquet")))
            assert written["bucket"].null_count() == 0 and (written["bucket"] % 3 == 1).all()
            for i in range(3):
                _same_columns(read_partition(shuffled, i, 3), read_partition(plan, i, 3))


def test_a_delta_table_log_is_shuffled_from_its_committed_files(tmp_path):
    pytest.importorskip("deltalake", reason="the delta extra (deltalake) is not installed")
    root = tmp_path / "logs"
    for w in range(2):
        router = br.Router(PROFILES, task_types=TASKS, log_dir=root, log_table="delta", seed=w, exploration=0.3)
        for i in range(400):
            d = router.decide({"task_type": TASKS[i % 3]})
            if i % 7:
                router.record(d.id, quality=float(i % 3 == 0))
        router.close()
    assert (root / "decisions" / "_delta_log").is_dir()
    ref = _in_memory(root)
    _assert_same_table(ope.evaluate_logs(root, SPECS, ESTIMATORS, n_partitions=3, shuffle=True, shuffle_dir=tmp_path), ref)
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_the_scratch_is_deleted_when_a_map_or_a_partition_task_fails(logs, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    damaged = tmp_path / "damaged"
    shutil.copytree(logs, damaged)
    outcome = sorted((damaged / "outcomes").glob("**/*.parquet"))[-1]
    outcome.write_bytes(outcome.read_bytes()[: outcome.stat().st_size // 2])  # the plan reads no outcome file
    with pytest.raises(ope.CorruptLogError, match=f"outcomes file {outcome} cannot be read"):
        ope.evaluate_logs(damaged, SPECS, ESTIMATORS, n_partitions=3, shuffle=True, shuffle_dir=scratch)
    assert list(scratch.iterdir()) == []

    original = ope.distributed.read_partition

    def failing(plan, index, count):
        assert plan.shuffled is not None and plan.shuffled[0].startswith(str(scratch))
        if index == 2:
            raise ope.InvalidFeedbackError("rewards", "reward is null at round 3")
        return original(plan, index, count)

    monkeypatch.setattr(ope.distributed, "read_partition", failing)
    with pytest.raises(ope.InvalidFeedbackError, match="reward is null at round 3"):
        ope.evaluate_logs(logs, SPECS, ESTIMATORS, n_partitions=4, shuffle=True, shuffle_dir=scratch)
    assert list(scratch.iterdir()) == []


def test_shuffle_options_and_when_the_logs_are_not_shuffled(logs, tmp_path, sources):
    with pytest.raises(ope.InvalidConfigError, match="shuffle must be True, False or None, got 'yes'"):
        ope.evaluate_logs(logs, SPECS, n_partitions=2, shuffle="yes")
    with pytest.raises(ope.InvalidConfigError, match="shuffle_dir must be an existing directory, got '/nonexistent/x'"):
        ope.evaluate_logs(logs, SPECS, n_partitions=2, shuffle_dir="/nonexistent/x")
    with pytest.raises(ope.InvalidConfigError, match="shuffle=True on a Dask address or Client needs shuffle_dir"):
        ope.evaluate_logs(logs, SPECS, engine="dask:tcp://127.0.0.1:1", shuffle=True)
    plan = plan_reading(logs)
    with shuffled_plan(plan, 4, remote=True) as remote, shuffled_plan(plan, 1, shuffle=True) as single, \
            shuffled_plan(replace(plan, snapshot=replace(plan.snapshot, on_corrupt="skip")), 4) as skipping, \
            shuffled_plan(plan, ope.shuffle.MIN_PARTITIONS - 1) as few:
        assert all(p.shuffled is None for p in (remote, single, skipping, few))
    ope.evaluate_logs(logs, SPECS, n_partitions=ope.shuffle.MIN_PARTITIONS, shuffle_dir=tmp_path)
    assert all(str(tmp_path) in s for s in sources)  # auto: shuffled from MIN_PARTITIONS on


def test_map_groups_are_contiguous_and_bounded(logs):
    plan = plan_reading(logs)
    files = plan.snapshot.decisions
    per_row = sum(Path(f).stat().st_size for f in files) / plan.n_decisions
    for rows in (1, 500, 10**9):
        groups = map_groups(plan.snapshot, plan.n_decisions, rows)
        for kind in ("decisions", "outcomes"):
            mine = [g for g in groups if g.kind == kind]
            assert [g.number for g in mine] == list(range(len(mine)))
            assert tuple(f for g in mine for f in g.files) == getattr(plan.snapshot, kind)  # every file once, in order
        for g in groups:
            size = sum(Path(f).stat().st_size for f in g.files)
            assert len(g.files) == 1 or size <= rows * per_row * (1 + 1e-12)
        if rows == 10**9:
            assert len(groups) == 2


def test_cli_shuffle_dir_prints_the_same_table(logs, tmp_path, capsys, sources):
    argv = [str(logs), "--policy", "u=uniform", "--policy", "big=always:large", "--engine", "local", "--partitions",
            str(ope.shuffle.MIN_PARTITIONS)]
    assert ope.cli.main(argv + ["--shuffle-dir", str(tmp_path)]) == 0
    shuffled = capsys.readouterr().out
    assert len(sources) == ope.shuffle.MIN_PARTITIONS and all(s.startswith(str(tmp_path)) for s in sources)
    assert ope.cli.main(argv) == 0
    assert capsys.readouterr().out == shuffled
    assert list(tmp_path.iterdir()) == []
    assert ope.cli.main([str(logs), "--shuffle-dir", str(tmp_path)]) == 2
    assert f"error: --shuffle-dir {tmp_path} needs --engine" in capsys.readouterr().err
    assert "--shuffle-dir DIR" in ope.cli.build_parser().format_help()
