"""The record of one routing decision.

>>> d = Decision(id="w1-0", profile="small", propensity=0.9, probabilities={"small": 0.9, "large": 0.1},
...              task_probs={"code": 1.0}, policy_version="ts-beta-0", excluded={}, fallback_reason=None)
>>> d.profile, d.propensity
('small', 0.9)
>>> d.to_dict()["probabilities"]
{'small': 0.9, 'large': 0.1}
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = ["Decision", "ProbabilityRow", "make_decision"]


class Decision(NamedTuple):
    """What the router decided for one request (immutable).

    A named tuple because the batch path creates hundreds of thousands per second; use the
    attributes, not positions.

    Attributes
    ----------
    id : str
        Unique decision id; pass it to ``Router.record`` with the outcome.
    profile : str
        The profile to execute.
    propensity : float
        The exact probability with which ``profile`` was chosen (``probabilities[profile]``).
    probabilities : mapping of str to float
        The full distribution over every profile the router knows; sums to 1; 0 for excluded ones.
    task_probs : mapping of str to float
        The task-type posterior used for this request.
    policy_version : str
        Identifies the policy configuration that decided.
    excluded : mapping of str to str
        Profiles excluded for this request, each with the reason.
    fallback_reason : str or None
        Why the fallback profile was used, when it was.
    parent_id : str or None
        The decision this one escalates (``Router.escalate``); None for a first choice.
    """

    id: str
    profile: str
    propensity: float
    probabilities: Mapping[str, float]
    task_probs: Mapping[str, float]
    policy_version: str
    excluded: Mapping[str, str]
    fallback_reason: str | None = None
    parent_id: str | None = None

    def __reduce__(self):
        # Read-only mapping views do not pickle; a pickled Decision carries plain dicts.
        return (_rebuild, (self.to_dict(),))

    def __repr__(self) -> str:
        return (f"Decision(id={self.id!r}, profile={self.profile!r}, propensity={self.propensity!r}, "
                f"probabilities={dict(self.probabilities)!r}, fallback_reason={self.fallback_reason!r}"
                + (f", parent_id={self.parent_id!r})" if self.parent_id is not None else ")"))

    def to_dict(self) -> dict:
        """Plain-data form (for JSON): every mapping as a dict."""
        return {"id": self.id, "profile": self.profile, "propensity": self.propensity,
                "probabilities": dict(self.probabilities), "task_probs": dict(self.task_probs),
                "policy_version": self.policy_version, "excluded": dict(self.excluded),
                "fallback_reason": self.fallback_reason, "parent_id": self.parent_id}


class ProbabilityRow(Mapping):
    """A read-only ``{profile: probability}`` over a shared name index and one row of values:
    what a batch of decisions scored one by one (the contextual policy) carries as
    ``Decision.probabilities`` (building a dict per decision would cost more than deciding).

    >>> row = ProbabilityRow({"small": 0, "large": 1}, [0.25, 0.75])
    >>> row["large"], dict(row), row == {"small": 0.25, "large": 0.75}
    (0.75, {'small': 0.25, 'large': 0.75}, True)
    """

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: list):
        self._index = index
        self._values = values

    def __getitem__(self, name: str) -> float:
        return self._values[self._index[name]]

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return repr(dict(self))


def _rebuild(data: dict) -> Decision:
    for key in ("probabilities", "task_probs", "excluded"):
        data[key] = MappingProxyType(data[key])
    return Decision(**data)


_new = tuple.__new__


def make_decision(fields: tuple) -> Decision:
    """Fast internal constructor from a tuple of every field in order (no argument parsing)."""
    return _new(Decision, fields)
