"""The stable ``bucket`` column of the decisions and outcomes: a hash of ``decision_id``.

Written by the log writer in every decision and outcome row from schema version 4 (never
carried by a row: the writer computes it for each buffered batch, vectorised), and filled
by :func:`~banditroute.logs.scan.scan_table` for the rows of older logs. ``ope`` sums its
estimates per bucket, partitions the rounds by ``bucket % P`` and resamples buckets; the
definition is :mod:`ope.buckets`' (kept in step by ``tests/test_log_bucket.py``; ``ope`` is not
imported here because importing it loads scikit-learn): the CRC-32 of the UTF-8 id through
MurmurHash3's ``fmix32``, an integer in ``[0, 2**32)``, the same on every machine and version.

>>> pl.DataFrame({"decision_id": ["w-0", "w-1"]}).select(bucket_column()).to_series().to_list()
[4023210756, 1999659164]
"""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl

__all__ = ["bucket_column", "fill_bucket", "BUCKET_DTYPE"]

BUCKET_DTYPE = pl.Int64


def _buckets(ids: pl.Series) -> pl.Series:
    h = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in ids.to_list()), dtype=np.uint32, count=ids.len())
    with np.errstate(over="ignore"):  # fmix32, wrapping uint32 arithmetic
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return pl.Series("bucket", h.astype(np.int64), dtype=BUCKET_DTYPE)


def bucket_column() -> pl.Expr:
    """``bucket`` computed from ``decision_id`` (every row)."""
    return pl.col("decision_id").map_batches(_buckets, return_dtype=BUCKET_DTYPE).alias("bucket")


def _fill(both: pl.Series) -> pl.Series:
    bucket = both.struct.field("bucket")
    missing = bucket.is_null()
    if not missing.any():
        return bucket
    ids = both.struct.field("decision_id")
    return bucket.scatter(missing.arg_true(), _buckets(ids.filter(missing)))


def fill_bucket() -> pl.Expr:
    """``bucket``, computed where it is null (rows of logs older than schema version 4).

    >>> df = pl.DataFrame({"decision_id": ["w-0", "w-1"], "bucket": [7, None]})
    >>> df.select(fill_bucket()).to_series().to_list()
    [7, 1999659164]
    """
    return (pl.struct("bucket", "decision_id").map_batches(_fill, return_dtype=BUCKET_DTYPE).alias("bucket"))
