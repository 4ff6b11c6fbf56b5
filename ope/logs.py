"""Reading banditroute's Parquet logs: scan them, join outcomes, build :class:`~ope.LoggedFeedback`.

The entry points of the log reader, in one place:

- :func:`scan_decisions`, :func:`scan_outcomes`, :func:`join_logs`, :func:`action_space`
  (defined in :mod:`ope.log_join`: lazy scans and the outcome join, with its rules for
  late, duplicate and missing outcomes);
- :func:`feedback_from_logs`, defined here: the joined rounds as validated feedback (the
  arrays are assembled by :mod:`ope.log_columns`).

Dependencies run one way: this module -> :mod:`ope.feedback` -> :mod:`ope.log_columns` ->
:mod:`ope.log_join`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from ope.feedback import LoggedFeedback
from ope.log_columns import read_log_columns
from ope.log_join import METRICS, action_space, join_logs, scan_decisions, scan_outcomes

__all__ = ["scan_decisions", "scan_outcomes", "join_logs", "action_space", "feedback_from_logs", "METRICS"]


def feedback_from_logs(
    log_dir: str | Path,
    *,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    escalations: str = "first",
    reward: str = "reward",
    contexts: bool | Sequence[str] = False,
    cohorts: Sequence[str] = (),
    metrics: bool = True,
    logging_distribution: bool = True,
    context_sample: int = 1000,
    n_partitions: int | None = None,
) -> LoggedFeedback:
    """Build :class:`LoggedFeedback` from banditroute's logs (see :func:`join_logs`).

    Rounds keep the order of the decision files (sorted paths) and of the rows in
    them, whatever ``n_partitions``.

    Parameters
    ----------
    log_dir, wait_window, default_reward, duplicates
        See :func:`join_logs`.
    escalations : {"first", "all"}
        ``"first"`` (default): only root decisions (null ``parent_id``) are rounds, so the
        estimates are of a candidate's *first choice*; decisions issued by
        ``router.escalate`` are left out with their outcomes (their number:
        :attr:`ope.log_columns.LogColumns.n_escalated`). ``"all"``: every decision is a
        round, which biases the estimates for the first choice's value (escalated decisions
        exist because earlier choices failed). See :mod:`ope.escalations`.
    reward : {"reward", "quality", "cost_usd", "latency_ms"}
        Outcome column used as the reward (rounds where it is null are an error).
    contexts : bool or sequence of str
        Decode the context JSON into columns (all keys, or only these). Costly on
        large logs, so off by default. Key types are inferred from the first
        ``context_sample`` contexts.
    cohorts : sequence of str
        Cohort columns: ``"task_type"`` (context key, else the most probable task
        type), ``"profile"``, ``"policy_version"`` or any context key (as strings).
    metrics : bool
        Keep ``reward``, ``quality``, ``cost_usd``, ``latency_ms`` as
        :attr:`LoggedFeedback.metrics` (see :meth:`LoggedFeedback.with_reward`).
    logging_distribution : bool
        Keep the logged probability vectors as an (n_rounds, n_actions) array
        (exact support diagnostics; costs 8 bytes per round and action).
    n_partitions : int or None
        Join in this many hash partitions, one after the other, to bound memory
        (None: one per 1,000,000 decisions, at least 1).

    Returns
    -------
    LoggedFeedback

    Examples
    --------
    >>> feedback_from_logs("/nonexistent", reward="tokens")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: reward must be one of ('reward', 'quality', 'cost_usd', 'latency_ms'), got 'tokens'
    """
    columns = read_log_columns(
        log_dir,
        wait_window=wait_window,
        default_reward=default_reward,
        duplicates=duplicates,
        escalations=escalations,
        reward=reward,
        contexts=contexts,
        cohorts=cohorts,
        metrics=metrics,
        logging_distribution=logging_distribution,
        context_sample=context_sample,
        n_partitions=n_partitions,
    )
    return LoggedFeedback(**columns.as_kwargs())
