"""Shadow and canary stages: candidate policies next to production on live traffic.

*Shadow*: a candidate's action distribution is computed for every request and logged with the
decision (column ``shadow``: JSON ``{name: [p aligned with profiles]}``); it never changes what
is executed. *Canary*: a fraction ``f`` of traffic is decided by the candidate. The router draws
the executed profile from the mixture ``(1 - f) * pi_production + f * pi_candidate`` and logs
that mixture as the probabilities, so the logged propensity is the true probability of the
executed profile and canary traffic stays valid for off-policy evaluation.

A candidate is anything with ``probabilities(context) -> {profile: p}`` (another
:class:`~banditroute.decide.router.Router` with ``log_dir=None``, a static table, a wrapped VW
policy). A Router candidate also learns from every applied outcome.

Each command is stamped (:attr:`Rollout.since_us`, :attr:`Rollout.last_command`); commands that
come from a durable command store (:mod:`banditroute.decide.commands`, the service's
``/v1/rollout``) carry an id, and :attr:`Rollout.position` counts those applied, so that each is
applied once (:mod:`banditroute.decide.rollout_sync`).

>>> import numpy as np
>>> class Static:
...     def probabilities(self, context):
...         return {"large": 1.0}
>>> rollout = Rollout()
>>> rollout.start_canary("table", Static(), 0.25)
>>> pmf, shadow = rollout.apply({}, np.array([0.5, 0.5]), ["small", "large"])
>>> pmf.tolist(), shadow
([0.375, 0.625], '{"table":[0.0,1.0]}')
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import numpy as np

from ..config.hygiene import check_text
from ..config.profiles import check_number
from ..errors import ConfigError

__all__ = ["Rollout"]


class Rollout:
    """The shadow candidates and the canary of one router.

    The commands with ``who`` and ``why`` (``add_shadow``, ``start_canary``, ...) are recorded
    as event rows through ``log_event`` (rare and important: flushed at once)."""

    def __init__(self, log_event=None):
        self._log_event = log_event  # (event, policy, fraction, who, why) -> None: the log's events table
        self.shadows: dict[str, object] = {}
        self.canary: tuple[str, object, float] | None = None
        self._learners: set[str] = set()  # candidates that learn from production's outcomes
        self._init_stamps()

    def _init_stamps(self) -> None:
        self.since_us: dict[str, int] = {}  #: candidate name -> when the command that started it was given
        self.last_command: dict | None = None  #: the last command applied (action, name, who, why, ...)
        self.position = 0  #: commands of a command store applied, in its order
        self.command_ids: set[str] = set()  #: ids of the stored commands applied

    def __setstate__(self, state: dict) -> None:  # a router pickled before the stamps existed
        self._init_stamps()
        self.__dict__.update(state)

    @property
    def active(self) -> bool:
        return bool(self.shadows) or self.canary is not None

    def add_shadow(self, name: str, policy, *, learns: bool = False) -> None:
        """``learns``: the candidate learns from every applied outcome (``learn_elsewhere``)."""
        _check_policy(name, policy)
        if name in self.shadows or (self.canary and self.canary[0] == name):
            raise ConfigError("name", name, "is already a shadow or canary policy")
        self.shadows[name] = policy
        if learns:
            self._learners.add(name)

    def remove_shadow(self, name: str) -> None:
        if name not in self.shadows:
            raise ConfigError("name", name, f"is not a shadow policy (shadows: {sorted(self.shadows)})")
        del self.shadows[name]
        self._learners.discard(name)

    def start_canary(self, name: str, policy, fraction: float, *, learns: bool = False) -> None:
        _check_policy(name, policy)
        if self.canary is not None:
            raise ConfigError("canary", self.canary[0], "is already running: promote or roll it back first")
        if name in self.shadows:
            raise ConfigError("name", name, "is already a shadow policy")
        self.canary = (name, policy, check_number("fraction", fraction, lo=0.0, hi=1.0))
        if learns:
            self._learners.add(name)

    def set_fraction(self, fraction: float) -> None:
        if self.canary is None:
            raise ConfigError("canary", None, "is not running")
        name, policy, _ = self.canary
        self.canary = (name, policy, check_number("fraction", fraction, lo=0.0, hi=1.0))

    def stop_canary(self) -> tuple[str, object, float]:
        if self.canary is None:
            raise ConfigError("canary", None, "is not running")
        canary, self.canary = self.canary, None
        self._learners.discard(canary[0])
        return canary

    # -- commands: validated, applied, recorded as events ----------------------------------------
    def command(self, event: str, name: str | None, *, who: str, why: str, policy=None,
                fraction: float | None = None, learns: bool = False, log: bool = True,
                command_id: str | None = None, ts_us: int | None = None):
        """Apply one rollout command and record it; returns the promoted policy for ``promote``.

        ``log=False``: no event row (a command another replica accepted and logged, applied
        here too); ``command_id`` and ``ts_us``: the stored command's id and time."""
        for field, value in (("who", who), ("why", why)):
            check_text(field, value)  # a string the log can hold
        if name is not None:
            check_text("name", name)
        result = None
        before = (dict(self.shadows), self.canary, set(self._learners))
        if event == "shadow_start":
            self.add_shadow(name, policy, learns=learns)
        elif event == "shadow_stop":
            self.remove_shadow(name)
        elif event == "canary_start":
            self.start_canary(name, policy, fraction, learns=learns)
        elif event in ("canary_fraction", "promote"):
            self.set_fraction(1.0 if event == "promote" else fraction)
            name, result, fraction = self.canary
        elif event == "rollback":
            name, _, fraction = self.stop_canary()
        else:
            raise ConfigError("event", event, "is not a rollout command")
        if log and self._log_event is not None:
            try:
                self._log_event(event, name, fraction, who, why)
            except BaseException:  # the log refused the event row: the command did not happen
                self.shadows, self.canary, self._learners = before
                raise
        self._stamp(event, name, fraction, who, why, command_id, ts_us)
        return result

    def _stamp(self, event, name, fraction, who, why, command_id, ts_us) -> None:
        ts_us = time.time_ns() // 1000 if ts_us is None else int(ts_us)
        if event in ("shadow_start", "canary_start"):
            self.since_us[name] = ts_us
        elif event in ("shadow_stop", "rollback"):
            self.since_us.pop(name, None)
        self.last_command = {"command_id": command_id, "action": event, "name": name, "fraction": fraction,
                             "who": who, "why": why, "ts_us": ts_us}
        if command_id is not None:
            self.command_ids.add(command_id)

    def mark_applied(self, position: int, *, ids=(), last: dict | None = None) -> None:
        """Record that the command store's commands up to ``position`` (ids ``ids``) are applied
        here; ``last``: the last of them, as :attr:`last_command` (a restored stage)."""
        self.position = max(self.position, int(position))
        self.command_ids.update(ids)
        if last is not None:
            self.last_command = dict(last)

    def check(self, event: str, name: str | None = None) -> None:
        """Raise :class:`ConfigError` if ``event`` on ``name`` cannot be applied to the stage now
        (nothing changes): the check a command store makes before it accepts a command."""
        canary = None if self.canary is None else self.canary[0]
        if event in ("shadow_start", "canary_start"):
            if name in self.shadows or name == canary:
                raise ConfigError("name", name, "is already a shadow or canary policy")
            if event == "canary_start" and canary is not None:
                raise ConfigError("canary", canary, "is already running: promote or roll it back first")
        elif event == "shadow_stop":
            if name not in self.shadows:
                raise ConfigError("name", name, f"is not a shadow policy (shadows: {sorted(self.shadows)})")
        elif event in ("canary_fraction", "promote", "rollback"):
            if canary is None:
                raise ConfigError("canary", None, "is not running")
            if name is not None and name != canary:
                raise ConfigError("name", name, f"is not the canary (the canary is {canary!r})")
        else:
            raise ConfigError("action", event, "is not a rollout command")

    def stage(self) -> dict:
        """The stage as data: the shadows, the canary (name, fraction), when each started, whether
        it learns, the last command and the position in the command store."""
        def entry(name):
            return {"name": name, "since_us": self.since_us.get(name), "learns": name in self._learners}

        canary = None
        if self.canary is not None:
            canary = {**entry(self.canary[0]), "fraction": self.canary[2]}
        return {"shadows": [entry(n) for n in self.shadows], "canary": canary,
                "last_command": None if self.last_command is None else dict(self.last_command),
                "position": self.position}

    def candidates(self):
        """Every candidate policy, shadow and canary."""
        yield from self.shadows.values()
        if self.canary is not None:
            yield self.canary[1]

    @property
    def has_learners(self) -> bool:
        return bool(self._learners)

    def learners(self):
        """The candidates that learn from production's applied outcomes."""
        return [policy for name, policy in self._all() if name in self._learners]

    def _all(self):
        yield from self.shadows.items()
        if self.canary is not None:
            yield self.canary[:2]

    def apply(self, context: Mapping, production: np.ndarray, names: list[str]) -> tuple[np.ndarray, str]:
        """The pmf to draw from (production, or the canary mixture) and the shadow column's JSON."""
        logged = {name: _pmf(name, policy, context, names) for name, policy in self.shadows.items()}
        pmf = production
        if self.canary is not None:
            name, policy, fraction = self.canary
            candidate = _pmf(name, policy, context, names)
            logged[name] = candidate
            pmf = (1.0 - fraction) * production + fraction * candidate
        return pmf, json.dumps({k: v.tolist() for k, v in logged.items()}, separators=(",", ":"))


def _check_policy(name: str, policy) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError("name", name, "must be a non-empty string")
    if not callable(getattr(policy, "probabilities", None)):
        raise ConfigError("policy", policy, "must have probabilities(context) -> {profile: p}")


def _pmf(name: str, policy, context: Mapping, names: list[str]) -> np.ndarray:
    probs = policy.probabilities(context)
    out = np.zeros(len(names))
    index = {n: i for i, n in enumerate(names)}
    for profile, p in probs.items():
        if p and profile not in index:
            raise ConfigError(f"{name}.probabilities", profile, f"is not a profile of this router {names}")
        if p:
            out[index[profile]] = p
    if not np.all(out >= 0) or abs(out.sum() - 1.0) > 1e-9:
        raise ConfigError(f"{name}.probabilities", dict(probs), "must be non-negative and sum to 1")
    return out / out.sum()
