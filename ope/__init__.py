"""ope: off-policy evaluation of bandit policies on logged feedback.

Answers "what would this candidate policy have earned on the traffic we logged?"
with an estimate, an interval and the diagnostics that say when not to trust it.
Never imports ``banditroute``.

Modules, each importing only modules listed above it (no import cycles)::

    errors                      OPEError and its subclasses
    buckets                     the stable bucket of a decision id (partitions, folds, bootstrap)
    escalations                 which decisions are rounds: roots only (first choices) or all
    log_join                    scan banditroute's Parquet logs, join decisions with outcomes
    shuffle                     shuffle the log files by bucket: each partition's rows written once, read alone
    log_columns                 assemble the joined rounds into arrays (LogColumns)
    feedback                    LoggedFeedback, the validated input of every estimator
    logs                        the log reader's entry points (feedback_from_logs, join_logs, ...)
    dsjson                      Vowpal Wabbit decision-service JSON as LoggedFeedback
    policies                    target policies: resolve_target, one_hot, uniform
    learning                    learning policies: progressive validation, time split
    intervals                   per-round terms -> value, standard error, interval
    diagnostics                 importance weights and their diagnostics
    stats                       mergeable summaries of per-round terms and weights (TermStats, WeightStats)
    reward_models, vw_reward    cross-fitted reward models for DM / DR
    base, ips, dr               the estimator template and the estimators
    evaluate                    several policies x several estimators -> one table
    partition_models            reward models fitted once on a sample of the log, applied per partition
    partition_specs             the targets and estimators a log partition computes on its own
    distributed                 evaluate_logs: the same table from log partitions, here or on Dask
    gate_options, gate_result   the gate's options (GateOptions) and verdict (GateResult)
    gate                        the promotion gate: measures the cells and decides
    partition_gate              gate_logs: the same gate on log partitions, here or on Dask
    confseq                     confidence sequences: anytime-valid bounds on off-policy values
    monitor                     CanaryMonitor: promote / roll back / continue after every batch
    synthetic                   synthetic problems with a known policy value
    cli                         ``python -m ope``

Examples
--------
>>> import numpy as np
>>> import ope
>>> rng = np.random.default_rng(0)
>>> a = rng.integers(0, 3, 5000)
>>> fb = ope.LoggedFeedback(actions=a, rewards=rng.binomial(1, 0.2 + 0.3 * a),
...                         propensities=np.full(5000, 1 / 3), n_actions=3)
>>> est = ope.SNIPS().estimate(fb, ope.one_hot(np.full(5000, 2), 3), seed=0)
>>> est.ci_low < 0.8 < est.ci_high
True
"""

from ope.base import Estimate, Estimator
from ope.distributed import evaluate_logs
from ope.dsjson import feedback_from_dsjson
from ope.diagnostics import DiagnosticThresholds, Diagnostics, diagnose, importance_weights
from ope.dr import DM, DR, SNDR, DRos, SwitchDR
from ope.errors import (
    CorruptLogError,
    InvalidConfigError,
    InvalidFeedbackError,
    InvalidTargetError,
    LogsNotFoundError,
    OPEError,
)
from ope.confseq import LowerConfidenceSequence, OffPolicyCS, SequenceBounds
from ope.evaluate import evaluate
from ope.gate import GateOptions, GateResult, Guardrail, gate
from ope.partition_gate import gate_logs
from ope.feedback import LoggedFeedback
from ope.monitor import CanaryMonitor, GuardrailStatus, MonitorOptions, MonitorResult
from ope.intervals import Interval, RoundTerms, confidence_interval
from ope.ips import IPS, SNIPS
from ope.logs import action_space, feedback_from_logs, join_logs, scan_decisions, scan_outcomes
from ope.policies import Policy, one_hot, resolve_target, uniform
from ope.learning import LearningEvaluation, LearningPolicy, progressive, resolve_learning, time_split
from ope.reward_models import cross_fit_predictions, encode_contexts
from ope.stats import TermStats, WeightStats
from ope.synthetic import SyntheticBandit, SyntheticProblem
from ope.vw_reward import VWRegressor

__all__ = [
    "LearningEvaluation",
    "LearningPolicy",
    "progressive",
    "resolve_learning",
    "time_split",
    "DM",
    "DR",
    "DRos",
    "DiagnosticThresholds",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "GateOptions",
    "GateResult",
    "Guardrail",
    "IPS",
    "Interval",
    "InvalidConfigError",
    "InvalidFeedbackError",
    "InvalidTargetError",
    "LoggedFeedback",
    "LogsNotFoundError",
    "OPEError",
    "CorruptLogError",
    "CanaryMonitor",
    "GuardrailStatus",
    "LowerConfidenceSequence",
    "MonitorOptions",
    "MonitorResult",
    "OffPolicyCS",
    "SequenceBounds",
    "Policy",
    "RoundTerms",
    "SNDR",
    "SNIPS",
    "SwitchDR",
    "SyntheticBandit",
    "SyntheticProblem",
    "TermStats",
    "WeightStats",
    "VWRegressor",
    "action_space",
    "confidence_interval",
    "cross_fit_predictions",
    "diagnose",
    "encode_contexts",
    "evaluate",
    "evaluate_logs",
    "feedback_from_dsjson",
    "feedback_from_logs",
    "gate",
    "gate_logs",
    "importance_weights",
    "join_logs",
    "one_hot",
    "resolve_target",
    "scan_decisions",
    "scan_outcomes",
    "uniform",
]
