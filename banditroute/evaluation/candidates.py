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
                             with ``log_dir=None``, replayed on the logs; its action distribution
``router:PATH``              a Router saved with ``Router.save`` (loaded with ``log_dir=None``)
``shadow:NAME``              the distribution logged for shadow or canary candidate ``NAME``
``file:PATH.npy``            an (n_rounds, n_profiles) array aligned with the joined rounds
==========================  =====================================================================

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

__all__ = ["SPEC_HELP", "parse_named", "load_feedback", "resolve_policy"]

SPEC_HELP = ("logged | uniform | always:PROFILE | table:TASK=PROFILE,...[,*=PROFILE] | config[:ROUTES.toml] | "
             "router:SAVED.pkl | shadow:NAME | file:PATH.npy")
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
    return ope.LoggedFeedback.from_logs(log_dir, contexts=True, cohorts=list(cohorts), wait_window=window,
                                        default_reward=default_reward)


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


def _shadow(name: str, fb, log_dir, wait_window_s, default_reward) -> np.ndarray:
    from ope.logs import join_logs

    window = None if wait_window_s is None else dt.timedelta(seconds=wait_window_s)
    rows = (join_logs(log_dir, wait_window=window, default_reward=default_reward)
            .select("row_index", "profiles", "shadow").collect().sort("row_index"))
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
                   wait_window_s: float | None = None, default_reward: float | None = None) -> np.ndarray:
    """The (n_rounds, n_profiles) action distribution of a SPEC on the logged rounds.

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
    if spec == "config" or spec.startswith("config:") or spec.startswith("router:"):
        if spec.startswith("router:"):
            router = Router.load(spec.split(":", 1)[1], log_dir=None)
        else:
            path = config if spec == "config" else spec.split(":", 1)[1]
            if path is None:
                raise ConfigError("policy", spec, "needs --config ROUTES.toml (or config:PATH)")
            router = Router.from_config(path, log_dir=None)
            if log_dir is not None:
                router.replay(log_dir)
        # no context column at all (every logged context was {}): one empty context per round
        contexts = [{}] * fb.n_rounds if fb.contexts is None else fb.contexts
        return router.action_distribution(contexts, list(fb.action_names))
    if spec.startswith("shadow:"):
        if log_dir is None:
            raise ConfigError("policy", spec, "needs the log directory")
        return _shadow(spec.split(":", 1)[1], fb, log_dir, wait_window_s, default_reward)
    if spec.startswith("file:"):
        return np.load(spec.split(":", 1)[1])
    raise ConfigError("policy", spec, f"must be one of: {SPEC_HELP}")
