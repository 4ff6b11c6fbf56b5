"""The vectorised path of ``Router.decide_batch`` for a polars DataFrame of contexts.

Validation, task lookup, allow-lists and the draws run column-wise; rows sharing a
(task type, failed allow-lists) key share one cached distribution, or, for a policy that scores
each request on its own features (``batchable``: the linear policy), the rows are scored at once
(:meth:`~banditroute.decide.pipeline.DecisionPipeline.rows`). Anything this path does not
handle goes to the row path, which also raises the exact error for an invalid row: a column of
a type JSON has no form for, or a row beyond the limits of :mod:`banditroute.config.hygiene`
(a string too long, an integer beyond int64, too many columns, a row too long as JSON; Polars
strings are UTF-8, so they hold no lone surrogate).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.hygiene import INT_MAX, INT_MIN, MAX_CONTEXT_CHARS, MAX_KEYS, MAX_STRING_CHARS
from .pipeline import Rows

__all__ = ["plan_frame"]

_INT64 = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def _within_limits(frame: pl.DataFrame) -> bool:
    """Whether every column is of a JSON type and within the context limits, column-wise."""
    if frame.width > MAX_KEYS:
        return False
    for name, dtype in frame.schema.items():
        if len(name) > MAX_STRING_CHARS:
            return False
        if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):  # written as JSON strings
            longest = frame.get_column(name).cast(pl.String).str.len_chars().max()
            if longest is not None and longest > MAX_STRING_CHARS:
                return False
        elif dtype.is_integer():
            if dtype not in _INT64:  # UInt64, Int128, ...: check the values
                column = frame.get_column(name).drop_nulls()
                if column.len() and (column.max() > INT_MAX or column.min() < INT_MIN):
                    return False
        elif dtype.is_float():
            if not frame.get_column(name).is_finite().fill_null(True).all():
                return False
        elif dtype not in (pl.Boolean, pl.Null):  # dates, decimals, objects, ...: as the row path
            return False
    return True


def plan_frame(pipeline, rng: np.random.Generator, frame: pl.DataFrame):
    """Vectorised resolution of a DataFrame of contexts: ``(texts, tasks, rows, ks)`` (``rows``:
    their entries as :class:`~banditroute.decide.pipeline.Rows`), or
    None when a row needs the general path (task model, explicit task_probs, nested or
    non-string columns, a decision timeout, or an invalid row whose error it reports)."""
    n = frame.height
    if n == 0:
        return [], [], [], []
    schema = frame.schema
    tasks_space = pipeline.tasks
    batch = pipeline.policy.batchable and not pipeline.cacheable
    if ("task_probs" in schema or pipeline.config.decision_timeout_ms is not None or pipeline.rollout.active
            or not (pipeline.cacheable or batch)
            or any(dtype.is_nested() for dtype in schema.values())
            or ("task_type" not in schema and (len(tasks_space.names) > 1 or tasks_space.task_model))
            or not _within_limits(frame)):
        return None
    if "task_type" in schema:
        if schema["task_type"] != pl.String:
            return None
        tasks = frame.get_column("task_type").replace_strict(tasks_space.index, default=None, return_dtype=pl.Int64)
        if tasks.null_count():
            return None
        tasks = tasks.to_numpy()
    else:
        tasks = np.zeros(n, dtype=np.int64)
    encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    if encoded.str.len_bytes().max() > MAX_CONTEXT_CHARS:  # bytes >= characters: the row path decides
        return None
    texts = encoded.to_list()
    failing = np.zeros((n, len(pipeline.names)), dtype=bool)
    for i, key, allowed in pipeline.feasibility.rules:  # group rows by (task, failed allow-lists)
        ok = frame.get_column(key).is_in(list(allowed)).fill_null(False).to_numpy() if key in schema else np.zeros(n, bool)
        failing[:, i] |= ~ok
    n_tasks, n_profiles = len(tasks_space.names), failing.shape[1]
    if n_profiles + int(n_tasks).bit_length() < 63:  # one int64 key per row: a 1-d unique is much cheaper
        key = tasks.astype(np.int64) | (failing.astype(np.int64) << (np.arange(n_profiles) + int(n_tasks).bit_length())).sum(axis=1)
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(np.column_stack([tasks, failing]), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows = [{k: v for k, v in frame.row(int(j), named=True).items() if v is not None} for j in first]
    if batch:  # one entry per row, the policy scoring the rows at once
        members = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(first)))[:-1]
        made = pipeline.rows(frame, tasks, list(zip(np.split(members, bounds), rows)))
        if made is None:
            return None
        entries, cdf = made
    else:
        group_entries = [pipeline.entry(int(tasks[j]), row) for j, row in zip(first, rows)]
        cdf = np.array([e.cdf for e in group_entries])[inverse]
        entries = Rows.of([group_entries[g] for g in inverse.tolist()])
    x = rng.random(n) * cdf[:, -1]
    ks = (cdf <= x[:, None]).sum(axis=1).tolist()
    return texts, tasks.tolist(), entries, ks

