"""A request as the vector the contextual policies regress on.

For task types ``t`` with posterior ``p`` (one-hot for a labelled request), numeric features
``f_i`` (each divided by its scale) and hashed fields ``h`` (:class:`~banditroute.config.features.Text`,
:class:`~banditroute.config.features.Category`)::

    x = [(1, f_1, ..., f_F) ⊗ p,  bucket counts of h_1 (unit norm),  ...,  of h_H]

(``(1, f) ⊗ p`` in that order: ``p_1 .. p_T, f_1 p_1 .. f_1 p_T, ...``)

so every task type gets its own intercept and slopes on the numeric features, and each hashed
field its own ``2**bits`` buckets (shared by the task types). A bucket is
``crc32(n-gram, seed=crc32(field)) mod 2**bits`` of the UTF-8 bytes: the same on every machine
and in every version (Python's ``hash`` and polars' ``Expr.hash`` are not).

>>> from banditroute.config.features import Category, Text
>>> f = Featurizer(["chat"], (("tokens", 1000.0), ("prompt", Text(bits=4)), ("tenant", Category(bits=2))))
>>> f.dim
22
>>> x = f.one({"tokens": 500, "prompt": "Fix the bug", "tenant": "acme"}, np.array([1.0]))
>>> x[:2].tolist(), round(float(np.square(x[2:18]).sum()), 12), x[18:].tolist()
([1.0, 0.5], 1.0, [1.0, 0.0, 0.0, 0.0])
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from ..config.features import Category, Text
from ..errors import InvalidRequestError

__all__ = ["Featurizer", "buckets"]

_WORD = re.compile(r"\w+")


def _grams(spec: Text, text: str) -> list[str]:
    if spec.lowercase:
        text = text.lower()
    if spec.analyzer == "char":
        n = spec.ngrams
        return [text[i:i + n] for i in range(max(len(text) - n + 1, 1))] if text else []
    words = _WORD.findall(text)
    grams = list(words)
    for n in range(2, spec.ngrams + 1):
        grams += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return grams


def buckets(field: str, spec: Text | Category, value) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero buckets of one field's value: ``(indices, values)`` within the field's block."""
    seed = zlib.crc32(field.encode("utf-8", "surrogatepass"))
    mask = spec.size - 1
    if isinstance(spec, Category):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidRequestError(f"context.{field}", value, "must be a string or an integer (a category feature)")
        return np.array([zlib.crc32(str(value).encode("utf-8", "surrogatepass"), seed) & mask]), np.ones(1)
    if not isinstance(value, str):
        raise InvalidRequestError(f"context.{field}", value, "must be a string (a text feature)")
    hashed = [zlib.crc32(g.encode("utf-8", "surrogatepass"), seed) & mask for g in _grams(spec, value)]
    if not hashed:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    index, counts = np.unique(np.array(hashed, dtype=np.int64), return_counts=True)
    return index, counts / math.sqrt(float(np.square(counts).sum()))


class Featurizer:
    """Turns contexts into feature vectors (see the module docstring).

    Parameters
    ----------
    task_types : sequence of str
    features : sequence of (field, scale | Text | Category)
    """

    def __init__(self, task_types: Sequence[str], features: Sequence[tuple]):
        self.n_tasks = len(task_types)
        self.numeric = tuple((str(n), float(s)) for n, s in features if not isinstance(s, (Text, Category)))
        self.n_dense = self.n_tasks * (1 + len(self.numeric))
        self.hashed = []
        offset = self.n_dense
        for name, spec in features:
            if isinstance(spec, (Text, Category)):
                self.hashed.append((name, spec, offset))
                offset += spec.size
        self.dim = offset

    def dense(self, context: Mapping, task_probs: np.ndarray) -> np.ndarray:
        """The task-interacted numeric part, shape (n_dense,)."""
        values = []
        for name, scale in self.numeric:
            v = context.get(name)
            if v is None:  # absent (or null, as a DataFrame's null): 0
                v = 0.0
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidRequestError(f"context.{name}", v, "must be a finite number (a contextual feature)")
            values.append(v / scale)
        return np.multiply.outer(np.array([1.0, *values]), np.asarray(task_probs, dtype=np.float64)).ravel()

    def sparse(self, context: Mapping) -> tuple[np.ndarray, np.ndarray]:
        """The hashed part as ``(indices, values)`` in the full vector's coordinates (sorted)."""
        idx, val = [], []
        for name, spec, offset in self.hashed:
            value = context.get(name)
            if value is None:
                continue
            i, v = buckets(name, spec, value)
            idx.append(i + offset)
            val.append(v)
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(idx), np.concatenate(val)

    def one(self, context: Mapping, task_probs: np.ndarray) -> np.ndarray:
        """The full vector, shape (dim,)."""
        x = np.zeros(self.dim)
        x[:self.n_dense] = self.dense(context, task_probs)
        if self.hashed:
            idx, val = self.sparse(context)
            x[idx] = val
        return x

    def frame(self, frame: pl.DataFrame, task_probs: np.ndarray) -> np.ndarray | None:
        """The vectors of a DataFrame's rows, shape (n, dim), column-wise; None when a row needs
        the row path (a hashed field, or a feature column that is not numeric: the row path
        raises the exact error). ``task_probs`` has shape (n, n_tasks). Each row equals
        :meth:`one` of that row, bit for bit."""
        if self.hashed:
            return None
        n = frame.height
        columns = [np.ones(n)]
        for name, scale in self.numeric:
            if name not in frame.schema:
                columns.append(np.zeros(n))
                continue
            dtype = frame.schema[name]
            if not (dtype.is_integer() or dtype.is_float() or dtype == pl.Null):
                return None
            col = frame.get_column(name).cast(pl.Float64).fill_null(0.0).to_numpy()
            if not np.isfinite(col).all():
                return None
            columns.append(col / scale)
        values = np.column_stack(columns)  # (n, 1 + F)
        return (values[:, :, None] * np.asarray(task_probs, dtype=np.float64)[:, None, :]).reshape(n, -1)
