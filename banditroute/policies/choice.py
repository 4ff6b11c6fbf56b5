"""Choosing a router's policy: by name from the registry, or a policy object handed over.

>>> from banditroute.config.settings import RouterConfig
>>> from banditroute.config.profiles import Profile
>>> check_choice(RouterConfig(profiles=(Profile("a"),), policy="exp3"), None)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: policy must be 'thompson', 'greedy', 'linear', 'squarecb' or 'ucb', got 'exp3'
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Policy, PolicySetup, registered
from .external import as_policy

__all__ = ["check_choice", "choose", "version_prefix", "default_exploration"]


def check_choice(config, learner) -> type[Policy]:
    """The registered class ``config.policy`` names, checked against the other settings."""
    policies = registered()
    if config.policy not in policies:
        raise ConfigError("policy", config.policy, "must be " + _one_of(list(policies)))
    policy_class = policies[config.policy]
    if config.drift is not None and not policy_class.supports_drift:
        raise ConfigError("drift", config.drift, f"is not supported with policy={config.policy!r} (use discount)")
    if learner is not None and policy_class.learns:
        raise ConfigError("learner", learner, f"must not be given with policy={config.policy!r} (it is the learner)")
    return policy_class


def choose(config, learner, setup: PolicySetup) -> Policy:
    """``learner`` as a Policy when given, else the registered policy built from ``setup``."""
    policy_class = check_choice(config, learner)
    return as_policy(learner) if learner is not None else policy_class.build(setup)


def version_prefix(config, learner) -> str:
    """The first part of the default ``policy_version``: the learner's class or the policy's prefix."""
    return type(learner).__name__.lower() if learner is not None else registered()[config.policy].version_prefix


def _one_of(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def default_exploration(policy, learner) -> float:
    """The exploration floor a router gets when it is not given one: the registered policy's
    ``default_exploration`` (0.02 unless the policy says otherwise; a learner handed over: 0.02)."""
    cls = registered().get(policy) if learner is None and isinstance(policy, str) else None
    return Policy.default_exploration if cls is None else cls.default_exploration
