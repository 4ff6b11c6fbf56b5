"""banditroute: Thompson-sampling routing across profiles, with exact propensities.

>>> import banditroute as br
>>> router = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
>>> sorted(router.probabilities({}))
['a', 'b']
"""

from .calibration import calibration_report, calibration_table
from .config import BetaPrior, Budget, Objective, Profile
from .decision import Decision
from .demo import DemoResult, run_demo
from .drift import DriftConfig, PageHinkley
from .errors import (BanditrouteError, ConfigError, InvalidOutcomeError, InvalidRequestError, LogError,
                     NoFeasibleProfileError, UnknownDecisionError)
from .logstore import LogWriter, scan_table
from .policy import BankPolicy, GreedyPolicy, ThompsonPolicy
from .request import TaskClassifier
from .router import Router
from .settings import RouterConfig, load_config
from .simulator import Scenario, Simulator
from .vw_policy import VWConfig, VWPolicy

__version__ = "0.1.0"

__all__ = [
    "BanditrouteError", "BankPolicy", "BetaPrior", "Budget", "ConfigError", "Decision", "GreedyPolicy",
    "InvalidOutcomeError", "InvalidRequestError", "LogError", "LogWriter", "NoFeasibleProfileError",
    "Objective", "Profile", "Router", "RouterConfig", "TaskClassifier", "ThompsonPolicy",
    "UnknownDecisionError", "load_config", "scan_table", "Scenario", "Simulator", "DemoResult", "run_demo",
    "DriftConfig", "PageHinkley", "calibration_report", "calibration_table", "VWConfig", "VWPolicy",
]
