"""What the partitions of :mod:`ope.distributed` evaluate: the targets and estimators, checked once on
the client and turned into specs each partition computes on its own rounds.

A target is ``"uniform"``, ``"logging"``, ``"always:PROFILE"`` or an :class:`ope.Policy` (pickled to
the workers). Learning candidates (their progressive replay is sequential: each round is scored by
the model trained on all earlier rounds, a dependency no partition can cut) and target arrays
(``file:PATH.npy``: aligned with one in-memory reading) are refused with a clear error.

An estimator is :class:`~ope.IPS` (with ``clip``), :class:`~ope.SNIPS` or a model-based one (DM, DR,
SNDR, SwitchDR, DRos) with a ``reward_model``: :mod:`ope.partition_models` fits it once on a sample
of the rounds and each partition predicts its rounds with it. ``reward_predictions`` arrays (aligned
with one in-memory reading) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ope.base import Estimator
from ope.errors import InvalidConfigError
from ope.evaluate import name_estimators
from ope.feedback import LoggedFeedback
from ope.ips import IPS, SNIPS
from ope.learning import is_learning
from ope.partition_models import is_model_based
from ope.policies import Policy, one_hot, uniform

__all__ = ["check_policies", "target_specs", "named_estimators", "target_of"]


def check_policies(policies: Any) -> bool:
    """Whether some policy is an object (its partitions need the contexts)."""
    if not isinstance(policies, Mapping) or not policies:
        raise InvalidConfigError("policies", f"policies must be a non-empty mapping of name to target, got {policies!r}")
    return any(not isinstance(p, (str, np.ndarray)) and isinstance(p, Policy) for p in policies.values())


def target_specs(policies: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, tuple]:
    """Each policy as a spec every partition can compute on its own rounds (or a clear error)."""
    specs = {}
    for name, policy in policies.items():
        if isinstance(policy, str) and policy in ("uniform", "logging"):
            specs[str(name)] = (policy,)
        elif isinstance(policy, str) and policy.startswith("always:"):
            profile = policy.split(":", 1)[1]
            if profile not in names:
                raise InvalidConfigError("policy", f"policy always:{profile}: unknown profile, have {names}")
            specs[str(name)] = ("always", names.index(profile))
        elif is_learning(policy):
            raise InvalidConfigError("policy", f"policy {name!r} learns: its progressive replay is sequential (each "
                                     "round is scored by the model trained on every earlier round) and cannot be "
                                     "split into partitions; evaluate it in memory with ope.evaluate")
        elif isinstance(policy, Policy) and not isinstance(policy, np.ndarray):
            specs[str(name)] = ("policy", policy)
        elif isinstance(policy, str) and policy.startswith("file:"):
            raise InvalidConfigError("policy", f"policy {name}={policy}: an array file is aligned with the rounds of "
                                     "one in-memory reading and cannot be split by bucket; evaluate it without an "
                                     "engine (in memory)")
        else:
            raise InvalidConfigError("policy", f"policy {name!r} must be 'uniform', 'logging', 'always:PROFILE' or "
                                     f"an ope.Policy to be evaluated in partitions, got {type(policy).__name__}"
                                     + (f" {policy!r}" if isinstance(policy, str) else ""))
    return specs


def named_estimators(estimators: Sequence[Estimator] | Mapping[str, Estimator] | None) -> dict[str, Estimator]:
    """:func:`ope.evaluate.name_estimators`, refusing what a partition cannot compute on its own."""
    items = list(name_estimators(estimators).items())
    for name, est in items:
        if is_model_based(est) and est.reward_model is None:
            raise InvalidConfigError("estimators", f"estimator {name!r}: reward_predictions are aligned with the rounds "
                                     "of one in-memory reading and cannot be split by bucket; give a reward_model "
                                     "(fitted on a sample of the rounds) or evaluate it in memory")
        if type(est) not in (IPS, SNIPS) and not is_model_based(est):
            raise InvalidConfigError("estimators", f"estimator {name!r} cannot be evaluated in partitions: only IPS "
                                     "(with clip), SNIPS and the model-based estimators (DM, DR, SNDR, SwitchDR, DRos "
                                     "with a reward_model) are; evaluate it in memory")
    return dict(items)


def target_of(spec: tuple, fb: LoggedFeedback) -> Any:
    """The action distribution of ``spec`` (a :func:`target_specs` value) on the partition ``fb``."""
    if spec[0] == "uniform":
        return uniform(fb.n_rounds, fb.n_actions)
    if spec[0] == "logging":
        return np.asarray(fb.logging_distribution)
    if spec[0] == "always":
        return one_hot(np.full(fb.n_rounds, spec[1]), fb.n_actions)
    return spec[1]
