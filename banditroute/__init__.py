"""banditroute: Thompson-sampling routing across profiles, with exact propensities.

>>> import banditroute as br
>>> router = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
>>> sorted(router.probabilities({}))
['a', 'b']
"""

from .evaluation.calibration import calibration_report, calibration_table
from .config.profiles import BetaPrior, Budget, Objective, Profile
from .decide.decision import Decision
from .beliefs.drift import DriftConfig, PageHinkley
from .errors import (BanditrouteError, ConfigError, InvalidOutcomeError, InvalidRequestError, LogError,
                     NoFeasibleProfileError, UnknownDecisionError)
from .logs.store import LogWriter, scan_table
from .policies.bank import BankPolicy, GreedyPolicy, ThompsonPolicy
from .decide.request import TaskClassifier
from .decide.router import Router
from .config.settings import RouterConfig, load_config
from .policies.vw import VWConfig, VWPolicy

__version__ = "0.1.0"

__all__ = [
    "BanditrouteError", "BankPolicy", "BetaPrior", "Budget", "ConfigError", "Decision", "GreedyPolicy",
    "InvalidOutcomeError", "InvalidRequestError", "LogError", "LogWriter", "NoFeasibleProfileError",
    "Objective", "Profile", "Router", "RouterConfig", "TaskClassifier", "ThompsonPolicy",
    "UnknownDecisionError", "load_config", "scan_table",
    "DriftConfig", "PageHinkley", "calibration_report", "calibration_table", "VWConfig", "VWPolicy",
]
