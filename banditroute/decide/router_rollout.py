"""The Router's rollout commands (shadow and canary candidates), each an event row in the log:
a part of :class:`~banditroute.decide.router.Router`'s façade kept in a module of its own."""

from __future__ import annotations

__all__ = ["RolloutCommands"]


class RolloutCommands:
    """Shadow and canary commands of a router (mixed into ``Router``: ``self._rollout`` and
    ``self._lock`` are the router's own)."""

    def add_shadow(self, name: str, policy, *, who: str = "", why: str = "") -> None:
        """Compute ``policy``'s distribution on every request and log it (column ``shadow``)
        next to the decision, without changing what is executed."""
        with self._lock:
            self._rollout.command("shadow_start", name, policy=policy, who=who, why=why,
                                  learns=isinstance(policy, RolloutCommands))

    def remove_shadow(self, name: str, *, who: str = "", why: str = "") -> None:
        with self._lock:
            self._rollout.command("shadow_stop", name, who=who, why=why)

    def start_canary(self, name: str, policy, *, fraction: float, who: str, why: str) -> None:
        """Let ``policy`` decide a ``fraction`` of traffic; the logged propensity is the mixture
        probability, exactly. Recorded as an event (who, what, why) in the log."""
        with self._lock:
            self._rollout.command("canary_start", name, policy=policy, fraction=fraction, who=who, why=why,
                                  learns=isinstance(policy, RolloutCommands))

    def set_canary_fraction(self, fraction: float, *, who: str, why: str) -> None:
        with self._lock:
            self._rollout.command("canary_fraction", None, fraction=fraction, who=who, why=why)

    def promote(self, *, who: str, why: str):
        """Promote the canary: it decides all traffic from now on (fraction 1). Returns it."""
        with self._lock:
            return self._rollout.command("promote", None, who=who, why=why)

    def rollback(self, *, who: str, why: str) -> None:
        """Stop the canary: production decides all traffic again."""
        with self._lock:
            self._rollout.command("rollback", None, who=who, why=why)
