"""The ``bucket`` column (schema version 4): a stable hash of ``decision_id`` in every decision and
outcome row, the same in ``banditroute`` (the writer) and ``ope`` (readers of older logs), and
computed on read for logs written before it existed."""

import zlib

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

import banditroute as br
from banditroute.logs.buckets import fill_bucket
from ope.buckets import bucket_of, stable_bucket


def reference_bucket(decision_id: str) -> int:
    """The documented definition, in plain Python integers: CRC-32 of the UTF-8 bytes, then fmix32."""
    h = zlib.crc32(decision_id.encode("utf-8"))
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=30))
def test_writer_and_ope_compute_the_documented_hash(ids):
    expected = [reference_bucket(i) for i in ids]
    assert stable_bucket(ids).tolist() == expected
    assert [bucket_of(i) for i in ids] == expected
    frame = pl.DataFrame({"decision_id": ids, "bucket": [None] * len(ids)}, schema={"decision_id": pl.String,
                                                                                  "bucket": pl.Int64})
    assert frame.select(fill_bucket()).to_series().to_list() == expected


def test_buckets_are_uniform_over_sequential_ids():
    """Ids of a few writers numbered 0, 1, 2, ...: ``bucket % K`` is uniform (chi-square at 1e-4)
    and consecutive ids fall in the same of 2 folds half the time (no pattern along time)."""
    ids = [f"{w}-{i}" for w in ("a1b2c3", "d4e5f6", "0f9e8d") for i in range(20_000)]
    b = stable_bucket(ids)
    for k in (2, 7, 64, 1024):
        counts = np.bincount(b % k, minlength=k)
        stat = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
        assert stat < chi2.ppf(1 - 1e-4, k - 1), (k, stat)
    same = float(((b[1:] % 2) == (b[:-1] % 2)).mean())
    assert abs(same - 0.5) < 4 * 0.5 / np.sqrt(b.size)


@pytest.mark.parametrize("journal", [False, True], ids=["parquet", "journal"])
def test_every_decision_and_outcome_row_carries_its_bucket(tmp_path, journal):
    router = br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c")], task_types=["x", "y"],
                       log_dir=tmp_path, log_journal=journal, seed=0, max_escalations=1)
    one = [router.decide({"task_type": "x"}) for _ in range(20)]
    listed = router.decide_batch([{"task_type": "y"}] * 30)
    framed = router.decide_batch(pl.DataFrame({"task_type": ["x"] * 40}))
    child = router.escalate(one[0].id, reason="verifier_failed")
    for d in [*one, *listed, *framed, child]:
        router.record(d.id, quality=1.0)
    router.flush()
    if journal:  # acknowledged, not yet compacted: read from the journal segment
        _check_buckets(tmp_path, 91)
    router.close()
    _check_buckets(tmp_path, 91)


def _check_buckets(log_dir, n):
    decisions = br.scan_table(log_dir, "decisions").collect()
    outcomes = br.scan_table(log_dir, "outcomes").collect()
    assert decisions.height == n and outcomes.height == n
    for frame in (decisions, outcomes):
        assert frame.get_column("bucket").to_list() == [reference_bucket(i) for i in frame.get_column("decision_id")]
    assert outcomes.join(decisions, on="decision_id").filter(pl.col("bucket") != pl.col("bucket_right")).height == 0


def test_logs_of_version_3_get_the_bucket_computed_on_read(tmp_path):
    """Parts written before the column existed (no ``bucket``, schema_version 3) next to new ones:
    scan_table gives every row its bucket; the stored ones are kept as they are."""
    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["x"], log_dir=tmp_path, seed=1)
    for d in router.decide_batch([{"task_type": "x"}] * 50):
        router.record(d.id, quality=0.0)
    router.close()
    for part in (tmp_path / "decisions").glob("date=*/*.parquet"):
        old = pl.read_parquet(part).drop("bucket").with_columns(pl.lit(3, dtype=pl.Int32).alias("schema_version"))
        old.write_parquet(part)
    new = br.Router([br.Profile("a"), br.Profile("b")], task_types=["x"], log_dir=tmp_path, seed=2)
    for d in new.decide_batch([{"task_type": "x"}] * 10):
        new.record(d.id, quality=1.0)
    new.close()
    decisions = br.scan_table(tmp_path, "decisions").collect()
    assert decisions.height == 60
    assert sorted(decisions.get_column("schema_version").unique().to_list()) == [3, 4]
    assert decisions.get_column("bucket").to_list() == [reference_bucket(i) for i in decisions.get_column("decision_id")]
    # only the bucket is filled: another missing column of an old part still reads as null
    assert decisions.filter(pl.col("schema_version") == 3).get_column("bucket").null_count() == 0
