"""Learning candidates, evaluated without scoring a policy on the rounds it learned from.

A candidate that *learns* (anything with ``learn(feedback)`` besides
``action_distribution(contexts, action_names)``, see :class:`LearningPolicy`; banditroute's
``Router`` is one) must not be replayed on the logs and then scored, in its final state, on
the same rounds: it has fitted their noise, and the winner's curse makes it look better than
it is (a candidate with no true gain is promoted most of the time). Two leakage-free schemes:

``progressive`` (the default; "progressive validation", as VW's ``--explore_eval`` and
    Personalizer's offline evaluation do): the rounds in time order, in batches of ``B``;
    each batch is scored with the distribution the policy plays having learned from every
    earlier batch only, then it learns the batch. The target of round ``i`` never depends on
    the outcome of round ``i`` or a later one. ``B`` (``progressive:B``; default
    ``ceil(n / 2000)``, so 2 rounds at 4,000) is the delay with which the policy sees its
    outcomes, as a live router sees them late.
``split:F``
    learns from the first fraction ``F`` of the rounds (in time order), then the *frozen*
    policy is scored on the rest; every policy compared is evaluated on those rounds only.

A static policy (an array, or a policy without ``learn``) is scored as it is in both schemes.
The policy is copied first (``copy.deepcopy``): the caller's object does not learn.

>>> import numpy as np, polars as pl
>>> from ope.feedback import LoggedFeedback
>>> class Follow:  # plays the action with the best mean reward so far
...     def __init__(self):
...         self.sums = np.zeros(2)
...     def action_distribution(self, contexts, action_names):
...         return np.tile(np.eye(2)[int(np.argmax(self.sums))], (len(contexts), 1))
...     def learn(self, feedback):
...         np.add.at(self.sums, feedback.actions, feedback.rewards)
>>> fb = LoggedFeedback(actions=[1, 1, 0, 0], rewards=[1.0, 1.0, 0.0, 0.0], propensities=[0.5] * 4,
...                     n_actions=2, contexts=pl.DataFrame({"x": [0, 1, 2, 3]}))
>>> progressive(Follow(), fb, batch_rounds=1)[:, 1].tolist()
[0.0, 1.0, 1.0, 1.0]
>>> target, rounds = time_split(Follow(), fb, train_fraction=0.5)
>>> target.tolist(), rounds.tolist()
([[0.0, 1.0], [0.0, 1.0]], [False, False, True, True])
>>> LearningEvaluation.parse("split:0.25").describe(4000)
'time split: learned from the first 1,000 rounds, evaluated frozen on the last 3,000'
"""

from __future__ import annotations

import copy as _copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.policies import resolve_target

__all__ = ["LearningPolicy", "LearningEvaluation", "LearnedTargets", "is_learning", "progressive", "time_split",
           "resolve_learning"]

_TARGET_BATCHES = 2000  # default progressive batches: B = ceil(n / 2000)


@runtime_checkable
class LearningPolicy(Protocol):
    """A target policy that learns from logged rounds.

    ``learn`` receives a :class:`~ope.feedback.LoggedFeedback` of the rounds to learn from
    (actions, rewards, propensities, contexts, metrics), in time order.
    """

    def action_distribution(self, contexts: Any, action_names: Any) -> np.ndarray:
        """Return an array of shape ``(n_rounds, len(action_names))``."""

    def learn(self, feedback: LoggedFeedback) -> Any:
        """Learn from the given rounds."""


def is_learning(policy: Any) -> bool:
    """Whether ``policy`` learns (an object with ``learn`` and ``action_distribution``)."""
    return not isinstance(policy, np.ndarray) and isinstance(policy, LearningPolicy)


@dataclass(frozen=True)
class LearningEvaluation:
    """How a learning candidate is evaluated: ``"progressive"`` (``"progressive:B"``: batches of
    ``B`` rounds) or ``"split"`` (``"split:F"``: learn on the first fraction ``F``, default 0.5).

    >>> LearningEvaluation.parse("progressive:8").describe(4000)
    'progressive validation: each round scored before the candidate learns from it (500 batches of 8 rounds, time order)'
    >>> LearningEvaluation.parse("holdout")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: learning must be 'progressive', 'progressive:B' (B rounds per batch) or 'split:F' (F in (0, 1)), got 'holdout'
    """

    mode: str = "progressive"
    batch_rounds: int | None = None
    train_fraction: float = 0.5

    @classmethod
    def parse(cls, spec: "str | LearningEvaluation") -> "LearningEvaluation":
        if isinstance(spec, LearningEvaluation):
            return spec
        text = str(spec).strip()
        mode, _, arg = text.partition(":")
        try:
            if mode == "progressive":
                batch = int(arg) if arg else None
                if batch is not None and batch < 1:
                    raise ValueError
                return cls("progressive", batch_rounds=batch)
            if mode == "split":
                fraction = float(arg) if arg else 0.5
                if not 0.0 < fraction < 1.0:
                    raise ValueError
                return cls("split", train_fraction=fraction)
        except ValueError:
            pass
        raise InvalidConfigError("learning", "learning must be 'progressive', 'progressive:B' (B rounds per batch) "
                                 f"or 'split:F' (F in (0, 1)), got {spec!r}")

    def batch(self, n_rounds: int) -> int:
        return self.batch_rounds or max(1, math.ceil(n_rounds / _TARGET_BATCHES))

    def n_train(self, n_rounds: int) -> int:
        return min(n_rounds - 1, max(1, int(round(self.train_fraction * n_rounds))))

    def describe(self, n_rounds: int) -> str:
        """One line for reports: which scheme, on how many rounds."""
        if self.mode == "progressive":
            b = self.batch(n_rounds)
            return ("progressive validation: each round scored before the candidate learns from it "
                    f"({math.ceil(n_rounds / b):,} batches of {b:,} round{'s' if b > 1 else ''}, time order)")
        k = self.n_train(n_rounds)
        return f"time split: learned from the first {k:,} rounds, evaluated frozen on the last {n_rounds - k:,}"


def _order(feedback: LoggedFeedback, order: Any) -> np.ndarray:
    if order is None:
        return np.arange(feedback.n_rounds)
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (feedback.n_rounds,) or not np.array_equal(np.sort(order), np.arange(feedback.n_rounds)):
        raise InvalidConfigError("order", f"order must be a permutation of the {feedback.n_rounds} rounds, "
                                 f"got shape {order.shape}")
    return order


def _distribution(policy: Any, feedback: LoggedFeedback, rows: "np.ndarray | slice", m: int) -> np.ndarray:
    """The policy's distribution on ``m`` rounds ``rows`` (contexts: a polars DataFrame, or
    ``m`` empty mappings when the feedback has none)."""
    contexts = [{}] * m if feedback.contexts is None else feedback.contexts[rows]
    out = np.asarray(policy.action_distribution(contexts, list(feedback.action_names)), dtype=np.float64)
    if out.shape != (m, feedback.n_actions):
        raise InvalidConfigError("target", f"action_distribution must have shape {(m, feedback.n_actions)}, "
                                 f"got {out.shape}")
    return out


def progressive(policy: Any, feedback: LoggedFeedback, *, batch_rounds: int | None = None, order: Any = None,
                copy: bool = True) -> np.ndarray:
    """The (n_rounds, n_actions) progressive-validation target of a learning ``policy``.

    ``order``: a permutation giving the rounds' time order (default: the feedback's order).
    ``copy=False`` lets ``policy`` itself learn (it ends having learned every round).
    """
    learner = _copy.deepcopy(policy) if copy else policy
    idx_all = _order(feedback, order)
    b = LearningEvaluation("progressive", batch_rounds).batch(feedback.n_rounds)
    target = np.empty((feedback.n_rounds, feedback.n_actions))
    for start in range(0, feedback.n_rounds, b):
        idx = idx_all[start : start + b]
        rows = slice(start, start + len(idx)) if order is None else idx  # a slice is cheaper to take
        target[rows] = _distribution(learner, feedback, rows, len(idx))  # before it sees these rounds
        learner.learn(feedback.take(rows))
    return target


def time_split(policy: Any, feedback: LoggedFeedback, *, train_fraction: float = 0.5, order: Any = None,
               copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Learn from the first ``train_fraction`` of the rounds (in time order), then the frozen
    policy's distribution on the others: ``(target of the evaluated rounds in feedback order,
    boolean mask of the evaluated rounds)``."""
    learner = _copy.deepcopy(policy) if copy else policy
    idx_all = _order(feedback, order)
    k = LearningEvaluation("split", train_fraction=train_fraction).n_train(feedback.n_rounds)
    learner.learn(feedback.take(idx_all[:k]))
    evaluated = np.zeros(feedback.n_rounds, dtype=bool)
    evaluated[idx_all[k:]] = True
    rows = np.flatnonzero(evaluated)
    return _distribution(learner, feedback, rows, len(rows)), evaluated


@dataclass(frozen=True)
class LearnedTargets:
    """:func:`resolve_learning`'s result: validated targets on ``feedback`` (all rounds, or the
    evaluated part of a time split) and, per policy, how it was evaluated."""

    feedback: LoggedFeedback
    targets: dict
    evaluation: dict


def resolve_learning(policies: Mapping[str, Any], feedback: LoggedFeedback,
                     learning: "str | LearningEvaluation" = "progressive", *, order: Any = None) -> LearnedTargets:
    """Targets of several policies on the same rounds: learning ones by ``learning``, static
    ones as they are. With ``split`` and at least one learning policy, every policy is
    evaluated on the held-out rounds only (``result.feedback``).

    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> out = resolve_learning({"u": [[0.5, 0.5], [0.5, 0.5]]}, fb)
    >>> out.evaluation, out.feedback is fb
    ({'u': 'static (the policy does not learn)'}, True)
    """
    scheme = LearningEvaluation.parse(learning)
    learners = {name for name, p in policies.items() if is_learning(p)}
    n = feedback.n_rounds
    if not learners:
        return LearnedTargets(feedback, {name: resolve_target(p, feedback) for name, p in policies.items()},
                              {name: "static (the policy does not learn)" for name in policies})
    if scheme.mode == "progressive":
        targets = {name: progressive(p, feedback, batch_rounds=scheme.batch_rounds, order=order) if name in learners
                   else p for name, p in policies.items()}
        evaluated, kept = feedback, None
    else:
        kept = None
        targets = {}
        for name in learners:
            targets[name], kept = time_split(policies[name], feedback, train_fraction=scheme.train_fraction,
                                             order=order)
        evaluated = feedback.filter(kept)
        for name, p in policies.items():
            if name not in learners:
                targets[name] = resolve_target(p, feedback)[kept]
        targets = {name: targets[name] for name in policies}
    described = scheme.describe(n)
    return LearnedTargets(
        evaluated, {name: resolve_target(t, evaluated) for name, t in targets.items()},
        {name: described if name in learners else "static (the policy does not learn)" for name in policies})
