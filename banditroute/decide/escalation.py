"""Escalation: when the executed profile's answer fails a verifier (tests fail, a judge rejects
it, a schema check fails), decide again for the same request among the profiles not yet tried.

``Router.escalate(decision_id, reason=...)`` issues a *child* decision: its own id, its own row
in the decision log with ``parent_id`` set, its own exact propensity. Its pmf is the router's
pmf for the same request (same context, same task-type posterior, the request budget given
again) with every profile the chain already tried excluded (probability 0, reason "already
tried in this escalation chain (<reason>)"), so the child never repeats a failed profile. The
chain is root -> child -> grandchild ...; at most ``max_escalations`` children below a root,
one child per decision (a second escalation of the same decision is refused: it names the
child). A chain lives as long as its decisions are pending (the wait window).

Off-policy evaluation of the *first choice* uses the root decisions only (``ope``'s
``escalations="first"``): each root's propensity is the exact probability of the first choice.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..config.hygiene import invalid
from ..errors import EscalationError, InvalidRequestError, UnknownDecisionError

__all__ = ["Chain", "Escalations", "check_reason"]

_REASON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class Chain(NamedTuple):
    """Where a decision stands in its escalation chain."""

    root: str  #: the first decision's id
    tried: tuple  #: indices of the profiles executed so far in the chain, in order
    depth: int  #: escalations below the root (0 for the root)


class Escalations:
    """The chains of a router's escalated decisions (a root is not stored until escalated)."""

    def __init__(self, max_escalations: int, max_chains: int):
        self.max_escalations = max_escalations
        self.max_chains = max_chains
        self._chains: dict[str, Chain] = {}  # escalated decision id -> its chain
        self._children: dict[str, str] = {}  # decision id -> the child it was escalated to
        self.count = 0  # escalations issued (the service's metric)

    def chain(self, decision_id: str, pending, issued: bool) -> Chain:
        """The chain ``decision_id`` ends (checked: pending, not yet escalated, below the cap)."""
        if not isinstance(decision_id, str):
            raise UnknownDecisionError("decision_id", decision_id, "must be a decision id string")
        entry = pending.get(decision_id)
        if entry is None:
            problem = ("left the pending window (outcomes and escalations are taken for wait_window_s)" if issued
                       else "was not issued by this router")
            raise UnknownDecisionError("decision_id", decision_id, problem)
        child = self._children.get(decision_id)
        if child is not None:
            raise EscalationError("decision_id", decision_id, f"was already escalated, to {child}")
        chain = self._chains.get(decision_id) or Chain(decision_id, (entry.k,), 0)
        if chain.depth >= self.max_escalations:
            raise EscalationError("decision_id", decision_id,
                                  f"is escalation {chain.depth} below {chain.root}: max_escalations is "
                                  f"{self.max_escalations}")
        return chain

    def add(self, parent_id: str, chain: Chain, child_id: str, k: int) -> None:
        """Remember the child issued for ``parent_id`` (executing profile ``k``)."""
        if len(self._chains) >= self.max_chains:  # bounded like the pending window: the oldest go
            for old in list(self._chains)[: len(self._chains) // 2]:
                del self._chains[old]
            for old in list(self._children)[: len(self._children) // 2]:
                del self._children[old]
        self._chains[child_id] = Chain(chain.root, chain.tried + (k,), chain.depth + 1)
        self._children[parent_id] = child_id
        self.count += 1


    def withdraw(self, child_id: str) -> None:
        """Forget a child whose log row could not be committed (``Router.withdraw``): its parent
        can be escalated again."""
        chain = self._chains.pop(child_id, None)
        if chain is None:
            return
        for parent, child in list(self._children.items()):
            if child == child_id:
                del self._children[parent]
        self.count -= 1

    def restore(self, rows, index: dict) -> int:
        """The chains of logged decisions (a restart): ``rows`` of ``(decision_id, parent_id,
        profile)`` in log order, every decision of the wait window. Returns the chains restored."""
        profile_of, parent_of = {}, {}
        for did, parent, profile in rows:
            profile_of[did] = index.get(profile, -1)
            if parent is not None:
                parent_of[did] = parent
        for child, parent in parent_of.items():
            path = [child]
            while path[-1] in parent_of and len(path) <= self.max_escalations + 1:
                path.append(parent_of[path[-1]])
            tried = tuple(profile_of[d] for d in reversed(path) if profile_of.get(d, -1) >= 0)
            self._chains[child] = Chain(path[-1], tried, len(path) - 1)
            self._children[parent] = child
        return len(parent_of)


def check_reason(reason) -> str:
    """An escalation's reason: a short identifier (``"verifier_failed"``, ``"tests_failed"``, ...)."""
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        raise invalid(InvalidRequestError, "reason", reason, "must be a short identifier of letters, digits and "
                      "_.:- such as 'verifier_failed' (at most 64 characters)")
    return reason
