"""Requests: validate a context once, at the boundary, and resolve its task-type posterior.

The task-type posterior ``p(t | x)`` comes from, in this order: an explicit ``task_type``
label (one-hot), an explicit ``task_probs`` mapping supplied by the caller, the router's task
model (anything with ``predict_proba`` over context dicts, see :class:`TaskClassifier`), or
the single implicit task type when the router has only one. Anything else is an error.

>>> space = TaskSpace(["chat", "code"])
>>> space.parse({"task_type": "code", "prompt_tokens": 812})
('{"task_type":"code","prompt_tokens":812}', 1)
>>> space.parse({"task_type": "poetry"})
Traceback (most recent call last):
...
banditroute.errors.InvalidRequestError: context.task_type must be one of ['chat', 'code'], got 'poetry'
"""

from __future__ import annotations

from types import MappingProxyType

import json
import math
from json.encoder import c_make_encoder, encode_basestring
from collections.abc import Mapping, Sequence

import numpy as np

from ..config.hygiene import check_context, invalid, plain
from ..errors import ConfigError, InvalidRequestError

__all__ = ["TaskSpace", "TaskClassifier"]

# A context as compact JSON text, NaN and infinity refused. JSONEncoder.encode builds a C encoder
# (and a closure) on every call; this one is built once (without the circular-reference check: a
# mapping that contains itself ends in a RecursionError, as one nested too deeply does).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_dumps = _ENCODER.encode
try:
    _encode = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False)
except TypeError:  # no C accelerator (c_make_encoder is None), or another signature: encode as is
    pass
else:
    def _dumps(context: dict) -> str:  # noqa: F811 - the same encoder, built once
        return "".join(_encode(context, 0))


class TaskClassifier:
    """A task-type posterior from a scikit-learn classifier over context dicts.

    ``estimator`` is anything with ``predict_proba(list_of_context_dicts)`` and ``classes_``,
    for example ``make_pipeline(DictVectorizer(), LogisticRegression())``, ideally calibrated
    (``CalibratedClassifierCV``). Probabilities are re-ordered to the router's task types;
    task types the classifier does not know get probability 0.

    >>> from sklearn.feature_extraction import DictVectorizer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> X = [{"prompt_tokens": n, "has_code": int(n % 2)} for n in range(40)]
    >>> y = ["code" if x["has_code"] else "chat" for x in X]
    >>> clf = TaskClassifier(make_pipeline(DictVectorizer(), LogisticRegression())).fit(X, y)
    >>> clf.predict_proba([{"prompt_tokens": 3, "has_code": 1}], ["chat", "code"]).argmax()
    np.int64(1)
    """

    def __init__(self, estimator):
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError("task_model", estimator, "must have predict_proba")
        self.estimator = estimator

    def fit(self, contexts: Sequence[Mapping], labels: Sequence[str]) -> "TaskClassifier":
        """Fit a clone of the estimator on labelled history and return a new classifier."""
        from sklearn.base import clone

        features = [_features(c) for c in contexts]
        return TaskClassifier(clone(self.estimator).fit(features, list(labels)))

    def predict_proba(self, contexts: Sequence[Mapping], task_types: Sequence[str]) -> np.ndarray:
        """Posterior of shape (n_contexts, n_task_types), aligned with ``task_types``."""
        raw = np.asarray(self.estimator.predict_proba([_features(c) for c in contexts]), dtype=np.float64)
        out = np.zeros((raw.shape[0], len(task_types)))
        index = {t: i for i, t in enumerate(task_types)}
        for j, cls in enumerate(self.estimator.classes_):
            if cls in index:
                out[:, index[cls]] = raw[:, j]
        total = out.sum(axis=1, keepdims=True)
        bad = ~np.isfinite(out).all(axis=1) | (total[:, 0] <= 0)
        if bad.any():  # the value: what the model said for the first such context
            said = {str(c): float(p) for c, p in zip(self.estimator.classes_, raw[int(np.argmax(bad))])}
            raise InvalidRequestError("task_model", said, "returned probabilities that are not finite or "
                                      "put no mass on the router's task types")
        return out / total


def _why_not_json(context: Mapping, exc: Exception) -> InvalidRequestError:
    for key, value in context.items():
        if isinstance(value, float) and not math.isfinite(value):
            return InvalidRequestError(f"context.{key}", value, "must be a finite number")
    return invalid(InvalidRequestError, "context", dict(context),
                   f"must be JSON-serialisable without NaN or infinity ({exc})")


def _features(context: Mapping) -> dict:
    return {k: v for k, v in context.items() if k not in ("task_type", "task_probs")}


class TaskSpace:
    """The router's task types and the rule that maps a context to its task-type posterior."""

    def __init__(self, task_types: Sequence[str], task_model: TaskClassifier | None = None):
        self.names = list(task_types)
        self.index = {t: i for i, t in enumerate(self.names)}
        self.task_model = task_model
        self._derive()

    def _derive(self) -> None:
        eye = np.eye(len(self.names))
        self._one_hot = list(eye)
        self._one_hot_lists = [row.tolist() for row in eye]
        self._one_hot_views = [MappingProxyType(dict(zip(self.names, row))) for row in self._one_hot_lists]

    # A task is the index of a known task type (int: the common, fast case) or a posterior
    # (array). These are the only places that tell the two apart.
    def probs(self, task) -> np.ndarray:
        """The task-type posterior as an array of shape (n_task_types,)."""
        return self._one_hot[task] if type(task) is int else task

    def probs_rows(self, tasks: np.ndarray) -> np.ndarray:
        """The one-hot posteriors of many task indices, shape (n, n_task_types)."""
        return np.eye(len(self.names))[np.asarray(tasks, dtype=np.int64)]

    def as_list(self, task) -> list:
        """The posterior as a list (the log's ``task_probs``)."""
        return self._one_hot_lists[task] if type(task) is int else task.tolist()

    @staticmethod
    def all_indices(tasks: list) -> bool:
        """Whether every task is an index (the batch paths then map in C)."""
        return all(type(t) is int for t in tasks)

    def as_lists(self, tasks: list, indices: bool) -> list:
        """:meth:`as_list` of many tasks (``indices``: :meth:`all_indices` of them)."""
        if indices:
            return list(map(self._one_hot_lists.__getitem__, tasks))
        return list(map(self.as_list, tasks))

    def view(self, task) -> Mapping:
        """The posterior as a read-only ``{task_type: p}`` (the decision's ``task_probs``)."""
        if type(task) is int:
            return self._one_hot_views[task]
        return MappingProxyType(dict(zip(self.names, task.tolist())))

    def views(self, tasks: list, indices: bool) -> list:
        """:meth:`view` of many tasks (``indices``: :meth:`all_indices` of them)."""
        if indices:
            return list(map(self._one_hot_views.__getitem__, tasks))
        return list(map(self.view, tasks))

    @staticmethod
    def key(task):
        """A hashable cache key of the task."""
        return task if type(task) is int else task.tobytes()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_one_hot_views")  # read-only mapping views do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._derive()

    def parse(self, context) -> tuple[str, int | np.ndarray]:
        """Validate one context; return its JSON text and its task (an index, or a posterior).

        The JSON encoder refuses NaN, infinity and what JSON cannot hold; the limits of what
        the log can hold (valid Unicode, depth, sizes: :mod:`banditroute.config.hygiene`) are
        checked by a cheap test on a flat context, by a walk of any other."""
        if type(context) is not dict and not isinstance(context, Mapping):
            raise invalid(InvalidRequestError, "context", context, "must be a mapping of field -> value")
        try:
            text = _dumps(context)
        except (TypeError, ValueError, RecursionError) as exc:
            check_context(context)  # too deep to encode, an integer too long to print: named here
            raise _why_not_json(context, exc) from None
        if not plain(context, text):
            check_context(context, text)
        return text, self.task_of(context)

    def task_of(self, context: Mapping) -> int | np.ndarray:
        label = context.get("task_type")
        if label is not None:
            i = self.index.get(label) if isinstance(label, str) else None
            if i is None:
                raise invalid(InvalidRequestError, "context.task_type", label, f"must be one of {self.names}")
            return i
        probs = context.get("task_probs")
        if probs is not None:
            return self._explicit_probs(probs)
        if self.task_model is not None:
            return self.task_model.predict_proba([context], self.names)[0]
        if len(self.names) == 1:
            return 0
        raise InvalidRequestError("context.task_type",
                                  problem=f"is required (one of {self.names}) when no task_model is configured")

    def _explicit_probs(self, probs) -> np.ndarray:
        if not isinstance(probs, Mapping):
            raise InvalidRequestError("context.task_probs", probs, "must be a mapping task_type -> probability")
        out = np.zeros(len(self.names))
        for name, p in probs.items():
            if name not in self.index:
                raise InvalidRequestError("context.task_probs", name, f"keys must be among {self.names}")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise InvalidRequestError(f"context.task_probs.{name}", p, "must be a probability in [0, 1]")
            out[self.index[name]] = p
        if abs(out.sum() - 1.0) > 1e-6:
            raise InvalidRequestError("context.task_probs", dict(probs), "must sum to 1")
        nonzero = np.flatnonzero(out)
        return int(nonzero[0]) if nonzero.size == 1 else out / out.sum()
