"""Escalated decisions: which logged decisions are rounds (the ``escalations`` option of the join).

banditroute's ``router.escalate(decision_id, reason=...)`` issues a *new* decision when the
executed profile's answer fails the caller's verifier: its own ``decision_id``, its own exact
propensity over the profiles not yet tried in the chain (the tried ones have probability 0),
its own outcome, and a ``parent_id`` naming the decision it escalates. The root of a chain has
a null ``parent_id``; logs of schema version <= 2 have no ``parent_id`` column at all, which is
read as null (every decision a root).

``escalations="first"`` (the default of :func:`ope.join_logs`, :func:`ope.feedback_from_logs`
and :meth:`ope.LoggedFeedback.from_logs`) keeps only root decisions as rounds; escalated
decisions are left out, with their outcomes. The root's propensity is the exact probability
``pi_0(a | x)`` of the *first choice* given the context, and its outcome is the first answer's
outcome, so IPS, SNIPS and DR over the roots estimate, without bias (IPS, DR) or consistently
(SNIPS), the value of a candidate's first choice,

.. math::

    V(\\pi_e) = E_x \\sum_a \\pi_e(a \\mid x)\\, E[r \\mid x, a].

An escalated decision is drawn from another distribution: it exists only because earlier
choices failed (its requests are the harder ones, in ways the logged context does not show),
and the tried profiles have probability 0 in it. Treated as independent rounds
(``escalations="all"``), such decisions bias the estimate of ``V`` (typically downward:
conditioned on a failure, and with no support where the target puts mass on a tried
profile). ``"all"`` is there for users who know what they do (e.g. the mean logged reward
per decision). Evaluating a whole cascade (first choice, then what to escalate to) needs
the chain's joint propensity and is not done here; see ``docs/escalation-ope.md``.

Examples
--------
>>> import polars as pl
>>> d = pl.LazyFrame({"decision_id": ["a", "b", "c"], "parent_id": [None, "a", None]},
...                  schema={"decision_id": pl.String, "parent_id": pl.String})
>>> select_rounds(d, "first").collect()["decision_id"].to_list()
['a', 'c']
>>> count_escalated(d)
1
>>> check_escalations("second")
Traceback (most recent call last):
...
ope.errors.InvalidConfigError: escalations must be one of ('first', 'all'), got 'second'
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from ope.errors import InvalidConfigError

__all__ = ["ESCALATION_RULES", "PARENT_ID", "check_escalations", "with_parent_id", "select_rounds",
           "count_escalated", "escalated_rows"]

#: the values of the ``escalations`` option: roots only (default), or every decision
ESCALATION_RULES = ("first", "all")
#: the decision column naming the decision an escalated decision escalates (null for a root)
PARENT_ID = "parent_id"


def check_escalations(escalations: object) -> None:
    """Validate the ``escalations`` option (an :class:`~ope.errors.InvalidConfigError` naming it).

    >>> check_escalations("all")
    """
    if not isinstance(escalations, str) or escalations not in ESCALATION_RULES:
        raise InvalidConfigError("escalations", f"escalations must be one of {ESCALATION_RULES}, got {escalations!r}")


def with_parent_id(schema: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The decisions' read schema with ``parent_id`` as a string column.

    The log is scanned with one schema (its first file's); a file without the column (schema
    version <= 2) reads it as null, and a newer file's ``parent_id`` is not dropped as an
    unknown column when the first file is an old one.

    >>> with_parent_id({"decision_id": pl.String})
    {'decision_id': String, 'parent_id': String}
    """
    return {**schema, PARENT_ID: pl.String}


def _has_parent_id(decisions: pl.LazyFrame) -> bool:
    return PARENT_ID in decisions.collect_schema().names()


def select_rounds(decisions: pl.LazyFrame, escalations: str) -> pl.LazyFrame:
    """The decisions that are rounds under ``escalations`` (validated by the caller).

    ``"first"``: the roots (null or absent ``parent_id``); ``"all"``: every decision.
    """
    if escalations == "all" or not _has_parent_id(decisions):
        return decisions
    return decisions.filter(pl.col(PARENT_ID).is_null())


def count_escalated(decisions: pl.LazyFrame) -> int:
    """How many decisions are escalations (non-null ``parent_id``)."""
    if not _has_parent_id(decisions):
        return 0
    return int(decisions.select(pl.col(PARENT_ID).is_not_null().sum()).collect(engine="streaming").item())


def escalated_rows(decisions: pl.LazyFrame, escalations: str) -> np.ndarray:
    """Positions in the scan (``row_index`` of :func:`ope.join_logs`) of the decisions that were
    escalated (some decision names them as its ``parent_id``) and are rounds under ``escalations``.

    A root that was escalated failed its verifier: its outcome (the failed first answer) must be
    in the logs, or the round is missing and the first-choice estimates lean toward answers that
    passed. The reader counts such decisions left without a round.

    >>> d = pl.LazyFrame({"decision_id": ["a", "b", "c"], "parent_id": [None, "a", None]},
    ...                  schema={"decision_id": pl.String, "parent_id": pl.String})
    >>> escalated_rows(d, "first").tolist()
    [0]
    """
    if not _has_parent_id(decisions):
        return np.empty(0, dtype=np.int64)
    parents = decisions.select(pl.col(PARENT_ID).alias("decision_id")).drop_nulls().unique()
    candidates = select_rounds(decisions.with_row_index("row_index"), escalations)
    rows = candidates.join(parents, on="decision_id", how="semi").select("row_index")
    return rows.collect(engine="streaming").get_column("row_index").to_numpy().astype(np.int64)
