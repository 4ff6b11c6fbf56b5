"""The log as Delta Lake tables (issue 18, part 3): ``log_table="delta"``.

The journal stays the write-ahead log; compaction registers a segment's parts in one Delta commit
per table, carrying the transaction (banditroute-<writer>, segment), so every acknowledged row is
in the Delta tables exactly once: after a crash before, during or after a commit, with writers in
several processes committing to the same tables, and when a segment is compacted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import banditroute as br
from banditroute.cli.main import main
from banditroute.errors import ConfigError
from banditroute.logs import delta, journal
from banditroute.logs.parts import compact_segment
from banditroute.logs.scan import scan_table_checked
from banditroute.logs.rows import DECISION_SCHEMA, OUTCOME_SCHEMA, TABLES
from banditroute.logs.segments import encode_commit, live_segments, segment_path
from banditroute.logs.store import LogWriter

deltalake = pytest.importorskip("deltalake", reason="the delta extra (deltalake) is not installed")

PACKAGE_ROOT = str(Path(br.__file__).resolve().parents[1])
TS = 1_700_000_000_000_000
PROFILES = [br.Profile("small", cost_usd=0.0004, latency_ms=400), br.Profile("large", cost_usd=0.012, latency_ms=2500)]


def decision(writer: str, seq: int, day: int = 0) -> tuple:
    return (f"{writer}-{seq}", TS + day * 86_400_000_000 + seq, writer, seq, "pv", "{}", ("default",), (1.0,),
            ("small", "large"), (0.25, 0.75), "large", 0.75, "{}", None, None, 0.5, None)


def outcome(writer: str, seq: int, day: int = 0) -> tuple:
    return (f"{writer}-{seq}", TS + day * 86_400_000_000 + seq + 1, writer, seq, 1.0, 0.001, 20.0, 0.9, "applied", None)


def write_rows(w: LogWriter, seqs, day: int = 0) -> None:
    for seq in seqs:
        w.append("decisions", decision(w.writer_id, seq, day))
        w.append("outcomes", outcome(w.writer_id, seq, day))
    w.flush()


def versions(log_dir) -> dict[str, int]:
    return {t: deltalake.DeltaTable(str(Path(log_dir) / t)).version() for t in TABLES}


def cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


# -- 1. a router on a Delta log; polars, scan_table (and DuckDB) read it ---------------------------------
def test_a_router_logs_every_decision_once_to_delta_tables(tmp_path):
    logs = tmp_path / "logs"
    router = br.Router(PROFILES, task_types=["chat", "code"], log_dir=logs, log_table="delta", seed=0)
    assert router.config.log_journal  # implied: the journal is the Delta log's write-ahead log
    ids = []
    for i in range(150):
        d = router.decide({"task_type": "code" if i % 2 else "chat"})
        ids.append(d.id)
        router.record(d.id, quality=1.0, cost_usd=0.001, latency_ms=100.0)
    router.flush()
    # acknowledged, not compacted yet: scan_table reads the journal, Delta readers see nothing yet
    assert sorted(br.scan_table(logs, "decisions").collect().get_column("decision_id")) == sorted(ids)
    assert pl.scan_delta(str(logs / "decisions")).collect().height == 0
    router.close()

    for table, schema in (("decisions", DECISION_SCHEMA), ("outcomes", OUTCOME_SCHEMA)):
        got = pl.scan_delta(str(logs / table)).collect()
        assert got.height == len(ids) and sorted(got.get_column("decision_id")) == sorted(ids)
        assert got.schema == pl.Schema({**schema, "date": pl.Date})  # the stored schema, bucket too, + date
        assert got.get_column("date").equals(got.get_column("ts").dt.date().alias("date"))
        mid = got.get_column("ts").sort()[len(ids) // 2]  # the statistics of the add actions prune right
        assert pl.scan_delta(str(logs / table)).filter(pl.col("ts") >= mid).collect().height == len(ids) - len(ids) // 2
        scanned = br.scan_table(logs, table).collect()
        assert scanned.schema == pl.Schema(schema)
        assert scanned.sort("decision_id").equals(got.drop("date").sort("decision_id"))
    assert not list((logs / "_journal").glob("*.jsonl"))


def test_duckdb_reads_the_delta_table(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    w = LogWriter(tmp_path, table_format="delta")
    write_rows(w, range(20))
    w.close()
    con = duckdb.connect()
    try:
        con.execute("INSTALL delta; LOAD delta")
    except Exception as exc:  # noqa: BLE001 - the extension is downloaded on first use
        pytest.skip(f"DuckDB's delta extension is not available: {exc}")
    assert con.execute(f"SELECT count(*) FROM delta_scan('{tmp_path / 'decisions'}')").fetchone()[0] == 20


def test_the_option_from_a_routes_file_and_its_errors(tmp_path, monkeypatch):
    routes = tmp_path / "routes.toml"
    routes.write_text('[router]\nlog_table = "delta"\n[[profiles]]\nname = "a"\n[[profiles]]\nname = "b"\n')
    router = br.Router.from_config(routes, log_dir=tmp_path / "logs")
    assert router.config.log_table == "delta" and router.log_writer.table_format == "delta"
    router.close()
    assert delta.is_delta_log(tmp_path / "logs")
    with pytest.raises(ConfigError, match="log_table") as err:  # plain parts would be invisible to Delta readers
        br.Router(PROFILES, log_dir=tmp_path / "logs")
    assert err.value.field == "log_table" and err.value.value == "parquet"
    assert LogWriter(tmp_path / "logs").table_format == "delta"  # a writer without a choice follows the directory
    with pytest.raises(ConfigError, match="must be 'parquet' or 'delta'"):
        br.Router(PROFILES, log_table="iceberg")
    monkeypatch.setitem(sys.modules, "deltalake", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as err:
        br.Router(PROFILES, log_dir=tmp_path / "other", log_table="delta")
    assert str(err.value) == "log_table needs the delta extra: pip install 'banditroute[delta]', got 'delta'"
    with pytest.raises(ConfigError, match="routes.toml: router.log_table needs the delta extra"):
        br.Router.from_config(routes, log_dir=tmp_path / "other")


# -- 2. writers in four processes, three of them killed around their commits ---------------------------------
WRITER = """
import os, random, signal, sys, threading
import deltalake
from banditroute.logs.store import LogWriter
log_dir, ack_path, mode, n_flushes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TS = 1_700_000_000_000_000
original = deltalake.DeltaTable.create_write_transaction
calls = [-1000]  # armed once the writer is open (opening it may recover a killed writer's segments)

def commit(self, *args, **kwargs):  # compaction's commit, with a SIGKILL before, during or after it
    calls[0] += 1
    kill = calls[0] >= 5
    if kill and mode == "before":  # the segment's parts are written, not committed
        os.kill(os.getpid(), signal.SIGKILL)
    if kill and mode == "during":
        threading.Timer(random.uniform(0, 0.03), os.kill, (os.getpid(), signal.SIGKILL)).start()
    out = original(self, *args, **kwargs)
    if kill and mode == "after":  # committed (one table of the segment), the segment not deleted
        os.kill(os.getpid(), signal.SIGKILL)
    return out

deltalake.DeltaTable.create_write_transaction = commit
w = LogWriter(log_dir, table_format="delta", auto_flush=False, journal_segment_rows=30, journal_segment_s=3600)
calls[0] = 0
ack = open(ack_path, "w")
ack.write(w.writer_id + "\\n")
ack.flush()
seq = 0
for _ in range(n_flushes):
    for _ in range(10):
        w.append("decisions", (f"{w.writer_id}-{seq}", TS + seq, w.writer_id, seq, "pv", "{}", ("default",), (1.0,),
                               ("a", "b"), (0.5, 0.5), "a", 0.5, "{}", None, None, None, None))
        w.append("outcomes", (f"{w.writer_id}-{seq}", TS + seq, w.writer_id, seq, 1.0, 0.0, 1.0, 1.0, "applied", None))
        seq += 1
    w.flush()
    ack.write(f"{seq}\\n")  # acknowledged: every row below seq
    ack.flush()
w.close()
"""


def test_four_writer_processes_killed_around_their_commits_lose_and_repeat_nothing(tmp_path):
    logs = tmp_path / "logs"
    LogWriter(logs, table_format="delta").close()  # the tables exist before the writers race
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    modes = ("clean", "before", "during", "after")
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(logs), str(tmp_path / f"ack-{m}"), m, "40"],
                                 env=env, stderr=subprocess.PIPE, text=True) for m in modes]
    for mode, child in zip(modes, children):
        _, err = child.communicate(timeout=120)
        assert child.returncode == (0 if mode == "clean" else -9), (mode, err)
    acked = {}
    for m in modes:
        lines = (tmp_path / f"ack-{m}").read_text().split()
        acked[lines[0]] = int(lines[-1]) if len(lines) > 1 else 0
    assert acked[max(acked, key=acked.get)] == 400 and all(n > 0 for n in acked.values())
    assert live_segments(logs)  # the killed writers left segments behind
    # optimize first: a segment committed before its writer died is in rewritten files now, so
    # registering its parts again (without the transaction check) would show its rows twice
    delta.optimize(logs)
    assert cli("compact", "--log-dir", str(logs))[0] == 0  # the recovery
    assert not live_segments(logs)
    for table in ("decisions", "outcomes"):
        got = pl.scan_delta(str(logs / table)).select("writer", "seq").collect()
        assert got.height == got.unique().height, f"{table}: a row twice"
        for writer, n in acked.items():
            seqs = set(got.filter(pl.col("writer") == writer).get_column("seq").to_list())
            assert set(range(n)) <= seqs, f"{table}: acknowledged rows of {writer} lost"
            assert seqs <= set(range(400))
        assert br.scan_table(logs, table).select("writer", "seq").collect().sort("writer", "seq").equals(
            got.sort("writer", "seq"))


# -- 3. a segment compacted again adds nothing; one that failed before its commit is registered once ----------
def test_a_compaction_repeated_for_the_same_segment_adds_nothing(tmp_path):
    w = LogWriter(tmp_path, table_format="delta", auto_flush=False, journal_segment_s=3600)
    write_rows(w, range(30))
    write_rows(w, range(30, 40), day=1)  # a segment over two dates: two parts per table, one commit
    ((writer, number, path),) = live_segments(tmp_path)
    before = versions(tmp_path)
    compact_segment(tmp_path, writer, number, path)  # committed ... and the process "dies" before deleting it
    once = versions(tmp_path)
    assert once["decisions"] == before["decisions"] + 1 and once["outcomes"] == before["outcomes"] + 1
    compact_segment(tmp_path, writer, number, path)  # the next compaction: the txn version says it is in
    assert versions(tmp_path) == once
    assert br.scan_table(tmp_path, "outcomes").collect().height == 40  # the segment is not read twice either
    w.close()  # compacts the same segment a third time
    assert versions(tmp_path) == once
    for table in ("decisions", "outcomes"):
        got = pl.scan_delta(str(tmp_path / table)).collect()
        assert sorted(got.get_column("seq")) == list(range(40))
        assert deltalake.DeltaTable(str(tmp_path / table)).transaction_version(f"banditroute-{writer}") == number
        assert len(deltalake.DeltaTable(str(tmp_path / table)).file_uris()) == 2


def test_a_compaction_that_fails_before_its_commit_is_registered_once_later(tmp_path, monkeypatch):
    original = deltalake.DeltaTable.create_write_transaction
    failing = [True]

    def commit(self, *args, **kwargs):
        if failing[0]:
            raise deltalake.exceptions.CommitFailedError("disk gone")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(deltalake.DeltaTable, "create_write_transaction", commit)
    w = LogWriter(tmp_path, table_format="delta", auto_flush=False, journal_segment_s=3600)
    write_rows(w, range(25))
    ((writer, number, path),) = live_segments(tmp_path)
    with pytest.raises(br.LogError, match="Delta commit"):
        compact_segment(tmp_path, writer, number, path)
    # the parts are written and unreferenced: Delta readers do not see them, scan_table reads the segment
    assert (tmp_path / "decisions" / "date=2023-11-14" / f"part-{writer}-j{number:08d}.parquet").exists()
    assert pl.scan_delta(str(tmp_path / "decisions")).collect().height == 0
    assert br.scan_table(tmp_path, "decisions").collect().height == 25
    failing[0] = False
    w.close()  # the retry registers the parts left behind and commits the rest
    for table in ("decisions", "outcomes"):
        assert sorted(pl.scan_delta(str(tmp_path / table)).collect().get_column("seq")) == list(range(25))


def test_a_segment_that_failed_holds_back_the_later_ones(tmp_path):
    """A Delta log counts a writer's segments as committed up to a number: they compact in order."""
    done, failing = [], [True]

    def compact(writer, number, path):
        if number == 0 and failing[0]:
            failing[0] = False
            raise OSError("No space left on device")
        done.append(number)

    j = journal.Journal(tmp_path, "w1", compact, segment_rows=1, segment_s=3600)
    for i in range(3):
        j.append({"outcomes": [[f"d{i}"]]}, 1)  # a segment each
    j.close()
    assert done == [0, 1, 2]


def test_recovery_leaves_the_later_segments_to_the_process_holding_an_earlier_one(tmp_path):
    root = journal.journal_dir(tmp_path)
    root.mkdir(parents=True)
    for n in (0, 1):
        segment_path(root, "w1", n).write_bytes(encode_commit({"outcomes": [[f"d{n}"]]}))
    held = os.open(segment_path(root, "w1", 0), os.O_RDONLY)  # another process recovering segment 0
    fcntl.flock(held, fcntl.LOCK_EX)
    done = []
    assert journal.recover(tmp_path, lambda writer, number, path: done.append(number)) == 0 and done == []
    os.close(held)
    assert journal.recover(tmp_path, lambda writer, number, path: done.append(number)) == 2 and done == [0, 1]


def test_a_writer_id_used_again_starts_above_its_committed_segments(tmp_path):
    for start in (0, 10):
        w = LogWriter(tmp_path, table_format="delta", writer_id="w1")
        write_rows(w, range(start, start + 10))
        w.close()
    assert sorted(pl.scan_delta(str(tmp_path / "outcomes")).collect().get_column("seq")) == list(range(20))


def test_a_plain_log_becomes_a_delta_log_with_its_history(tmp_path):
    plain = LogWriter(tmp_path, journal=True, writer_id="w1")
    write_rows(plain, range(12))
    plain.close()
    w = LogWriter(tmp_path, table_format="delta", writer_id="w1")  # its segment 0 is a registered plain part
    write_rows(w, range(12, 17))
    w.close()
    got = pl.scan_delta(str(tmp_path / "decisions")).collect()
    assert sorted(got.get_column("seq")) == list(range(17))
    assert br.scan_table(tmp_path, "decisions").collect().height == 17


# -- 4. doctor and compact: versions, optimize, vacuum -------------------------------------------------------
def test_doctor_and_compact_optimize_and_vacuum_a_delta_log(tmp_path):
    for i in range(3):
        w = LogWriter(tmp_path, table_format="delta", auto_flush=False, journal_segment_rows=20,
                      journal_segment_s=3600)
        for k in range(4):
            write_rows(w, range(k * 10, k * 10 + 10))
        w.close()
    rows = {t: br.scan_table(tmp_path, t).collect().sort("writer", "seq") for t in ("decisions", "outcomes")}
    part = sorted((tmp_path / "decisions").glob("date=*/part-*.parquet"))[0]
    orphan = part.with_name("part-deadbeef-j00000000.parquet")  # a compaction that died before its commit
    orphan.write_bytes(part.read_bytes())

    code, out = cli("doctor", "--log-dir", str(tmp_path), "--json")
    assert code == 0
    report = {t["table"]: t for t in json.loads(out)["delta"]}
    assert report["decisions"]["files"] >= 6 and report["decisions"]["rows"] == 120
    assert report["decisions"]["unreferenced"] == [orphan.relative_to(tmp_path / "decisions").as_posix()]
    code, out = cli("doctor", "--log-dir", str(tmp_path))
    assert code == 0 and "Delta tables:" in out and "1 unreferenced file(s)" in out

    alive = LogWriter(tmp_path)  # a running writer: vacuuming with no retention is refused
    assert cli("compact", "--log-dir", str(tmp_path), "--vacuum-hours", "0")[0] == 2
    alive.close()
    code, out = cli("compact", "--log-dir", str(tmp_path), "--optimize")
    assert code == 0 and "optimized decisions" in out
    after = {t["table"]: t for t in delta.table_report(tmp_path)}
    assert after["decisions"]["files"] == 1 < report["decisions"]["files"]  # one date: one file
    assert len(after["decisions"]["unreferenced"]) == report["decisions"]["files"] + 1
    code, out = cli("compact", "--log-dir", str(tmp_path), "--vacuum-hours", "0")
    assert code == 0 and "vacuumed decisions" in out
    after = {t["table"]: t for t in delta.table_report(tmp_path)}
    assert all(not t["unreferenced"] for t in after.values()) and not orphan.exists()
    for t, frame in rows.items():
        assert br.scan_table(tmp_path, t).collect().sort("writer", "seq").equals(frame)
        assert pl.scan_delta(str(tmp_path / t)).collect().drop("date").sort("writer", "seq").equals(frame)
    assert cli("doctor", "--log-dir", str(tmp_path))[0] == 0


def test_optimize_and_vacuum_need_a_delta_log(tmp_path):
    LogWriter(tmp_path).close()
    assert cli("compact", "--log-dir", str(tmp_path), "--optimize")[0] == 2
    assert cli("compact", "--log-dir", str(tmp_path), "--vacuum-hours", "1")[0] == 2


def test_a_damaged_part_moved_aside_leaves_its_delta_table(tmp_path):
    for _ in range(2):
        w = LogWriter(tmp_path, table_format="delta")
        write_rows(w, range(10))
        w.close()
    damaged, kept = sorted((tmp_path / "outcomes").glob("date=*/part-*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short
    scan = scan_table_checked(tmp_path, "outcomes", on_corrupt="quarantine")
    assert scan.frame.collect().height == 10 and scan.n_skipped == 1 and not damaged.exists()
    assert pl.scan_delta(str(tmp_path / "outcomes")).collect().height == 10  # Delta readers no longer look for it
    assert deltalake.DeltaTable(str(tmp_path / "outcomes")).file_uris() == [str(kept)]
    damaged, _ = sorted((tmp_path / "decisions").glob("date=*/part-*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert cli("doctor", "--log-dir", str(tmp_path), "--quarantine")[0] == 1  # found damaged, moved aside
    assert pl.scan_delta(str(tmp_path / "decisions")).collect().height == 10
    assert cli("doctor", "--log-dir", str(tmp_path))[0] == 0
    (part,) = sorted((tmp_path / "outcomes").glob("date=*/part-*.parquet"))
    part.rename(tmp_path / "elsewhere.parquet")  # referenced by the table, gone from its directory
    code, out = cli("doctor", "--log-dir", str(tmp_path), "--json")
    assert code == 1 and json.loads(out)["missing"] == [f"outcomes/{part.relative_to(tmp_path / 'outcomes').as_posix()}"]
    assert cli("doctor", "--log-dir", str(tmp_path), "--quarantine")[0] == 1  # removed from the table
    assert cli("doctor", "--log-dir", str(tmp_path))[0] == 0
    assert pl.scan_delta(str(tmp_path / "outcomes")).collect().height == 0


def test_the_service_logs_to_the_delta_tables_its_routes_file_asks_for(tmp_path):
    for module in ("uvicorn", "starlette", "httpx2"):
        pytest.importorskip(module, reason=f"the in-process service test needs {module}")
    from starlette.testclient import TestClient

    from banditroute.service.app import ServiceConfig, create_app

    routes = tmp_path / "routes.toml"
    routes.write_text('[router]\nlog_table = "delta"\nseed = 0\n[[profiles]]\nname = "a"\n[[profiles]]\nname = "b"\n')
    auth = {"Authorization": "Bearer test-token-123"}
    app = create_app(ServiceConfig(config=str(routes), log_dir=str(tmp_path / "logs"), token="test-token-123"))
    ids = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(20):
            d = client.post("/v1/decide", json={"context": {"n": 1}}, headers=auth).json()
            ids.append(d["id"])
            assert client.post("/v1/outcome", json={"decision_id": d["id"], "quality": 1.0},
                               headers=auth).json()["status"] == "applied"
        assert sorted(br.scan_table(tmp_path / "logs", "decisions").collect().get_column("decision_id")) == sorted(ids)
    for table in ("decisions", "outcomes"):  # compacted at shutdown, by the compactor process
        assert sorted(pl.scan_delta(str(tmp_path / "logs" / table)).collect().get_column("decision_id")) == sorted(ids)


def test_ope_reads_the_committed_files_of_a_delta_log_once(tmp_path):
    """After ``compact --optimize`` the replaced parts stay on disk until a vacuum: ope (and its
    distributed reader) takes the files of the current Delta version, so each round counts once."""
    import ope
    from ope.distributed import evaluate_logs

    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["x"], log_dir=tmp_path, log_table="delta",
                       seed=0)
    for batch in range(3):  # three closes: three segments, three parts per table
        for i in range(100):
            router.record(router.decide({"task_type": "x"}).id, quality=float(i % 2))
        router.close()
        router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["x"], log_dir=tmp_path,
                           log_table="delta", seed=batch + 1)
    router.close()
    code, _ = cli("compact", "--log-dir", str(tmp_path), "--optimize")
    assert code == 0
    on_disk = list((tmp_path / "decisions").glob("**/*.parquet"))
    committed = ope.log_join.LogSnapshot.take(tmp_path).decisions
    assert len(on_disk) > len(committed)  # the replaced parts are still there
    assert ope.feedback_from_logs(tmp_path).n_rounds == 300
    assert evaluate_logs(tmp_path, {"u": "uniform"}).get_column("n").to_list() == [300, 300]
