"""banditroute: Thompson-sampling routing across profiles, with exact propensities.

>>> import banditroute as br
>>> router = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
>>> sorted(router.probabilities({}))
['a', 'b']
"""

from .beliefs.drift import PageHinkley
from .config.features import Category, Text
from .config.mechanisms import Cooldown, CostLearning, Onboarding
from .config.profiles import BetaPrior, Budget, DriftConfig, Objective, Profile
from .config.settings import RouterConfig, load_config
from .decide.decision import Decision
from .decide.request import TaskClassifier
from .decide.router import Router
from .errors import (BanditrouteError, ConfigError, EscalationError, InvalidOutcomeError, InvalidRequestError,
                     LogError, NoFeasibleProfileError, OutcomeInFlightError, UnknownDecisionError)
from .evaluation.calibration import calibration_report, calibration_table
from .logs.store import LogWriter, scan_table
from .policies import (BankPolicy, Feedback, GreedyPolicy, LinearTS, Policy, PolicyQuery, ThompsonPolicy, VWConfig,
                       VWPolicy)

__version__ = "0.1.0"

__all__ = [
    "Router", "Decision", "Profile", "Objective", "Budget", "BetaPrior", "RouterConfig", "load_config",
    "TaskClassifier", "DriftConfig", "PageHinkley", "CostLearning", "Onboarding", "Cooldown", "Text", "Category",
    "Policy", "PolicyQuery", "Feedback", "BankPolicy", "ThompsonPolicy", "GreedyPolicy", "LinearTS", "VWConfig",
    "VWPolicy",
    "LogWriter", "scan_table", "calibration_report", "calibration_table",
    "BanditrouteError", "ConfigError", "EscalationError", "InvalidOutcomeError", "InvalidRequestError", "LogError",
    "NoFeasibleProfileError", "OutcomeInFlightError", "UnknownDecisionError",
]
