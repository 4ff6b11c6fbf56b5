"""Snapshots (issue 13, item 1): the learned state as data, and a restart from the newest
snapshot plus the log after it.

Properties, with fixed seeds: a resume from a snapshot gives the beliefs a full replay gives
(bit for bit with one writer at a time: thompson, drift detection with alarms, linear, discount);
with several writers on one log every applied outcome is counted exactly once; a damaged,
foreign or incompatible snapshot is reported and skipped; loading never runs code from a file;
and through the real service a SIGKILLed replica restarts from its periodic snapshot and the
log after it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import banditroute as br
from banditroute.beliefs.state import read_file
from banditroute.decide.snapshot import snapshot_files
from banditroute.logs.replay import log_positions
from banditroute.logs.rows import EventRow
from banditroute.policies.base import Policy
from banditroute.policies.external import ExternalPolicy
from banditroute.policies.vw import VWPolicy

PROFILES = [br.Profile("a"), br.Profile("b"), br.Profile("c")]
TASKS = ["x", "y"]
SETTINGS = {"thompson": {}, "drift": {"drift": br.DriftConfig(threshold=3.0, min_samples=10.0)},
            "linear": {"policy": "linear", "features": {"n": 10.0}}, "discount": {"discount": 0.98},
            "greedy": {"policy": "greedy"}}


def router(log_dir=None, *, seed=0, **settings) -> br.Router:
    return br.Router(PROFILES, task_types=TASKS, log_dir=log_dir, seed=seed, **settings)


def play(r: br.Router, n: int, rng, *, flip: bool = False) -> None:
    """``n`` decisions, each answered; with ``flip`` the best profile becomes the worst (drift)."""
    rates = {"a": 0.85, "b": 0.5, "c": 0.2}
    for i in range(n):
        d = r.decide({"task_type": TASKS[i % 2], "n": float(rng.integers(0, 20))})
        p = rates[d.profile]
        r.record(d.id, quality=float(rng.random() < (1.0 - p if flip else p)))
    r.flush()


def resumed(log_dir, *, snapshot: bool = True, seed: int = 99, **settings) -> tuple[br.Router, dict]:
    r = router(log_dir, seed=seed, **settings)
    return r, r.resume(snapshot=snapshot)


# -- a resume from a snapshot is a full replay --------------------------------------------------------
@pytest.mark.parametrize("kind", list(SETTINGS))
def test_resume_from_a_snapshot_equals_a_full_replay(kind, seed, tmp_path):
    """Snapshot after 300 outcomes (for ``drift``, the rates flip after 150: alarms fire before
    and after the snapshot), 200 more, restart: the beliefs (and the linear statistics) equal a
    full replay's and the live router's, exactly; the summary says what came from where."""
    settings = SETTINGS[kind]
    rng = np.random.default_rng(seed)
    live = router(tmp_path, seed=seed, **settings)
    play(live, 150, rng)
    play(live, 150, rng, flip=kind == "drift")
    path = live.snapshot()
    play(live, 200, rng, flip=kind == "drift")
    fast, summary = resumed(tmp_path, **settings)
    full, _ = resumed(tmp_path, snapshot=False, **settings)
    assert summary["snapshot"] == path.name and summary["skipped_snapshots"] == []
    assert summary["outcomes_applied"] == 500 and summary["outcomes_replayed"] == 200
    assert fast.beliefs().equals(full.beliefs()) and fast.beliefs().equals(live.beliefs())
    assert fast.n_updates == full.n_updates == live.n_updates == 500
    if kind == "drift":
        assert len(live.drift_events) >= 2 and fast.drift_events[-1] == live.drift_events[-1]
    if kind == "linear":
        assert np.array_equal(fast.policy.A_, full.policy.A_) and np.array_equal(fast.policy.b_, live.policy.b_)
    for r in (live, fast, full):
        r.close()


def test_snapshot_records_the_log_position_and_settings_as_data(tmp_path, seed):
    live = router(tmp_path, seed=seed)
    play(live, 120, np.random.default_rng(seed))
    path = live.snapshot()
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("snapshot.json"))
    assert meta["format"] == "banditroute-snapshot" and meta["format_version"] == 1
    assert meta["library_version"] and meta["config"]["__type__"] == "RouterConfig"
    assert meta["log"]["positions"] == {live.writer_id: live.log_position - 1}
    assert meta["log"]["n_outcomes"] == 120 == meta["n_updates"]
    arrays = np.load(path, allow_pickle=False)  # numpy reads it as it is, without pickles
    assert arrays["belief/alpha.npy"].shape == (3, 2) and arrays["belief/theta.npy"].dtype == np.float64
    live.close()


def test_several_writers_each_outcome_once(tmp_path, seed):
    """Two routers log side by side on one log, each learning only its own outcomes; a third
    snapshots the log; both go on, a new writer joins: a resume counts every applied outcome
    of the log exactly once, as a full replay does."""
    rng = np.random.default_rng(seed)
    one, two = router(tmp_path, seed=seed), router(tmp_path, seed=seed + 1)
    for _ in range(3):
        play(one, 40, rng)
        play(two, 30, rng)
    snap = router(tmp_path, seed=seed + 2).snapshot()
    assert read_file(snap)[0]["log"]["n_outcomes"] == 210
    play(one, 50, rng)
    play(two, 20, rng)
    three = router(tmp_path, seed=seed + 3)  # a writer the snapshot never saw
    play(three, 25, rng)
    fast, summary = resumed(tmp_path)
    full, _ = resumed(tmp_path, snapshot=False)
    applied = br.scan_table(tmp_path, "outcomes").filter(pl.col("status") == "applied").collect().height
    assert applied == 305 == fast.n_updates == full.n_updates and summary["outcomes_replayed"] == 95
    np.testing.assert_allclose(fast.evidence(), full.evidence(), rtol=1e-12)
    for r in (one, two, three, fast, full):
        r.close()


def test_the_periodic_snapshot_starts_from_the_last_and_prunes(tmp_path, seed):
    live = router(tmp_path, seed=seed)
    rng = np.random.default_rng(seed)
    paths = []
    for _ in range(4):
        play(live, 30, rng)
        paths.append(live.snapshot(keep=2))
    assert snapshot_files(tmp_path) == paths[:1:-1]  # the two newest
    assert live.snapshot() == paths[-1]  # nothing new in the log: no new file
    assert [read_file(p)[0]["log"]["n_outcomes"] for p in paths[2:]] == [90, 120]
    live.close()


# -- what a resume does not trust ---------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "flipped", "not a zip"])
def test_a_damaged_snapshot_is_reported_and_the_previous_one_used(damage, tmp_path, seed):
    live = router(tmp_path, seed=seed)
    rng = np.random.default_rng(seed)
    play(live, 100, rng)
    older = live.snapshot()
    play(live, 100, rng)
    newer = live.snapshot()
    play(live, 50, rng)
    data = bytearray(newer.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        for i in range(len(data) // 3, len(data) // 3 + 8):
            data[i] ^= 0xFF
    else:
        data = bytearray(b"garbage")
    newer.write_bytes(bytes(data))
    fast, summary = resumed(tmp_path)
    full, _ = resumed(tmp_path, snapshot=False)
    assert summary["snapshot"] == older.name and summary["outcomes_replayed"] == 150
    (skipped,) = summary["skipped_snapshots"]
    assert skipped["snapshot"] == newer.name and str(newer) in skipped["reason"]
    assert fast.beliefs().equals(full.beliefs()) and fast.n_updates == 250
    for r in (live, fast, full):
        r.close()


def test_snapshots_of_other_settings_or_logs_are_skipped_for_a_full_replay(tmp_path, seed):
    live = router(tmp_path / "logs", seed=seed)
    play(live, 60, np.random.default_rng(seed))
    live.snapshot()
    other = br.Router(PROFILES, task_types=["x", "y", "z"], log_dir=tmp_path / "logs", seed=1)
    summary = other.resume()
    assert summary["snapshot"] is None and summary["outcomes_applied"] == 60
    assert "task_types" in summary["skipped_snapshots"][0]["reason"]
    foreign = router(tmp_path / "elsewhere", seed=seed)  # another log, with the first log's snapshot
    play(foreign, 10, np.random.default_rng(seed + 1))
    (tmp_path / "elsewhere" / "_snapshots").mkdir()
    for path in snapshot_files(tmp_path / "logs"):
        (tmp_path / "elsewhere" / "_snapshots" / path.name).write_bytes(path.read_bytes())
    again, summary = resumed(tmp_path / "elsewhere")
    assert summary["snapshot"] is None and again.n_updates == 10
    assert "covers rows the log does not hold" in summary["skipped_snapshots"][0]["reason"]
    for r in (live, other, foreign, again):
        r.close()


def test_positions_stop_at_a_young_gap_and_pass_an_old_one(tmp_path):
    """Rows of writer w with seq 0-2 and 4-5 (3 missing): a commit on its way while the row
    after the gap is young; never written once it is older than ``hole_s``."""
    now = time.time_ns() // 1000
    log = br.LogWriter(tmp_path, durability="sync")
    for seq, age_s in ((0, 200), (1, 200), (2, 200), (4, 100), (5, 1)):
        log.append(EventRow(now - int(age_s * 1e6), "w", seq, "note", "p", None, "who", "why", "v"))
    assert log_positions(tmp_path, hole_s=60.0, now_us=now) == {"w": (5, 5)}  # row 4 is 100 s old
    assert log_positions(tmp_path, hole_s=150.0, now_us=now) == {"w": (5, 2)}
    assert log_positions(tmp_path, after={"w": 2}, hole_s=150.0, now_us=now) == {"w": (5, 2)}
    assert log_positions(tmp_path, after={"w": 4}, hole_s=150.0, now_us=now) == {"w": (5, 5)}
    log.close()


def test_a_dead_writers_rows_past_a_lost_commit_are_applied(tmp_path, seed):
    """A journal writer that died (its lock file is there, nobody holds it) lost a commit in the
    middle (a missing seq, young): a resume applies every row it did write, past the gap too."""
    live = router(seed=seed)
    live.use_log_writer(br.LogWriter(tmp_path, durability="sync"))  # a part per row
    play(live, 40, np.random.default_rng(seed))
    lost = sorted((tmp_path / "outcomes").rglob("*.parquet"))[20]
    row = pl.read_parquet(lost)
    lost.unlink()
    from banditroute.logs.segments import lock_path

    lock_path(tmp_path, live.writer_id).parent.mkdir(parents=True, exist_ok=True)
    lock_path(tmp_path, live.writer_id).touch()
    assert log_positions(tmp_path)[live.writer_id][1] == row.get_column("seq").item() - 1  # a young gap
    fast, summary = resumed(tmp_path)
    assert summary["outcomes_applied"] == fast.n_updates == 39 and summary["writers"] == [live.writer_id]
    fast.close()


def test_a_running_writers_rows_past_a_missing_seq_wait(tmp_path, seed, monkeypatch):
    """A writer still running (its journal lock held) whose next seq is not in the log yet (a
    commit on its way) while a later row is: a resume applies every outcome in the log now,
    the one past the gap too (as a full replay would), but its position is not one for good,
    so it leaves no snapshot (a later snapshot covers the gap's row once it arrives)."""
    from banditroute.logs.rows import OutcomeRow

    live = router(seed=seed)
    log = br.LogWriter(tmp_path, durability="sync", journal=True)
    live.use_log_writer(log)
    play(live, 30, np.random.default_rng(seed))
    waiting = live.decide({"task_type": "x"})
    gap = live.log_position  # the seq of a row still on its way
    log.append(OutcomeRow(waiting.id, time.time_ns() // 1000, live.writer_id, gap + 1, 1.0, None, None, 1.0,
                          "applied"))
    assert log_positions(tmp_path)[live.writer_id] == (gap + 1, gap - 1)
    from banditroute.decide import persistence

    monkeypatch.setattr(persistence, "RESUME_SNAPSHOT_MIN", 1)  # a resume would leave a snapshot ...
    fast, summary = resumed(tmp_path)
    assert summary["outcomes_applied"] == fast.n_updates == 31 and summary["writers"] == []
    assert snapshot_files(tmp_path) == []  # ... but not of a position with a row still on its way
    fast.close()
    live.close()


def test_decisions_older_than_the_lookup_window_are_still_found(tmp_path, seed, monkeypatch):
    from banditroute.decide import persistence

    live = router(tmp_path, seed=seed)
    play(live, 60, np.random.default_rng(seed))
    live.snapshot()
    play(live, 40, np.random.default_rng(seed + 1))
    monkeypatch.setattr(persistence, "_window_s", lambda r: -3600.0)  # the window misses every decision
    fast, summary = resumed(tmp_path)
    full, _ = resumed(tmp_path, snapshot=False)
    assert summary["outcomes_replayed"] == 40 and fast.beliefs().equals(full.beliefs())
    for r in (live, fast, full):
        r.close()


# -- save / load as data ------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_a_pickle(tmp_path):
    live = router(seed=0)
    play(live, 30, np.random.default_rng(0))
    pickle.loads(pickle.dumps(Payload(tmp_path / "control")))  # the payload is live ...
    assert (tmp_path / "control").exists()
    marker = tmp_path / "ran"
    raw = tmp_path / "state.pkl"  # ... as a whole file
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(br.ConfigError, match=rf"^path is not a banditroute snapshot .*got '{raw}'"):
        br.Router.load(raw)
    saved = tmp_path / "state.npz"  # ... and as an object array inside a snapshot
    live.save(saved)
    hostile = tmp_path / "hostile.npz"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "belief/alpha.npy":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array([Payload(marker)], dtype=object), allow_pickle=True)
                data = buf.getvalue()
            dst.writestr(info.filename, data)
    with pytest.raises(br.ConfigError, match=rf"^path member 'belief/alpha.npy' is not a plain numeric array "
                                             rf"\(refused without running it.*got '{hostile}'"):
        br.Router.load(hostile)
    assert not marker.exists()


def test_save_load_keeps_decisions_pending_and_continues_identically(tmp_path, seed):
    """Not a pickle; the loaded router takes the outcome of a decision made before the save
    and then decides and learns exactly as the original."""
    live = router(seed=seed, **SETTINGS["linear"])
    rng = np.random.default_rng(seed)
    play(live, 80, rng)
    pending = live.decide({"task_type": "x", "n": 3.0})
    live.save(tmp_path / "state.npz")
    assert zipfile.is_zipfile(tmp_path / "state.npz")
    clone = br.Router.load(tmp_path / "state.npz")
    assert clone.record(pending.id, quality=1.0) == live.record(pending.id, quality=1.0) == "applied"
    play(clone, 40, np.random.default_rng(seed + 1))
    play(live, 40, np.random.default_rng(seed + 1))
    assert clone.beliefs().equals(live.beliefs()) and np.array_equal(clone.policy.A_, live.policy.A_)
    assert clone.probabilities({"task_type": "y", "n": 5.0}) == live.probabilities({"task_type": "y", "n": 5.0})


def test_pickle_only_when_asked_for(tmp_path):
    live = router(seed=0)
    live.save(tmp_path / "state.pkl", format="pickle")
    assert br.Router.load(tmp_path / "state.pkl", format="pickle").beliefs().equals(live.beliefs())
    with pytest.raises(br.ConfigError, match="^path is not a banditroute snapshot"):
        br.Router.load(tmp_path / "state.pkl")
    with pytest.raises(br.ConfigError, match="^format must be 'data' or 'pickle', got 'json'"):
        live.save(tmp_path / "x", format="json")


def test_rollout_candidates_that_are_data_are_kept_others_refused(tmp_path, seed):
    live = router(seed=seed)
    candidate = router(seed=seed + 1, policy="greedy")
    play(live, 40, np.random.default_rng(seed))
    live.start_canary("greedy", candidate, fraction=0.25, who="t", why="test")
    live.save(tmp_path / "state.npz")
    clone = br.Router.load(tmp_path / "state.npz")
    assert clone.probabilities({"task_type": "x"}) == live.probabilities({"task_type": "x"})

    class Table:
        def probabilities(self, context):
            return {"a": 1.0}

    live.add_shadow("table", Table(), who="t", why="test")
    with pytest.raises(br.ConfigError, match=r"^rollout.table cannot be stored as data .*format='pickle', got 'Table'"):
        live.save(tmp_path / "other.npz")


def test_a_task_model_is_handed_to_load_again(tmp_path):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X = [{"n": i, "code": i % 2} for i in range(40)]
    labels = [TASKS[i % 2] for i in range(40)]
    model = br.TaskClassifier(make_pipeline(DictVectorizer(), LogisticRegression())).fit(X, labels)
    live = br.Router(PROFILES, task_types=TASKS, task_model=model, seed=0)
    live.save(tmp_path / "state.npz")
    with pytest.raises(br.ConfigError, match="^task_model must be given: .* is code"):
        br.Router.load(tmp_path / "state.npz")
    clone = br.Router.load(tmp_path / "state.npz", task_model=model)
    assert clone.probabilities({"n": 3, "code": 1}) == live.probabilities({"n": 3, "code": 1})


# -- the policies' state as arrays ---------------------------------------------------------------------
def test_every_builtin_policy_exports_numeric_arrays_or_says_it_cannot(seed):
    from test_policy_contract import (
        EXPLICIT_BUILDERS,
        PROBES,
        _by_name,
        make_profiles,
        policy_classes,
        train,
    )

    for cls in policy_classes():
        build = EXPLICIT_BUILDERS.get(cls) or _by_name(cls.name)
        r = build(make_profiles(), seed=seed)
        train(r, np.random.default_rng(seed), 50)
        if cls is ExternalPolicy:
            with pytest.raises(br.ConfigError, match=r"^learner is an object of its own: its learned state cannot "
                                                     r"be stored as data; save the router with format='pickle'"):
                r.policy.state_arrays()
            continue
        arrays = r.policy.state_arrays()
        assert all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in arrays.values()), cls
        again = build(make_profiles(), seed=seed + 1)
        again.policy.load_state_arrays(arrays)
        if cls is not VWPolicy:  # VW re-serialises an equal model to other bytes
            assert {k: v.tobytes() for k, v in again.policy.state_arrays().items()} == \
                   {k: v.tobytes() for k, v in arrays.items()}, cls
        if cls.learns:
            feasible = np.ones(4, dtype=bool)
            for context in PROBES:
                w = np.eye(2)[["chat", "code"].index(context["task_type"])]
                assert np.array_equal(again.policy.distribution(context, w, feasible),
                                      r.policy.distribution(context, w, feasible)), (cls, context)


def test_a_learning_policy_without_arrays_says_so():
    class Mine(Policy):
        def propose(self, query):
            return query.feasible.astype(float), np.zeros_like(query.feasible)

    with pytest.raises(br.ConfigError, match=r"^policy cannot export its learned state as arrays .*got 'Mine'"):
        Mine().state_arrays()
    belief = router(seed=0).policy.belief
    arrays = belief.state_arrays()
    with pytest.raises(br.ConfigError, match=r"^belief.theta is missing from the stored state$"):
        belief.load_state_arrays({k: v for k, v in arrays.items() if k != "theta"})
    with pytest.raises(br.ConfigError, match=r"^belief.alpha must be an array of shape \(3, 2\) and dtype float64"):
        belief.load_state_arrays({**arrays, "alpha": np.ones((2, 2))})
    belief.load_state_arrays(arrays)  # nothing changed by the refused ones
    assert all(np.array_equal(v, arrays[k]) for k, v in belief.state_arrays().items() if k != "counters")


# -- through the service --------------------------------------------------------------------------------
def test_a_killed_replica_restarts_from_its_snapshot_and_the_log_after_it(tmp_path, monkeypatch):
    """``serve`` snapshots every 10 outcomes (or 0.3 s); 60 outcomes, a snapshot holding all
    of them, 20 more, SIGKILL, restart: /v1/beliefs counts each of the 80 exactly once (the
    snapshot's and the tail), and the 10 decisions still waiting are applied after the restart."""
    pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_service import free_port, start_service, stop_service
    from test_restart import TOKEN, call, n_learned

    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, log_dir=logs, extra=["--token", TOKEN, "--snapshot-interval-s", "0.3",
                                                              "--snapshot-every-outcomes", "10"])
    try:
        decisions = [call(port, "/v1/decide", {"context": {"task_type": ["chat", "code"][i % 2]}})[1]
                     for i in range(90)]
        for i, d in enumerate(decisions[:60]):
            body = {"decision_id": d["id"], "quality": float(i % 3 == 0)}
            assert call(port, "/v1/outcome", body)[1]["status"] == "applied"
        deadline = time.monotonic() + 30
        while not any(read_file(p)[0]["log"]["n_outcomes"] == 60 for p in snapshot_files(logs)):
            assert time.monotonic() < deadline, "no snapshot of the 60 outcomes"
            time.sleep(0.1)
        for d in decisions[60:80]:
            assert call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0})[1]["status"] == "applied"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # the restart reads, writes none
        proc = start_service(tmp_path, port, extra=["--token", TOKEN, "--snapshot-interval-s", "0"], log_dir=logs)
        resumed = call(port, "/healthz")[1]["resumed"]
        used = read_file(logs / "_snapshots" / resumed["snapshot"])[0]["log"]["n_outcomes"]
        assert 60 <= used <= 80 and resumed["outcomes_replayed"] == 80 - used
        assert resumed["outcomes_applied"] == 80 == n_learned(port) and resumed["pending_restored"] == 10
        for d in decisions[80:]:
            assert call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 0.0})[1]["status"] == "applied"
        assert n_learned(port) == 90
        served = call(port, "/v1/beliefs")[1]["beliefs"]
    finally:
        stop_service(proc)
    replayed = br.Router.from_config(tmp_path / "routes.toml")
    replayed.replay(logs)
    assert [r["n"] for r in served] == replayed.beliefs().get_column("n").to_list()


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A file declaring far more array bytes than a snapshot of its size can hold is refused
    by name before anything is decompressed (memory stays bounded)."""
    path = tmp_path / "bomb.snapshot"
    meta = json.dumps({"format": "banditroute-snapshot", "format_version": 1}).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("snapshot.json", meta)
        with zf.open("big.npy", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(300):  # 300 MiB of zeros, ~300 KiB compressed
                member.write(chunk)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(br.ConfigError, match="zip bomb") as info:
        read_file(path)
    assert info.value.field == "path" and info.value.value == str(path)
