"""Candidate and baseline policies on the logs: SPECs resolved to action distributions.

A policy to evaluate (by ``banditroute promote``, ``banditroute report`` or the demo) is given
as a SPEC (a superset of ``python -m ope``'s) and resolved against the joined logs
(:func:`load_feedback`) into an (n_rounds, n_profiles) action distribution
(:func:`resolve_policy`):

==========================  =====================================================================
``logged`` (or ``logging``)  the logging policy itself: the probabilities logged with each decision
``uniform``                  every logged profile with the same probability
``always:PROFILE``           always that profile
``table:chat=small,code=large[,*=medium]``
                             a static routing table by task type (``*``: every other task type)
``config`` / ``config:PATH`` a Router built from a routes file (``config``: the ``--config`` one)
                             with ``log_dir=None``, *learning*: evaluated progressively from its prior
``router:PATH``              a Router saved with ``Router.save`` (loaded with ``log_dir=None``),
                             learning: evaluated progressively from its saved state
``shadow:NAME``              the distribution logged for shadow or canary candidate ``NAME``
``file:PATH.npy``            an (n_rounds, n_profiles) array aligned with the joined rounds
==========================  =====================================================================

A *learning* candidate (``config``, ``router``) is never scored on rounds it learned from (that
would reward it for fitting their noise): by default it is evaluated by progressive validation,
each logged round, in time order, scored with what the candidate would have played then, before
it learns that round; ``learning="split:F"`` learns on the first fraction ``F`` and scores the
frozen candidate on the rest (see :mod:`ope.learning`). :func:`load_feedback` returns the rounds
in time order (decision time, then writer and sequence) for that reason.

>>> parse_named("cheap=always:small")
('cheap', 'always:small')
>>> parse_named("table:chat=small")
('table:chat=small', 'table:chat=small')
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import ConfigError

__all__ = ["SPEC_HELP", "parse_named", "load_feedback", "joined_rounds", "policy_of", "resolve_policy",
           "resolve_policies"]

SPEC_HELP = ("logged | uniform | always:PROFILE | table:TASK=PROFILE,...[,*=PROFILE] | config[:ROUTES.toml] | "
             "router:SAVED (a Router.save file) | shadow:NAME | file:PATH.npy")
_PREFIXES = ("always:", "table:", "config:", "router:", "shadow:", "file:")


def parse_named(item: str) -> tuple[str, str]:
    """Split ``NAME=SPEC``; a bare SPEC is its own name (``table:...`` contains ``=`` itself)."""
    if item.startswith(_PREFIXES) or item in ("logged", "logging", "uniform", "config") or "=" not in item:
        return item, item
    name, _, spec = item.partition("=")
    return name, spec


def load_feedback(log_dir: str | Path, *, cohorts: Sequence[str] = (), wait_window_s: float | None = None,
                  default_reward: float | None = None):
    """Decisions joined with outcomes, with decoded contexts and the cohort columns.

    >>> load_feedback("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
    """
    import ope

    window = None if wait_window_s is None else dt.timedelta(seconds=wait_window_s)
    fb = ope.LoggedFeedback.from_logs(log_dir, contexts=True, cohorts=list(cohorts), wait_window=window,
                                      default_reward=default_reward)
    rows = joined_rounds(log_dir, wait_window_s=wait_window_s, default_reward=default_reward, time_order=False)
    if rows.height != fb.n_rounds:
        raise ConfigError("log_dir", str(log_dir), "changed while it was read; run again")
    order = _time_order(rows)
    return fb if np.array_equal(order, np.arange(fb.n_rounds)) else fb.take(order)


def joined_rounds(log_dir: str | Path, *, wait_window_s: float | None = None, default_reward: float | None = None,
                  columns: Sequence[str] = ("decision_id", "ts", "writer", "seq"), time_order: bool = True):
    """The joined rounds' log ``columns`` (a polars DataFrame), aligned with
    :func:`load_feedback`'s rounds (``time_order=False``: with ``LoggedFeedback.from_logs``')."""
    from ope.logs import join_logs

    window = None if wait_window_s is None else dt.timedelta(seconds=wait_window_s)
    wanted = list(dict.fromkeys(["row_index", "ts", "writer", "seq", *columns]))
    rows = join_logs(log_dir, wait_window=window, default_reward=default_reward).select(wanted).collect()
    rows = rows.sort("row_index")
    if time_order:
        rows = rows[_time_order(rows)]
    return rows.select(list(columns))


def _time_order(rows: pl.DataFrame) -> np.ndarray:
    """Stable order of the rounds by decision time, then writer, then sequence number."""
    return rows.with_row_index("__i").sort(["ts", "writer", "seq"], maintain_order=True).get_column("__i").to_numpy()


def _table(spec: str, fb) -> np.ndarray:
    body = spec.split(":", 1)[1]
    table = {}
    for item in [s for s in body.split(",") if s.strip()]:
        task, sep, profile = item.partition("=")
        if not sep:
            raise ConfigError("policy", spec, "table entries must be TASK=PROFILE")
        if profile.strip() not in fb.action_names:
            raise ConfigError("policy", spec, f"names profile {profile.strip()!r}, not among the logged {list(fb.action_names)}")
        table[task.strip()] = fb.action_names.index(profile.strip())
    if fb.contexts is None or "task_type" not in fb.contexts.columns:
        raise ConfigError("policy", spec, "needs a task_type in the logged contexts")
    tasks = fb.contexts.get_column("task_type").cast(pl.String).fill_null("").to_list()
    missing = sorted({t for t in tasks if t not in table} - {""}) if "*" not in table else []
    if missing:
        raise ConfigError("policy", spec, f"has no entry for task types {missing} (add *=PROFILE)")
    actions = np.array([table.get(t, table.get("*", -1)) for t in tasks])
    if (actions < 0).any():
        raise ConfigError("policy", spec, "has no entry for requests without a task_type (add *=PROFILE)")
    out = np.zeros((fb.n_rounds, fb.n_actions))
    out[np.arange(fb.n_rounds), actions] = 1.0
    return out


def _check_learned_elsewhere(router, spec: str, log_dir) -> None:
    """Refuse a saved router that learned and issued decisions of this very log: its state
    already holds these rounds' outcomes, so no evaluation on them can be fair."""
    from ..logs.scan import scan_table

    if router.n_updates == 0:
        return
    firsts = (scan_table(log_dir, "decisions").group_by("writer").agg(pl.col("decision_id").first())
              .collect().get_column("decision_id").to_list())
    mine = [d for d in firsts if router.issued(d)]
    if mine:
        raise ConfigError("policy", spec, f"issued decisions of this log ({mine[0]}, ...) and learned "
                          f"{router.n_updates:,} outcomes: its state already holds these rounds, so scoring it on "
                          "them would reward it for fitting their noise; evaluate its routes file (config:PATH, "
                          "which learns progressively from the prior) or a router saved before these logs")


def _shadow(name: str, fb, log_dir, wait_window_s, default_reward) -> np.ndarray:
    rows = joined_rounds(log_dir, wait_window_s=wait_window_s, default_reward=default_reward,
                         columns=("profiles", "shadow"))
    if rows.height != fb.n_rounds:
        raise ConfigError("policy", f"shadow:{name}", "could not align the shadow column with the joined rounds")
    index = {p: k for k, p in enumerate(fb.action_names)}
    out = np.full((fb.n_rounds, fb.n_actions), np.nan)
    for i, (profiles, shadow) in enumerate(rows.select("profiles", "shadow").iter_rows()):
        pmf = json.loads(shadow).get(name) if shadow else None
        if pmf is None:
            continue
        out[i] = 0.0
        for p, v in zip(profiles, pmf):
            out[i, index[p]] = v
    missing = np.isnan(out).any(axis=1)
    if missing.all():
        raise ConfigError("policy", f"shadow:{name}", "was never logged as a shadow or canary candidate")
    if missing.any():
        raise ConfigError("policy", f"shadow:{name}", f"is not logged for {int(missing.sum()):,} of {fb.n_rounds:,} "
                          "rounds; evaluate it on the logs of its shadow period only")
    return out


def resolve_policy(spec: str, fb, *, log_dir: str | Path | None = None, config: str | Path | None = None,
                   wait_window_s: float | None = None, default_reward: float | None = None,
                   learning: str = "progressive") -> np.ndarray:
    """The (n_rounds, n_profiles) action distribution of a SPEC on the logged rounds; a learning
    one (``config``, ``router``) by progressive validation (a time split scores fewer rounds:
    use :func:`resolve_policies`).

    >>> import ope
    >>> fb = ope.LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2,
    ...                         action_names=["small", "large"],
    ...                         contexts=pl.DataFrame({"task_type": ["chat", "code"]}))
    >>> resolve_policy("table:chat=small,code=large", fb).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> resolve_policy("always:huge", fb)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: policy names profile 'huge', not among the logged ['small', 'large'], got 'always:huge'
    """
    import ope

    policy = policy_of(spec, fb, log_dir=log_dir, config=config, wait_window_s=wait_window_s,
                       default_reward=default_reward)
    if not ope.learning.is_learning(policy):
        return policy
    scheme = ope.LearningEvaluation.parse(learning)
    if scheme.mode != "progressive":
        raise ConfigError("learning", learning, "scores fewer rounds than the log has: use resolve_policies")
    return ope.progressive(policy, fb, batch_rounds=scheme.batch_rounds, copy=False)


def resolve_policies(specs, fb, *, learning: str = "progressive", **where):
    """Several SPECs (or arrays) by name on the same rounds, learning ones evaluated by ``learning``
    (``progressive[:B]`` or ``split[:F]``): an ``ope.LearnedTargets`` (``.feedback``: the rounds
    evaluated, ``.targets``: arrays, ``.evaluation``: how each was evaluated)."""
    import ope

    policies = {name: policy_of(spec, fb, **where) if isinstance(spec, str) else spec for name, spec in specs.items()}
    return ope.resolve_learning(policies, fb, learning)


def policy_of(spec: str, fb, *, log_dir: str | Path | None = None, config: str | Path | None = None,
              wait_window_s: float | None = None, default_reward: float | None = None):
    """A SPEC as ``ope`` takes it: a static (n_rounds, n_profiles) array, or for ``config`` and
    ``router`` a Router that learns (``ope`` evaluates it progressively or on a time split;
    it starts from its prior, or a saved router from its saved state, and is never replayed
    on the logs first)."""
    from ope.policies import one_hot, uniform

    from ..decide.router import Router

    if spec in ("logged", "logging"):
        if fb.logging_distribution is None:
            raise ConfigError("policy", spec, "needs the logged probabilities")
        return np.asarray(fb.logging_distribution)
    if spec == "uniform":
        return uniform(fb.n_rounds, fb.n_actions)
    if spec.startswith("always:"):
        name = spec.split(":", 1)[1]
        if name not in fb.action_names:
            raise ConfigError("policy", spec, f"names profile {name!r}, not among the logged {list(fb.action_names)}")
        return one_hot(np.full(fb.n_rounds, fb.action_names.index(name)), fb.n_actions)
    if spec.startswith("table:"):
        return _table(spec, fb)
    if spec.startswith("router:"):
        router = Router.load(spec.split(":", 1)[1], log_dir=None)
        if log_dir is not None:
            _check_learned_elsewhere(router, spec, log_dir)
        return router
    if spec == "config" or spec.startswith("config:"):
        path = config if spec == "config" else spec.split(":", 1)[1]
        if path is None:
            raise ConfigError("policy", spec, "needs --config ROUTES.toml (or config:PATH)")
        return Router.from_config(path, log_dir=None)
    if spec.startswith("shadow:"):
        if log_dir is None:
            raise ConfigError("policy", spec, "needs the log directory")
        return _shadow(spec.split(":", 1)[1], fb, log_dir, wait_window_s, default_reward)
    if spec.startswith("file:"):
        return np.load(spec.split(":", 1)[1])
    raise ConfigError("policy", spec, f"must be one of: {SPEC_HELP}")
