"""The stable bucket of a decision: a hash of its id that no library version changes.

Every decision row of schema version 4 carries it (column ``bucket``); for older logs it is
computed on read from ``decision_id``. Estimates reduce to sums per bucket (:mod:`ope.stats`),
the bootstrap of a distributed evaluation resamples buckets, and ``bucket % K`` splits the
rounds into ``K`` folds or partitions the same way on every machine.

The definition, reproducible in any language: the CRC-32 (zlib, IEEE) of the UTF-8 bytes of
``decision_id``, passed through MurmurHash3's 32-bit finaliser (``fmix32``, a bijection that
spreads the CRC's linear structure over every bit), as an integer in ``[0, 2**32)``. Polars'
``Expr.hash`` is not used: it is documented as unstable across versions.

>>> stable_bucket(["w-0", "w-1"]).tolist()
[4023210756, 1999659164]
>>> int(stable_bucket(["w-0"])[0]) == bucket_of("w-0")
True
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import polars as pl

__all__ = ["stable_bucket", "bucket_of", "fmix32", "bucket_expr", "filled_bucket", "BUCKET_DTYPE"]

#: the stored dtype of ``bucket`` (Int64: every engine reads it; values fit in 32 bits)
BUCKET_DTYPE = pl.Int64


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser on uint32 values (wrapping arithmetic).

    >>> fmix32(np.array([0, 1], dtype=np.uint32)).tolist()
    [0, 1364076727]
    """
    h = np.asarray(h, dtype=np.uint32).copy()
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def bucket_of(decision_id: str) -> int:
    """The bucket of one decision id (see the module docstring)."""
    return int(fmix32(np.array([zlib.crc32(decision_id.encode("utf-8"))], dtype=np.uint32))[0])


def stable_bucket(ids: Iterable[str]) -> np.ndarray:
    """The buckets of decision ids, as int64 (a CRC per id, the finaliser vectorised)."""
    crc = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in ids), dtype=np.uint32)
    return fmix32(crc).astype(np.int64)


def _series_bucket(ids: pl.Series) -> pl.Series:
    return pl.Series(ids.name, stable_bucket(ids.to_list()), dtype=BUCKET_DTYPE)


def bucket_expr(column: str = "decision_id") -> pl.Expr:
    """An expression computing the bucket of ``column`` (ids), for rows that do not carry one.

    >>> pl.DataFrame({"decision_id": ["w-0"]}).select(bucket_expr()).item() == bucket_of("w-0")
    True
    """
    return pl.col(column).map_batches(_series_bucket, return_dtype=BUCKET_DTYPE).alias("bucket")


def _fill_buckets(both: pl.Series) -> pl.Series:
    bucket, missing = both.struct.field("bucket"), both.struct.field("bucket").is_null()
    ids = both.struct.field("decision_id")
    return bucket.scatter(missing.arg_true(), stable_bucket(ids.filter(missing).to_list())) if missing.any() else bucket


def filled_bucket() -> pl.Expr:
    """Each row's stable ``bucket``: stored (schema 4), else computed from the id (older logs).

    >>> pl.DataFrame({"decision_id": ["w-0", "w-1"], "bucket": [7, None]}).select(filled_bucket()).item(1, 0)
    1999659164
    """
    return pl.struct("bucket", "decision_id").map_batches(_fill_buckets, BUCKET_DTYPE, is_elementwise=True).alias("bucket")
