"""Damaged log files are contained (issue 13, item 4).

Real logs (``Router(..., log_dir=...)``, journals left behind by a killed process), real damage
(a part truncated, bytes overwritten in the middle of a part, an unreadable line between
readable ones in a segment). Readers name the file or skip it with a count; a writer opening
the directory and a restart (``Router.resume``, the service) quarantine it and go on;
``banditroute doctor`` finds every damaged file.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import banditroute as br
import ope
from banditroute.logs.journal import part_name
from banditroute.logs.quarantine import part_problem, quarantined_files
from banditroute.logs.replay import applied_outcomes
from banditroute.logs.rows import TABLES
from banditroute.logs.scan import scan_table_checked
from banditroute.logs.segments import encode_commit
from banditroute.logs.store import LogWriter, write_parts
from ope.errors import CorruptLogError
from ope.log_columns import read_log_columns
from ope.log_join import LogSnapshot

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [br.Profile("a"), br.Profile("b")]
WRITE_AND_DIE = """
import os, sys
import banditroute as br
router = br.Router([br.Profile(n) for n in sys.argv[3].split(",")], task_types=sys.argv[4].split(","),
                   log_dir=sys.argv[1], log_journal=True, seed=0)
tasks = sys.argv[4].split(",")
for i in range(int(sys.argv[2])):  # one journal line per flush
    for d in router.decide_batch([{"task_type": tasks[i % len(tasks)]}] * 10):
        router.record(d.id, quality=1.0)
    router.flush()
print(router.writer_id, flush=True)
os._exit(0)  # no close: the segment stays behind, its writer gone
"""


def _log(log_dir, n_batches=4, seed=0) -> None:
    """A log of parts: one decisions part and one outcomes part per batch of 25."""
    router = br.Router(PROFILES, log_dir=log_dir, seed=seed)
    for _ in range(n_batches):
        for d in router.decide_batch([{}] * 25):
            router.record(d.id, quality=1.0)
        router.flush()
    router.close()


def _parts(log_dir, table="decisions") -> list[Path]:
    return sorted((Path(log_dir) / table).glob("date=*/part-*.parquet"))


def _ids(path: Path) -> set[str]:
    return set(pl.read_parquet(path, columns=["decision_id"]).get_column("decision_id"))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _overwrite_middle(path: Path) -> None:
    """0xff over the middle half of the data pages; the footer stays intact."""
    data = bytearray(path.read_bytes())
    end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # where the footer starts
    lo, hi = 4 + (end - 4) // 4, 4 + 3 * (end - 4) // 4
    data[lo:hi] = b"\xff" * (hi - lo)
    path.write_bytes(bytes(data))
    assert pl.read_parquet_schema(path)  # the footer reads: only reading the data shows the damage


def _segment_left_behind(log_dir, n_lines, profiles="a,b", tasks="default") -> tuple[str, Path]:
    out = subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(log_dir), str(n_lines), profiles, tasks],
                         capture_output=True, text=True, timeout=120, check=True)
    writer = out.stdout.split()[-1]
    return writer, Path(log_dir) / "_journal" / f"{writer}-00000000.jsonl"


def _spoil_line(segment: Path, number: int) -> None:
    """Overwrite line ``number`` (1-based) with unreadable bytes of the same length."""
    lines = segment.read_bytes().split(b"\n")
    lines[number - 1] = b"\x00" + b"#" * (len(lines[number - 1]) - 1)
    segment.write_bytes(b"\n".join(lines))


# -- readers: the file is named, or skipped and counted ----------------------------------------------
@pytest.mark.parametrize("damage", [_truncate, _overwrite_middle])
def test_scan_names_the_damaged_part(tmp_path, damage):
    _log(tmp_path)
    bad = _parts(tmp_path)[1]
    damage(bad)
    with pytest.raises(br.LogError, match=r"log_dir/decisions part cannot be read: parquet: .*, got '.*") as info:
        br.scan_table(tmp_path, "decisions").collect()
    assert info.value.value == str(bad) and bad.name in str(info.value)
    # a query that needs no damaged column still reads
    assert br.scan_table(tmp_path, "outcomes").collect().height == 100


def test_skip_reads_the_other_parts_and_counts_the_skipped(tmp_path):
    _log(tmp_path)
    parts = _parts(tmp_path)
    lost = _ids(parts[0]) | _ids(parts[2])
    _truncate(parts[0])
    _overwrite_middle(parts[2])
    scan = scan_table_checked(tmp_path, "decisions", on_corrupt="skip")
    got = scan.frame.collect()
    assert got.height == 100 - len(lost) and not set(got.get_column("decision_id")) & lost
    assert scan.n_skipped == 2 and sorted(s.path for s in scan.skipped) == [parts[0], parts[2]]
    assert all(s.quarantined is None and s.problem.startswith("parquet:") for s in scan.skipped)
    assert all(p.exists() for p in parts)  # skipping changes nothing on disk
    # filters, projections and slices read past the damaged parts too
    assert scan_table_checked(tmp_path, "decisions", on_corrupt="skip").frame.select("profile").head(60).collect(
        ).height == 50
    with pytest.raises(br.ConfigError, match="on_corrupt must be 'raise', 'skip' or 'quarantine', got 'ignore'"):
        br.scan_table(tmp_path, "decisions", on_corrupt="ignore")


def test_quarantine_moves_damaged_parts_aside_and_no_reader_looks_there(tmp_path):
    _log(tmp_path)
    bad = _parts(tmp_path, "outcomes")[3]
    _overwrite_middle(bad)
    scan = scan_table_checked(tmp_path, "outcomes", on_corrupt="quarantine")
    assert scan.frame.collect().height == 75
    moved = tmp_path / "_quarantine" / bad.relative_to(tmp_path)
    assert not bad.exists() and moved.exists() and scan.skipped[0].quarantined == moved
    [q] = quarantined_files(tmp_path)
    assert (q.path, q.original, q.reason) == (moved, bad.relative_to(tmp_path).as_posix(), scan.skipped[0].problem)
    assert quarantined_files(tmp_path, since_us=q.ts_us + 1) == []
    assert br.scan_table(tmp_path, "outcomes").collect().height == 75  # the default reader: all is well now
    assert ope.LoggedFeedback.from_logs(tmp_path).n_rounds == 75


def test_a_damaged_segment_is_named_or_its_readable_lines_are_read(tmp_path):
    _, segment = _segment_left_behind(tmp_path, 5)
    _spoil_line(segment, 2)
    with pytest.raises(br.LogError, match=r"journal line 2 is unreadable and later lines are not, got '.*jsonl'"):
        br.scan_table(tmp_path, "decisions")
    scan = scan_table_checked(tmp_path, "decisions", on_corrupt="skip")
    assert scan.frame.collect().height == 40  # lines 1, 3, 4, 5
    [s] = scan.skipped
    assert (s.path, s.problem, s.n_rows_read) == (segment, "line(s) 2 unreadable", 40)
    assert segment.exists()  # a reader never moves a segment: its writer may be alive


# -- a writer opening the directory, a restart ----------------------------------------------------------
def test_a_writer_opening_the_directory_salvages_a_damaged_segment(tmp_path):
    writer, segment = _segment_left_behind(tmp_path, 6)
    _spoil_line(segment, 3)
    router = br.Router(PROFILES, log_dir=tmp_path, seed=1)  # opening recovers the dead writer's segment
    router.close()
    assert not segment.exists()
    [q] = quarantined_files(tmp_path)
    assert q.path == tmp_path / "_quarantine" / "_journal" / segment.name
    assert q.reason == f"line(s) 3 unreadable (of 6); 5 readable line(s), 100 row(s), kept in {part_name(writer, 0)}"
    decisions = br.scan_table(tmp_path, "decisions").collect()
    assert decisions.height == 50 and decisions.get_column("writer").unique().to_list() == [writer]
    assert br.scan_table(tmp_path, "outcomes").collect().height == 50
    assert LogWriter(tmp_path).n_recovered == 0  # nothing left to recover


def test_salvage_leaves_a_part_already_written_alone(tmp_path):
    """A compaction cut short wrote the first date's part; the segment was damaged after: the
    part (the whole rows) stays as it is, the other date's readable rows are compacted."""
    day = 86_400_000_000
    rows = [(f"d{i}", 1_700_000_000_000_000 + (i // 3) * day + i, "w1", i, 1.0, None, 2.5, 0.9, "applied")
            for i in range(6)]
    segment = tmp_path / "_journal" / "w1-00000000.jsonl"  # a dead writer's: no lock held
    segment.parent.mkdir()
    segment.write_bytes(b"".join(encode_commit({"outcomes": [[v] for v in row]}) for row in rows))  # a line a row
    LogWriter(tmp_path, writer_id="w0").close()  # nothing damaged yet: compacted whole
    first_day = br.scan_table(tmp_path, "outcomes").collect().head(3)
    part = tmp_path / "outcomes" / "date=2023-11-14" / part_name("w1", 0)
    (tmp_path / "outcomes" / "date=2023-11-15" / part_name("w1", 0)).unlink()  # the second date never written
    write_parts(tmp_path, "outcomes", first_day, lambda: part_name("w1", 0))
    written = part.read_bytes()
    segment.write_bytes(b"".join(encode_commit({"outcomes": [[v] for v in row]}) for row in rows))
    _spoil_line(segment, 2)  # a row of the first date
    _spoil_line(segment, 5)  # a row of the second
    LogWriter(tmp_path, writer_id="w2").close()
    assert part.read_bytes() == written
    assert sorted(br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id")) == [
        "d0", "d1", "d2", "d3", "d5"]


def test_resume_quarantines_a_damaged_part_and_replays_the_rest(tmp_path, monkeypatch):
    live = br.Router(PROFILES, log_dir=tmp_path, seed=0)
    for _ in range(4):
        for d in live.decide_batch([{}] * 25):
            live.record(d.id, quality=1.0)
        live.flush()
    waiting = live.decide_batch([{}] * 5)
    live.close()
    bad = _parts(tmp_path, "outcomes")[1]
    answered_in_bad = _ids(bad)
    _truncate(bad)
    # the quarantined part leaves a hole in the writer's sequence: at once, the rows after it still count
    fresh = br.Router(PROFILES, log_dir=tmp_path, seed=1)
    summary = fresh.resume()
    assert summary["outcomes_applied"] == 100 - len(answered_in_bad) == 75
    assert [q.original for q in quarantined_files(tmp_path)] == [bad.relative_to(tmp_path).as_posix()]
    # the decisions whose outcome was in the damaged part are waiting again, with the 5 unanswered
    assert summary["pending_restored"] == 5 + len(answered_in_bad)
    assert fresh.record(waiting[0].id, quality=1.0) == "applied"
    fresh.close()
    assert applied_outcomes(tmp_path).height == 76
    events = br.scan_table(tmp_path, "events").collect()  # the resume logged what it moved aside, and why
    assert events.get_column("event").to_list() == ["quarantine"]
    assert events.get_column("policy").to_list() == [bad.relative_to(tmp_path).as_posix()]
    assert "_quarantine" in events.get_column("why")[0]


# -- ope and calibration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [_truncate, _overwrite_middle])
def test_ope_names_the_damaged_file_or_skips_it(tmp_path, damage):
    _log(tmp_path)
    bad = _parts(tmp_path)[0]  # the first file: ope takes the schema from it
    damage(bad)
    for read in (ope.LoggedFeedback.from_logs, ope.feedback_from_logs, lambda d: ope.join_logs(d).collect()):
        with pytest.raises(CorruptLogError, match=re.escape(f"decisions file {bad} cannot be read: parquet: ")) as info:
            read(tmp_path)
        assert info.value.path == str(bad) and isinstance(info.value, ope.OPEError)
    snap = LogSnapshot.take(tmp_path, on_corrupt="skip")
    assert ope.LoggedFeedback.from_logs(snap).n_rounds == 75
    assert [(s.path, s.n_rows_read) for s in snap.skipped] == [(str(bad), 0)]
    columns = read_log_columns(tmp_path, on_corrupt="skip")
    assert len(columns.actions) == 75 and [s.path for s in columns.skipped_files] == [str(bad)]
    assert "skipped_files" not in columns.as_kwargs()
    with pytest.raises(ope.InvalidConfigError, match="on_corrupt must be 'raise' or 'skip', got 'ignore'"):
        LogSnapshot.take(tmp_path, on_corrupt="ignore")


def test_calibration_names_the_damaged_file(tmp_path):
    _log(tmp_path)
    bad = _parts(tmp_path, "outcomes")[2]
    _overwrite_middle(bad)
    with pytest.raises(CorruptLogError, match=re.escape(f"outcomes file {bad} cannot be read")):
        br.calibration_report(tmp_path)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batch_rows", [64, 262_144])
def test_skipping_gives_every_readable_row_once_in_order(tmp_path, monkeypatch, seed, batch_rows):
    """Parts of many row groups, damaged anywhere (some make Polars panic): the healthy parts'
    rows all come, once and in order; a damaged part gives at most what it holds, as counted.
    Small batches: a damaged part is met after rows were handed over, and reading goes on past."""
    monkeypatch.setattr("banditroute.logs.scan._BATCH_ROWS", batch_rows)
    monkeypatch.setattr("ope.log_join._BATCH_ROWS", batch_rows)
    rng = np.random.default_rng(seed)
    schema = TABLES["outcomes"].schema
    ids = {}
    for i in range(10):
        n = int(rng.integers(50, 2000))
        frame = pl.DataFrame({"decision_id": [f"p{i}-{j}" for j in range(n)],
                              "ts": [1_700_000_000_000_000 + j for j in range(n)], "writer": ["w"] * n,
                              "seq": list(range(n)), "quality": rng.random(n), "cost_usd": [None] * n,
                              "latency_ms": rng.random(n), "reward": rng.random(n), "status": ["applied"] * n,
                              "error": [None] * n, "schema_version": [3] * n}).with_columns(pl.col("ts").cast(pl.Int64)).cast(
                                  {c: t for c, t in schema.items() if c != "bucket"})  # version 3: no bucket
        path = tmp_path / "outcomes" / "date=2023-11-14" / f"part-w-{i:08d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path, row_group_size=int(rng.integers(100, 800)))
        ids[path] = frame.get_column("decision_id").to_list()
    damaged = [p for p in ids if rng.random() < 0.4]
    for path in damaged:
        data = bytearray(path.read_bytes())
        end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
        at = int(rng.integers(4, end - 200))
        data[at:at + 200] = b"\xff" * 200
        path.write_bytes(bytes(data))
    scan = scan_table_checked(tmp_path, "outcomes", on_corrupt="skip")
    got = scan.frame.collect().get_column("decision_id").to_list()  # every column: any damage read shows
    _check_skipping(got, {s.path: s.n_rows_read for s in scan.skipped}, ids, damaged, schema)
    snap = LogSnapshot.take(tmp_path, on_corrupt="skip")  # ope's reader, the same way
    got = ope.scan_outcomes(snap).collect().get_column("decision_id").to_list()
    _check_skipping(got, {Path(s.path): s.n_rows_read for s in snap.skipped}, ids, damaged, schema)


def _check_skipping(got, counted, ids, damaged, schema):
    assert len(got) == len(set(got))
    files = [int(g[1:g.index("-")]) for g in got]
    assert files == sorted(files)
    for i, (path, rows) in enumerate(ids.items()):
        mine = [g for g, f in zip(got, files) if f == i]
        if path not in damaged:
            assert mine == rows and path not in counted
        else:
            assert mine == rows[: len(mine)] and counted.get(path, len(rows)) == len(mine)
            assert (path in counted) == (part_problem(path, schema=schema) is not None)


# -- banditroute doctor ----------------------------------------------------------------------------------
def _doctor(*args):
    return subprocess.run([sys.executable, "-m", "banditroute", "doctor", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)


def test_doctor_lists_damaged_files_and_moves_them_aside_only_when_asked(tmp_path):
    _log(tmp_path)
    _, segment = _segment_left_behind(tmp_path, 4)
    healthy = _doctor("--log-dir", str(tmp_path))
    assert healthy.returncode == 0, healthy.stderr
    assert "checked 8 Parquet part(s) and 1 journal segment(s), reading each whole: all read whole." in healthy.stdout
    truncated, overwritten = _parts(tmp_path)[0], _parts(tmp_path, "outcomes")[1]
    _truncate(truncated)
    _overwrite_middle(overwritten)
    _spoil_line(segment, 2)
    out = _doctor("--log-dir", str(tmp_path))
    assert out.returncode == 1, out.stderr
    for path in (truncated, overwritten, segment):
        assert f"DAMAGED {'segment' if path == segment else 'part'}: {path.relative_to(tmp_path).as_posix()}" in (
            out.stdout)
    assert "nothing: its footer (schema, row count) is unreadable" in out.stdout
    assert "footer intact (25 rows)" in out.stdout and "3 of 4 lines (60 rows)" in out.stdout
    assert "--quarantine" in out.stdout and truncated.exists() and segment.exists()  # nothing changed
    report = json.loads(_doctor("--log-dir", str(tmp_path), "--json").stdout)
    assert not report["ok"] and report["checked"] == {"parts": 8, "segments": 1}
    assert {d["path"] for d in report["damaged"]} == {p.relative_to(tmp_path).as_posix()
                                                       for p in (truncated, overwritten, segment)}
    moved = _doctor("--log-dir", str(tmp_path), "--quarantine")
    assert moved.returncode == 1 and not truncated.exists() and not overwritten.exists() and not segment.exists()
    after = _doctor("--log-dir", str(tmp_path))
    assert after.returncode == 0, after.stdout
    assert "quarantined files (moved aside" in after.stdout and after.stdout.count("line(s) 2 unreadable") == 1
    assert br.scan_table(tmp_path, "decisions").collect().height == 75 + 30  # the segment's readable lines
    assert _doctor("--log-dir", str(tmp_path / "nope")).returncode == 2


# -- the service ------------------------------------------------------------------------------------------
def test_the_service_starts_on_a_log_with_a_damaged_part_and_a_damaged_segment(tmp_path):
    pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_service import free_port, start_service, stop_service

    logs = tmp_path / "logs"
    router = br.Router([br.Profile(n) for n in ("small", "medium", "large")], task_types=["chat", "code", "math"],
                       log_dir=logs, seed=3)
    for d in router.decide_batch([{"task_type": "code"}] * 40):
        router.record(d.id, quality=0.0)
    router.close()
    _, segment = _segment_left_behind(logs, 5, profiles="small,medium,large", tasks="chat,code,math")
    bad = _parts(logs)[0]
    _truncate(bad)
    _spoil_line(segment, 2)
    port = free_port()
    proc = start_service(tmp_path, port, extra=["--token", "corruption-test-token"], log_dir=logs)
    try:
        def call(path, body=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": "Bearer corruption-test-token", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())

        status, health = call("/healthz")
        assert status == 200 and health["status"] == "ok"
        status, decision = call("/v1/decide", {"context": {"task_type": "chat"}})
        assert status == 200 and decision["profile"] in ("small", "medium", "large")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": "Bearer corruption-test-token"})
        with urllib.request.urlopen(req, timeout=10) as r:
            metrics = r.read().decode()
        assert [line.split()[-1] for line in metrics.splitlines()
                if line.startswith("banditroute_quarantined_files{")] == ["2"]
    finally:
        stop_service(proc)
    moved = {bad.relative_to(logs).as_posix(), f"_journal/{segment.name}"}
    assert {q.original for q in quarantined_files(logs)} == moved
    events = br.scan_table(logs, "events").filter(pl.col("event") == "quarantine").collect()
    assert set(events.get_column("policy").to_list()) == moved  # one event per file, by the replica that moved it
