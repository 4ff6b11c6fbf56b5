"""Policies: one interface (:class:`~banditroute.policies.base.Policy`), one file per policy.

``base`` (the interface and its template), ``bank`` (Thompson sampling and greedy over the Beta
draw bank), ``ucb`` (Bayes-UCB over the Beta beliefs), ``linear`` (LinTS over a Bayesian linear
model of the reward; ``featurize``: a request as its feature vector), ``squarecb`` (inverse-gap
weighting over the same model), ``vw`` (Vowpal Wabbit, through ``vw_binding``, the one adapter
over the binding), ``external`` (a learner written elsewhere). Importing this package registers every policy that can be chosen by name
(``Router(policy="thompson")``).
"""

from .base import Feedback, Policy, PolicyQuery, PolicySetup, registered
from .bank import BankPolicy, GreedyPolicy, ThompsonPolicy
from .external import ExternalPolicy, as_policy
from .linear import LinearTS
from .squarecb import LinearSquareCB
from .ucb import UCBPolicy
from .vw import VWConfig, VWPolicy

__all__ = ["Policy", "PolicyQuery", "Feedback", "PolicySetup", "registered", "BankPolicy", "ThompsonPolicy",
           "GreedyPolicy", "UCBPolicy", "LinearTS", "LinearSquareCB", "ExternalPolicy", "as_policy", "VWConfig", "VWPolicy"]
