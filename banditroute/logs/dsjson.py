"""Export joined logs as Vowpal Wabbit decision-service JSON (DSJSON) lines.

The ``banditroute export`` command (:mod:`banditroute.cli.export`) calls :func:`export_dsjson`.

One line per decision with a counted outcome, in VW's conventions (checked against the
binding's own DSJSON parser)::

    {"_label_cost": -reward, "_label_probability": propensity, "_label_Action": j + 1,
     "_labelIndex": j, "Timestamp": "...Z", "Version": "1", "EventId": decision_id,
     "a": [j + 1, <the other actions, 1-based>], "p": [p_j, <theirs>],
     "c": {"s": {request fields}, "t": {task: p}, "_multi": [{"a": {"id": name, ...}}, ...]}}

- the label keys come first: VW's parser silently drops a label whose keys follow ``"c"``;
- ``_label_Action`` is 1-based, ``_labelIndex`` 0-based (the parser places the label with it);
- cost is the negative reward (VW minimises cost);
- ``_multi`` holds the profiles that were feasible for the decision (and the executed one),
  in the logged order; ``a``/``p`` start with the executed action;
- features are those :class:`~banditroute.policies.vw.VWPolicy` uses, so a model trained on the
  file and the live policy see the same hashed features (profile cost/latency/tags only when
  the profiles are given, e.g. from the routes file).

>>> line = dsjson_line(event_id="w-0", ts_us=0, context={"task_type": "code", "tenant": "acme"},
...                    actions=[{"a": {"id": "small"}}, {"a": {"id": "large"}}], chosen=1,
...                    probabilities=[0.25, 0.75], reward=1.0)
>>> line[:91]
'{"_label_cost":-1.0,"_label_probability":0.75,"_label_Action":2,"_labelIndex":1,"Timestamp"'
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.profiles import Profile
from ..errors import ConfigError, LogError
from ..policies.vw import action_namespaces, shared_namespaces

__all__ = ["dsjson_line", "export_dsjson", "ExportResult"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _timestamp(ts_us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=int(ts_us))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dsjson_line(*, event_id: str, ts_us: int, context: Mapping, actions: Sequence[Mapping], chosen: int,
                probabilities: Sequence[float], reward: float, task_probs: Mapping[str, float] | None = None) -> str:
    """One DSJSON line (labels first).

    Parameters
    ----------
    event_id : str
        The decision id (``EventId``).
    ts_us : int
        Decision time, microseconds since the epoch (``Timestamp``, ISO 8601 UTC).
    context : mapping
        The request; its features go to the shared namespaces ``s`` and ``t``.
    actions : sequence of mapping
        Each action's namespaces (``{"a": {"id": name, ...}}``), in ``_multi`` order.
    chosen : int
        0-based position of the executed action in ``actions``.
    probabilities : sequence of float
        Probability of each action (aligned with ``actions``).
    reward : float
        The outcome's reward (written as cost ``-reward``).
    task_probs : mapping, optional
        Task-type weights for ``t`` when the context carries neither ``task_type`` nor
        ``task_probs`` (a task classifier was used).
    """
    shared = shared_namespaces(context)
    if not shared["t"] and task_probs:
        shared["t"] = {k: float(v) for k, v in task_probs.items() if v}
    order = [chosen] + [i for i in range(len(actions)) if i != chosen]
    event = {
        "_label_cost": -float(reward) + 0.0,  # + 0.0: no "-0.0"
        "_label_probability": float(probabilities[chosen]),
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "Timestamp": _timestamp(ts_us),
        "Version": "1",
        "EventId": event_id,
        "a": [i + 1 for i in order],
        "p": [float(probabilities[i]) for i in order],
        "c": {**shared, "_multi": [dict(a) for a in actions]},
    }
    return json.dumps(event, separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What :func:`export_dsjson` wrote.

    >>> ExportResult(n_written=3, n_skipped=1, path="x.json").n_written
    3
    """

    n_written: int
    n_skipped: int
    path: str


def export_dsjson(log_dir: str | os.PathLike, out: str | os.PathLike, *, profiles: Sequence[Profile] = (),
                  wait_window: dt.timedelta | None = None, default_reward: float | None = None,
                  duplicates: str = "first") -> ExportResult:
    """Write the decisions under ``log_dir`` joined with their outcomes as DSJSON lines.

    Parameters
    ----------
    log_dir : path
        banditroute's log directory.
    out : path
        Output file (overwritten; written to a temporary file and renamed). ``"-"`` is stdout.
    profiles : sequence of Profile
        Gives the action features (cost, latency, tags) of known profiles; otherwise an
        action carries only its ``id``.
    wait_window, default_reward, duplicates
        The outcome join (see :func:`ope.logs.join_logs`). Decisions whose reward is null
        (no counted outcome, or an outcome without quality) are skipped and counted.

    Returns
    -------
    ExportResult

    Examples
    --------
    >>> export_dsjson("/nonexistent", "/tmp/x.json")
    Traceback (most recent call last):
    ...
    banditroute.errors.LogError: log_dir has no decisions to export, got '/nonexistent'
    """
    import polars as pl

    from ope.errors import LogsNotFoundError, OPEError
    from ope.logs import join_logs

    known = {p.name: action_namespaces(p) for p in profiles}
    try:
        joined = join_logs(log_dir, wait_window=wait_window, default_reward=default_reward, duplicates=duplicates)
        frame = (joined.select("row_index", "decision_id", pl.col("ts").dt.epoch("us").alias("ts_us"), "context",
                               "task_types", "task_probs", "profiles", "probabilities", "profile", "propensity",
                               "excluded", "reward")
                 .sort("ts_us", "row_index").collect(engine="streaming"))
    except LogsNotFoundError:
        raise LogError("log_dir", str(log_dir), "has no decisions to export") from None
    except OPEError as exc:  # a join option out of range (e.g. a NaN default_reward)
        raise ConfigError(exc.field, problem=f"is invalid ({exc})") from None
    n_written = n_skipped = 0
    target = None if str(out) == "-" else os.fspath(out)
    tmp = None if target is None else os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.tmp")
    try:
        fh = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    except OSError as exc:
        raise LogError("out", str(out), f"cannot be written ({exc.strerror})") from None
    try:
        for row in frame.iter_rows(named=True):
            if row["reward"] is None or row["propensity"] is None or not row["propensity"] > 0:
                n_skipped += 1
                continue
            excluded = json.loads(row["excluded"]) if row["excluded"] else {}
            names, probs = row["profiles"], row["probabilities"]
            keep = [i for i, n in enumerate(names) if n not in excluded or n == row["profile"]]
            chosen = [names[i] for i in keep].index(row["profile"])
            tasks = dict(zip(row["task_types"] or (), row["task_probs"] or ()))
            fh.write(dsjson_line(
                event_id=row["decision_id"], ts_us=row["ts_us"], context=json.loads(row["context"]),
                actions=[known.get(names[i], {"a": {"id": names[i]}}) for i in keep], chosen=chosen,
                probabilities=[probs[i] for i in keep], reward=row["reward"],
                task_probs=tasks if len(tasks) > 1 else None))
            fh.write("\n")
            n_written += 1
        if tmp is not None:
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if tmp is not None:
            fh.close()
    if tmp is not None:
        os.replace(tmp, target)
    return ExportResult(n_written=n_written, n_skipped=n_skipped, path=str(out))
