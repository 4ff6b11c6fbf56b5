"""Import Vowpal Wabbit decision-service JSON (DSJSON) lines as :class:`LoggedFeedback`.

VW's conventions: ``_label_Action`` is the 1-based position of the executed action in
``c._multi`` (``_labelIndex`` the 0-based one), ``_label_cost`` is the *cost* (the reward is
its negative), ``_label_probability`` the logged propensity, and ``a`` / ``p`` list 1-based
actions with their probabilities (the executed one first). Actions are named by a feature of
their ``_multi`` entry (``{"a": {"id": "small"}}`` by default, what ``banditroute export``
writes), else by their position. Lines without a label (no ``_label_cost``) are skipped.

Pure JSON: neither Vowpal Wabbit nor banditroute is imported.

>>> line = ('{"_label_cost":-1.0,"_label_probability":0.8,"_label_Action":2,"_labelIndex":1,'
...         '"a":[2,1],"p":[0.8,0.2],"c":{"s":{"tenant":"acme"},"t":{"code":1.0},'
...         '"_multi":[{"a":{"id":"small"}},{"a":{"id":"large"}}]}}')
>>> fb = feedback_from_dsjson([line])
>>> fb.action_names, fb.actions.tolist(), fb.rewards.tolist(), fb.propensities.tolist()
(('small', 'large'), [1], [1.0], [0.8])
>>> fb.contexts.to_dicts(), fb.logging_distribution.tolist()
([{'tenant': 'acme', 'task_type': 'code'}], [[0.2, 0.8]])
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ope.errors import InvalidFeedbackError, LogsNotFoundError
from ope.feedback import LoggedFeedback

__all__ = ["feedback_from_dsjson"]


def _lines(source) -> Iterable[str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise LogsNotFoundError("path", f"path is not a DSJSON file: {source}")
        with open(path, encoding="utf-8") as fh:
            yield from fh
    else:
        yield from source


def _bad(n: int, problem: str) -> InvalidFeedbackError:
    return InvalidFeedbackError("dsjson", f"dsjson line {n}: {problem}")


def _number(obj: dict, key: str, n: int) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(n, f"{key} must be a number, got {value!r}")
    return float(value)


def _context(shared: dict) -> dict:
    row: dict = {}
    for key, value in shared.items():
        if key.startswith("_"):
            continue
        if key == "t" and isinstance(value, dict):
            weights = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if weights:
                row["task_type"] = max(weights, key=weights.get)
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, (dict, list)) and not k.startswith("_"):
                    row[k if key == "s" else f"{key}.{k}"] = v
        elif not isinstance(value, list):
            row[key] = value
    return row


def feedback_from_dsjson(
    source: str | os.PathLike | Iterable[str],
    *,
    action_key: Sequence[str] = ("a", "id"),
    contexts: bool = True,
    cohorts: Sequence[str] = ("task_type",),
) -> LoggedFeedback:
    """Read DSJSON lines (a file path or an iterable of lines) as logged feedback.

    Parameters
    ----------
    source : path or iterable of str
        One JSON object per line; blank lines are ignored.
    action_key : (namespace, feature)
        Where a ``_multi`` entry names its action (``{"a": {"id": "small"}}``). If no entry has
        it, actions are named by their 0-based position in ``_multi``.
    contexts : bool
        Keep the shared features as :attr:`LoggedFeedback.contexts` (namespace ``s`` as plain
        columns, the heaviest task of ``t`` as ``task_type``, others as ``ns.key``).
    cohorts : sequence of str
        Context columns to keep as cohorts (those present).

    Returns
    -------
    LoggedFeedback
        Rewards are ``-_label_cost``; the logging distribution comes from ``a``/``p`` when
        every line has them.

    Raises
    ------
    InvalidFeedbackError
        Naming the line: malformed JSON, missing or inconsistent label keys, an action
        outside ``_multi``, unnamed actions mixed with named ones.
    """
    ns, feature = action_key
    actions, rewards, props, rows, dists = [], [], [], [], []
    naming = None
    names: dict[str, int] = {}
    has_dist = True
    for n, line in enumerate(_lines(source), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(n, f"is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise _bad(n, "must be a JSON object")
        if "_label_cost" not in obj:
            continue
        cost, prob = _number(obj, "_label_cost", n), _number(obj, "_label_probability", n)
        c = obj.get("c")
        multi = c.get("_multi") if isinstance(c, dict) else None
        if not isinstance(multi, list) or not multi:
            raise _bad(n, "c._multi must be a non-empty list of actions")
        if "_label_Action" in obj:
            chosen = int(_number(obj, "_label_Action", n)) - 1
            if "_labelIndex" in obj and int(_number(obj, "_labelIndex", n)) != chosen:
                raise _bad(n, f"_labelIndex {obj['_labelIndex']} must be _label_Action - 1 ({chosen})")
        elif "_labelIndex" in obj:
            chosen = int(_number(obj, "_labelIndex", n))
        else:
            raise _bad(n, "has _label_cost but neither _label_Action nor _labelIndex")
        if not 0 <= chosen < len(multi):
            raise _bad(n, f"_label_Action {chosen + 1} must be in [1, {len(multi)}] (the _multi actions)")
        line_names = []
        for i, item in enumerate(multi):
            value = item.get(ns, {}).get(feature) if isinstance(item, dict) and isinstance(item.get(ns), dict) else None
            line_names.append(None if value is None else str(value))
        unnamed = [v is None for v in line_names]
        line_named = not any(unnamed)
        if (any(unnamed) and not all(unnamed)) or (naming is not None and naming != line_named):
            raise _bad(n, f"every _multi entry must name its action with {ns}.{feature} or none may")
        naming = line_named
        if not line_named:
            line_names = [str(i) for i in range(len(multi))]
        cols = [names.setdefault(name, len(names)) for name in line_names]
        actions.append(cols[chosen])
        rewards.append(-cost + 0.0)
        props.append(prob)
        a, p = obj.get("a"), obj.get("p")
        if has_dist and isinstance(a, list) and isinstance(p, list) and len(a) == len(p):
            try:
                dists.append({cols[int(ai) - 1]: float(pi) for ai, pi in zip(a, p)})
            except (IndexError, TypeError, ValueError):
                raise _bad(n, "a must list 1-based _multi positions and p their probabilities") from None
        else:
            has_dist = False
        if contexts or cohorts:
            rows.append(_context(c))
    if not actions:
        raise InvalidFeedbackError("dsjson", "dsjson has no labelled line (no _label_cost)")
    k = len(names)
    dist = None
    if has_dist:
        dist = np.zeros((len(actions), k))
        for i, row in enumerate(dists):
            for j, p in row.items():
                dist[i, j] = p
    frame = pl.DataFrame(rows, infer_schema_length=None, strict=False) if rows else None
    if frame is not None and frame.width == 0:
        frame = None
    keep = [c for c in cohorts if frame is not None and c in frame.columns]
    return LoggedFeedback(
        actions=np.asarray(actions, dtype=np.int64),
        rewards=np.asarray(rewards, dtype=np.float64),
        propensities=np.asarray(props, dtype=np.float64),
        n_actions=k,
        action_names=tuple(names),
        contexts=frame if contexts else None,
        cohorts=frame.select(keep) if keep else None,
        logging_distribution=dist,
    )
