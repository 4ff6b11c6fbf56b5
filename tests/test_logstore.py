"""The decision log: schema, partitions, several writers, durability under SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

import banditroute as br
from banditroute.logs.store import DECISION_SCHEMA, OUTCOME_SCHEMA


def test_schema_and_layout(profiles, tmp_path):
    router = br.Router(profiles, task_types=["chat", "code"], log_dir=tmp_path, seed=0)
    decisions = [router.decide({"task_type": "code", "tenant": "acme"}) for _ in range(5)]
    router.record(decisions[0].id, quality=1.0, cost_usd=0.01, latency_ms=700)
    router.record(decisions[1].id, quality=0.0)
    router.flush()
    parts = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    writer = decisions[0].id.rsplit("-", 1)[0]
    assert all(p.split("/")[0] in ("decisions", "outcomes") for p in parts)
    assert all(p.split("/")[1].startswith("date=20") and f"/part-{writer}-" in p for p in parts)
    dec = br.scan_table(tmp_path, "decisions").collect()
    out = br.scan_table(tmp_path, "outcomes").collect()
    assert dec.schema == pl.Schema(DECISION_SCHEMA) and out.schema == pl.Schema(OUTCOME_SCHEMA)
    assert dec["decision_id"].to_list() == [d.id for d in decisions]
    row = dec.row(0, named=True)
    assert row["task_types"] == ["chat", "code"] and row["task_probs"] == [0.0, 1.0]
    assert row["profiles"] == router.profiles and sum(row["probabilities"]) == pytest.approx(1.0)
    assert json.loads(row["context"]) == {"task_type": "code", "tenant": "acme"}
    assert json.loads(row["excluded"]) == {} and row["schema_version"] == 4 and row["shadow"] is None
    assert row["ts"].tzinfo is not None
    first = out.row(0, named=True)
    assert (first["quality"], first["cost_usd"], first["latency_ms"], first["status"]) == (1.0, 0.01, 700.0, "applied")
    assert first["reward"] == router.objective.reward(quality=1.0, cost_usd=0.01, latency_ms=700.0)
    assert out.row(1, named=True)["cost_usd"] is None  # missing values stay missing


def test_several_writers_side_by_side(profiles, tmp_path):
    routers = [br.Router(profiles, log_dir=tmp_path, seed=s) for s in range(3)]
    ids = [r.decide({}).id for r in routers for _ in range(10)]
    for r in routers:
        r.flush()
    dec = br.scan_table(tmp_path, "decisions").collect()
    assert sorted(dec["decision_id"].to_list()) == sorted(ids) and len(set(ids)) == 30
    assert dec["writer"].n_unique() == 3


def test_group_mode_writes_on_threshold_and_flush(profiles, tmp_path):
    router = br.Router(profiles, log_dir=tmp_path, seed=0)
    router.log_writer.group_rows = 100
    router.decide_batch([{}] * 250)
    assert br.scan_table(tmp_path, "decisions").collect().height == 250  # batch pushed past the threshold
    router.decide({})
    assert br.scan_table(tmp_path, "decisions").collect().height == 250  # buffered, not acknowledged yet
    router.flush()
    assert br.scan_table(tmp_path, "decisions").collect().height == 251


def test_list_columns_with_a_growing_profile_set(profiles, tmp_path):
    router = br.Router(profiles, log_dir=tmp_path, seed=0)
    router.decide({})
    router.add_profile(br.Profile("new"))
    router.decide({})
    router.flush()
    widths = br.scan_table(tmp_path, "decisions").select(pl.col("profiles").list.len()).collect().to_series()
    assert widths.to_list() == [3, 4]


def test_empty_log_scans_to_an_empty_frame(tmp_path):
    assert br.scan_table(tmp_path, "outcomes").collect().height == 0
    with pytest.raises(br.ConfigError, match=r"table must be 'decisions', 'outcomes' or 'events', got 'x'"):
        br.scan_table(tmp_path, "x")


def test_unwritable_log_dir(profiles, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(br.LogError, match=r"log_dir cannot be created .*got '.*file/logs'"):
        br.Router(profiles, log_dir=blocker / "logs")


CHILD = textwrap.dedent("""
    import sys, banditroute as br
    log_dir, mode, journal = sys.argv[1], sys.argv[2], sys.argv[3] == "journal"
    router = br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c")], task_types=["x", "y"],
                       log_dir=log_dir, durability=mode, log_journal=journal, seed=0)
    if journal:
        router.log_writer._journal.segment_rows = 500  # compactions happen during the run, and get killed too
    i = 0
    while True:
        batch = []
        for _ in range(1 if mode == "sync" else 97):
            d = router.decide({"task_type": "xy"[i % 2], "i": i})
            router.record(d.id, quality=float(i % 3 == 0))
            batch.append(d.id)
            i += 1
        if mode == "group":
            router.flush()  # acknowledgement point of group commit
        sys.stdout.write("".join(f"ACK {d}\\n" for d in batch))
        sys.stdout.flush()
""")


@pytest.mark.parametrize("mode, journal", [("sync", "parquet"), ("group", "parquet"), ("sync", "journal"),
                                           ("group", "journal")])
def test_sigkill_loses_nothing_acknowledged(tmp_path, mode, journal):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, str(script), str(log_dir), mode, journal], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    acked = []
    deadline = time.monotonic() + 60
    while len(acked) < (300 if mode == "sync" else 3000) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, without any chance to clean up
    rest, err = proc.communicate(timeout=30)
    acked += [line.split()[1] for line in rest.splitlines() if line.startswith("ACK ")]
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 100, err
    decisions = br.scan_table(log_dir, "decisions").collect()  # every visible part is readable
    outcomes = br.scan_table(log_dir, "outcomes").collect()
    assert set(acked) <= set(decisions["decision_id"].to_list())
    assert set(acked) <= set(outcomes["decision_id"].to_list())
    assert decisions["decision_id"].is_unique().all() and outcomes["decision_id"].is_unique().all()
    if journal == "journal":  # the next writer compacts what the killed one left: same rows, in Parquet
        br.LogWriter(log_dir).close()
        assert not list((log_dir / "_journal").glob("*.jsonl"))
        again = br.scan_table(log_dir, "decisions").collect()
        assert sorted(again["decision_id"]) == sorted(decisions["decision_id"])
    # a replayed router learns exactly the acknowledged outcomes (and any written after them)
    fresh = br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c")], task_types=["x", "y"])
    assert fresh.replay(log_dir) >= len(acked)
