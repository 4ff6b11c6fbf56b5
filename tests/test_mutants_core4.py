"""Tests that kill surviving mutants of the core, fourth (fresh) sample (seed 3), taken after the
restructure of issue 16 (``banditroute`` modules; the sample's ``ope`` survivors are in
``tests/test_mutants_ope4.py``): the decision row of ``Router.decide`` (sequence number, shadow
column, a fallback's expected quality), ``Router.resume`` (taking over a gone writer, skipping
only what it cannot restore), errors of ``use_log_writer`` and ``from_config``, a Router as
shadow candidate, the reliability floor with allow-lists, the registry of policies,
Page-Hinkley's strict threshold and ``add_profile``, the log writer's group commit, Parquet
statistics, older parts, and the journal (segment birth, compactor thread, a corrupt segment).

Each docstring starts with the mutants it was written against (full mutmut names). Each test was
checked by planting the bug it is meant to catch in a copy of the tree (see TESTING.md).

Survivors of this sample classified without a test:

- runs at import time (killed at import, not attributable by mutmut): ``logs.rows.x__define``
  2, 7, 15, 23, 28, 29 -- ``_define`` builds the table definitions when ``banditroute.logs.rows``
  is imported; planted, each breaks the import (2, 7, 15, 28, 29) or
  ``tests/test_log_rows.py::test_a_row_types_fields_are_its_tables_columns_in_order`` (23).
- equivalent: ``logs.frames.x_build_column`` 14 (``count=`` of ``np.fromiter`` only presizes
  the array: ``values`` is a sequence, its length is the count); ``logs.scan.x_scan_table`` 29,
  34 (``hive_partitioning=None``/default: polars only infers hive columns when given a
  directory, ``scan_table`` passes a list of files), 75 (``how="vertical"`` is ``pl.concat``'s
  default); ``logs.segments.x_encode_commit`` 5 (``json.dumps`` escapes every non-ASCII
  character, lone surrogates included: the text to encode is ASCII);
  ``policies.bank.BankPolicy.distribution`` 3 (bank policies read only ``task``, never
  ``task_probs``); ``policies.linear.LinearTS.learn_task`` 6 (with ``discount == 1`` the step
  is ``prior + (A - prior)`` and ``b * 1``, the same statistics up to one rounding; marking
  every profile dirty recomputes unchanged draws from the same fixed normals).
"""

import json
import threading

import numpy as np
import polars as pl
import pytest

import banditroute as br
from banditroute.beliefs.drift import PageHinkley
from banditroute.logs.rows import OutcomeRow
from banditroute.logs.segments import encode_commit, live_segments, read_segment


def lanes(*names):
    """Profiles routed by the request's ``lane``: each alone on its own lane."""
    return [br.Profile(n, allow={"lane": [n]}) for n in names]


# -- decide/issue.py: the decision row of Router.decide ------------------------------------------

def test_decide_logs_each_decisions_sequence_number_and_shadow(tmp_path, seed):
    """banditroute.decide.issue.xǁIssuerǁone__mutmut_28, _39: the decision row of a single
    ``decide`` carries the writer's sequence number (rows of a writer are numbered 0, 1, 2, ...
    in the order they were logged, events included) and each shadow candidate's distribution."""
    router = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, seed=seed)
    router.add_shadow("all_b", br.Router([br.Profile("a", allow={"never": ["x"]}), br.Profile("b")], seed=seed),
                      who="t", why="test")
    ds = [router.decide({}) for _ in range(5)]
    router.flush()
    rows = br.scan_table(tmp_path, "decisions").sort("seq").collect()
    events = br.scan_table(tmp_path, "events").collect()
    assert rows["decision_id"].to_list() == [d.id for d in ds]
    assert sorted(rows["seq"].to_list() + events["seq"].to_list()) == list(range(6))
    assert rows["seq"].to_list() == [1, 2, 3, 4, 5]  # the shadow's event came first
    for row in rows.iter_rows(named=True):
        assert dict(zip(row["profiles"], json.loads(row["shadow"])["all_b"])) == {"a": 0.0, "b": 1.0}
    router.close()


# -- decide/pipeline.py: a fallback decision is logged -------------------------------------------

def test_a_fallback_decision_is_logged_without_an_expected_quality(tmp_path):
    """banditroute.decide.pipeline.xǁDecisionPipelineǁfallback__mutmut_22: a request no profile
    may serve goes to the fallback profile; it is decided and logged like any other (the
    fallback was not chosen from beliefs: its expected quality is null)."""
    router = br.Router(lanes("a", "b"), fallback="a", log_dir=tmp_path, seed=0)
    d = router.decide({"lane": "c"})
    assert d.profile == "a" and d.propensity == 1.0 and d.fallback_reason is not None
    ok = router.decide({"lane": "b"})
    router.flush()
    rows = br.scan_table(tmp_path, "decisions").sort("seq").collect()
    assert rows["decision_id"].to_list() == [d.id, ok.id]
    assert rows["fallback_reason"].to_list()[0] == d.fallback_reason
    assert rows["expected_quality"].to_list()[0] is None
    assert rows["expected_quality"].to_list()[1] == pytest.approx(0.5)  # Beta(1, 1) prior mean
    router.close()


# -- decide/ledger.py + issue.py: Router.resume --------------------------------------------------

def test_resume_takes_over_a_gone_writer_and_skips_only_what_it_cannot_restore(tmp_path):
    """banditroute.decide.ledger.xǁLedgerǁadopt__mutmut_16, banditroute.decide.issue.xǁIssuerǁ
    restore__mutmut_11: a router resuming on the log of a closed router takes over its writer;
    decisions of a profile it does not know are left out, every other one is pending again
    (whatever comes first in the log) and its outcome is applied."""
    live = br.Router(lanes("a", "b", "c"), log_dir=tmp_path, seed=0)
    ds = [live.decide({"lane": lane}) for lane in ["a", "b", "c", "a", "b"]]
    assert [d.profile for d in ds] == ["a", "b", "c", "a", "b"]
    live.close()
    fresh = br.Router(lanes("b", "c"), log_dir=tmp_path, seed=1)
    summary = fresh.resume()
    assert summary == {"outcomes_applied": 0, "pending_restored": 3, "writers": [live.writer_id],
                       "chains_restored": 0}
    assert [fresh.record(d.id, quality=1.0) for d in ds if d.profile != "a"] == ["applied"] * 3
    fresh.close()


def test_use_log_writer_names_what_it_needs():
    """banditroute.decide.ledger.xǁLedgerǁuse_writer__mutmut_10: handing something else than a
    LogWriter is a ConfigError that says what is needed."""
    router = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
    with pytest.raises(br.ConfigError, match=r"^writer must be a LogWriter, got ") as info:
        router.use_log_writer("/tmp/somewhere")
    assert info.value.field == "writer"


# -- decide/router.py: from_config, shadow candidates --------------------------------------------

ROUTES = """
[router]
seed = 3

[objective]
quality = 1.0

[[profiles]]
name = "a"

[[profiles]]
name = "b"
"""


def test_from_config_reports_a_bad_objective_against_the_files_objective_section(tmp_path):
    """banditroute.decide.router.xǁRouterǁfrom_config__mutmut_26: an error in the objective is
    named after the file's top-level ``[objective]`` section (there is no ``router.objective``),
    like the budget's."""
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    with pytest.raises(br.ConfigError, match=r"^routes\.toml: objective must be a Objective") as info:
        br.Router.from_config(path, objective={"quality": 2.0})
    assert info.value.field == "routes.toml: objective"
    with pytest.raises(br.ConfigError, match=r"^routes\.toml: budget must be a Budget"):
        br.Router.from_config(path, budget={"max_cost_usd": 1.0})


def test_shadow_event_defaults_to_an_empty_who(tmp_path):
    """banditroute.decide.router.xǁRouterǁadd_shadow__mutmut_1: ``who`` and ``why`` are optional;
    left out, the event row records them as empty strings."""
    router = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, seed=0)
    router.add_shadow("twin", br.Router([br.Profile("a"), br.Profile("b")], seed=1))
    router.flush()
    events = br.scan_table(tmp_path, "events").collect()
    assert events.select("event", "policy", "who", "why").rows() == [("shadow_start", "twin", "", "")]
    router.close()


def test_a_router_as_shadow_learns_from_every_applied_outcome():
    """banditroute.decide.router.xǁRouterǁadd_shadow__mutmut_8: a Router shadow candidate
    learns from the outcomes of the decisions it shadows (rollout.py: "A Router candidate also
    learns from every applied outcome"); an object without beliefs only gets asked."""
    profiles = [br.Profile("a"), br.Profile("b")]
    router, shadow = br.Router(profiles, seed=0), br.Router(profiles, seed=1)
    router.add_shadow("twin", shadow)
    n = {"a": 0, "b": 0}
    for i in range(20):
        d = router.decide({})
        n[d.profile] += 1
        assert router.record(d.id, quality=1.0) == "applied"
    reliability = ["profile", "task_type", "mean", "ci_low", "ci_high", "n", "alpha", "beta"]  # what it learns
    assert shadow.beliefs().select(reliability).equals(router.beliefs().select(reliability))
    assert dict(shadow.beliefs().select("profile", "alpha").rows()) == {p: 1.0 + n[p] for p in n}


# -- policies/bank.py: the reliability floor keeps the allow-lists -------------------------------

def test_reliability_floor_never_gives_an_excluded_profile_probability(seed):
    """banditroute.policies.bank.xǁBankPolicyǁpropose__mutmut_17: with a reliability floor, a
    profile the allow-list excludes still gets probability 0, however good it is believed to be;
    the profile under the floor is excluded too, the rest share the pmf."""
    good, bad = br.BetaPrior(alpha=50.0, beta=1.0), br.BetaPrior(alpha=1.0, beta=50.0)
    profiles = [br.Profile("star", prior=good, allow={"tier": ["gold"]}), br.Profile("ok1"), br.Profile("ok2"),
                br.Profile("weak", prior=bad)]
    router = br.Router(profiles, reliability_floor=0.2, seed=seed)
    for ctx in ({}, {"tier": "silver"}):
        d = router.decide(ctx)
        assert d.probabilities["star"] == 0.0 and d.probabilities["weak"] == 0.0
        assert d.probabilities["ok1"] + d.probabilities["ok2"] == pytest.approx(1.0)
        assert d.profile in ("ok1", "ok2")
    assert router.probabilities({"tier": "gold"})["star"] > 0.9


# -- policies/base.py: the registry --------------------------------------------------------------

def test_a_policy_registered_by_name_is_chosen_by_name(monkeypatch):
    """banditroute.policies.base.xǁPolicyǁ__init_subclass____mutmut_5: ``class P(Policy,
    name="p")`` registers P: ``Router(policy="p")`` builds and uses it."""
    from banditroute.policies import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the class is gone after the test

    class AlwaysLast(base.Policy, name="always_last_core4"):
        learns = False

        def propose(self, query):
            w = np.zeros(query.feasible.shape)
            w[np.flatnonzero(query.feasible)[-1]] = 1.0
            return w, np.zeros(query.feasible.shape, dtype=bool)

    assert base.registered()["always_last_core4"] is AlwaysLast
    router = br.Router([br.Profile("a"), br.Profile("b")], policy="always_last_core4", exploration=0.0, seed=0)
    assert router.probabilities({}) == {"a": 0.0, "b": 1.0}


# -- beliefs/drift.py: Page-Hinkley ---------------------------------------------------------------

def test_page_hinkley_alarms_only_strictly_above_the_threshold():
    """banditroute.beliefs.drift.xǁPageHinkleyǁupdate__mutmut_45: the alarm is ``m_down -
    min(m_down) > threshold`` (module docstring), strictly. With delta = 0, qualities 1 then 0:
    m_down = -1 then -1 + (1 - 0) = 0, so the statistic is exactly 1 (and m_up - min = 0); a
    third 0 (running mean 1/2) raises it to 1.5."""
    d = PageHinkley((1, 1), delta=0.0, threshold=1.0, min_samples=1)
    w = np.array([1.0])
    assert d.update(0, w, 1.0) == []  # m_up - min(m_up) = 1: not above 1 either
    assert d.update(0, w, 0.0) == []
    (alarm,) = d.update(0, w, 0.0)
    assert alarm[:2] == ((0, 0), "decrease") and alarm[2] == pytest.approx(1.5)


def test_page_hinkley_add_profile_adds_one_row_per_cell_array():
    """banditroute.beliefs.drift.xǁPageHinkleyǁadd_profile__mutmut_26: a new profile adds one
    row of cells (one per task type), fresh; the arrays stay (n_profiles, n_task_types)."""
    d = PageHinkley((2, 3))
    d.update(1, np.array([0.5, 0.5, 0.0]), 1.0)
    d.add_profile()
    for name in ("n_", "mean_", "up_", "up_min_", "down_", "down_min_"):
        assert getattr(d, name).shape == (3, 3), name
        assert not getattr(d, name)[2].any()
    assert d.n_[1].tolist() == [0.5, 0.5, 0.0]


# -- logs/: the writer, the parts, the journal ---------------------------------------------------

def outcome_columns(start, n, writer="w1"):
    ids = [f"{writer}-{i}" for i in range(start, start + n)]
    ts = [1_750_000_000_000_000 + i for i in range(start, start + n)]
    return [ids, ts, [writer] * n, list(range(start, start + n)), [1.0] * n, [0.001] * n, [500.0] * n,
            [0.9] * n, ["applied"] * n]


def test_group_commit_counts_every_buffered_batch(tmp_path):
    """banditroute.logs.store.xǁLogWriterǁappend_columns__mutmut_14: in group durability the
    writer commits once ``group_rows`` rows are buffered, counting every batch appended since
    the last commit (two batches of 6 reach 10)."""
    writer = br.LogWriter(tmp_path, group_rows=10, group_interval_s=3600.0, writer_id="w1")
    writer.append_columns(OutcomeRow, outcome_columns(0, 6))
    assert br.scan_table(tmp_path, "outcomes").collect().height == 0  # 6 < 10: still buffered
    writer.append_columns(OutcomeRow, outcome_columns(6, 6))
    got = br.scan_table(tmp_path, "outcomes").collect()  # committed without a flush
    assert got.height == 12 and got["seq"].sort().to_list() == list(range(12))
    writer.close()


def _footer(raw: bytes) -> bytes:
    """The Parquet footer (file metadata): ``<metadata><4-byte length>PAR1`` at the end."""
    assert raw[-4:] == b"PAR1"
    n = int.from_bytes(raw[-8:-4], "little")
    return raw[-8 - n:-8]


def test_parts_carry_column_statistics(tmp_path):
    """banditroute.logs.parts.x_write_parts__mutmut_32: each Parquet part is written with column
    statistics (min/max in the footer: readers skip parts by decision id or time without
    reading them)."""
    writer = br.LogWriter(tmp_path, durability="sync", writer_id="w1")
    writer.append_columns(OutcomeRow, outcome_columns(100, 3, writer="w1"))
    writer.close()
    (part,) = sorted((tmp_path / "outcomes").glob("date=*/part-*.parquet"))
    footer = _footer(part.read_bytes())
    assert b"w1-100" in footer and b"w1-102" in footer  # min and max of decision_id


def test_older_parts_get_nulls_for_the_columns_they_lack(tmp_path):
    """banditroute.logs.scan.x_scan_table__mutmut_35: ``scan_table`` reads parts of an older
    schema (without today's later columns) with nulls for what they lack (its docstring)."""
    router = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, durability="sync", seed=0)
    ds = [router.decide({}) for _ in range(3)]
    router.close()
    parts = sorted((tmp_path / "decisions").glob("date=*/part-*.parquet"))
    assert parts
    for part in parts:  # as written by an older version
        pl.read_parquet(part).drop("expected_quality", "shadow").write_parquet(part)
    got = br.scan_table(tmp_path, "decisions").sort("seq").collect()
    assert got["decision_id"].to_list() == [d.id for d in ds]
    assert got["expected_quality"].null_count() == 3 and got["shadow"].null_count() == 3
    assert got.columns == list(br.scan_table(tmp_path / "none", "decisions").collect_schema().names())


def test_journal_compactor_thread_is_named_after_its_writer(tmp_path):
    """banditroute.logs.journal.xǁJournalǁ__init____mutmut_77: the journal's compactor thread is
    named ``banditroute-journal-<writer>`` (what a thread dump or py-spy shows), and is gone
    after ``close``."""
    writer = br.LogWriter(tmp_path, journal=True, writer_id="wname")
    assert "banditroute-journal-wname" in {t.name for t in threading.enumerate()}
    writer.close()
    assert "banditroute-journal-wname" not in {t.name for t in threading.enumerate()}


def test_a_journal_segment_is_locked_before_it_has_its_real_name(tmp_path, monkeypatch):
    """banditroute.logs.journal.xǁ_Segmentǁ__init____mutmut_13: a segment is created under a
    hidden name and locked before it is renamed: recovery (which looks only at real names and
    takes unlocked segments) never sees a segment being born unlocked."""
    import fcntl
    import os

    real_flock = fcntl.flock
    seen = []

    def spy(fd, op):
        journal = tmp_path / "_journal"
        if journal.is_dir():
            ino = os.fstat(fd).st_ino
            seen.append((ino, {p.stat().st_ino for p in journal.glob("*.jsonl")}))
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", spy)
    writer = br.LogWriter(tmp_path, journal=True, writer_id="w1", auto_flush=False)
    writer.append_columns(OutcomeRow, outcome_columns(0, 2))
    writer.flush()
    segments = {path.stat().st_ino for _, _, path in live_segments(tmp_path)}
    writer.close()
    locked_segments = [(ino, named) for ino, named in seen if ino in segments]
    assert locked_segments  # the spy saw the segment being locked
    assert all(ino not in named for ino, named in locked_segments)


def test_a_torn_line_in_the_middle_of_a_segment_is_a_journal_error(tmp_path):
    """banditroute.logs.segments.x_read_segment__mutmut_16: a segment whose unreadable line is
    followed by readable ones is corrupt (not a torn last write): a LogError on field
    ``journal`` naming the line."""
    path = tmp_path / "w1-00000001.jsonl"
    good = encode_commit({"outcomes": [[1]]})
    path.write_bytes(good + b"{not json\n" + good)
    with pytest.raises(br.LogError, match=r"line 2 is unreadable and later lines are not") as info:
        read_segment(path)
    assert info.value.field == "journal" and info.value.value == str(path)
    path.write_bytes(good + b"{torn")  # a torn last write is just left out
    assert read_segment(path) == [{"outcomes": [[1]]}]
