"""Agreement with Open Bandit Pipeline on identical inputs (skipped without obp).

Run in the OBP venv: /work/venv-obp/bin/python -m pytest -q tests/test_ope_obp.py
"""

import numpy as np
import pytest

import ope
from ope.synthetic import SyntheticProblem

obp_est = pytest.importorskip("obp.ope.estimators")


@pytest.fixture(scope="module", params=["stochastic", "deterministic"])
def case(request):
    data = SyntheticProblem(seed=11, n_actions=6, logging_beta=1.5).sample(5000, seed=12)
    target = data.target
    if request.param == "deterministic":
        target = ope.one_hot(data.target.argmax(axis=1), 6)
    rng = np.random.default_rng(13)
    q = np.clip(data.expected_rewards + rng.normal(0, 0.1, data.expected_rewards.shape), 0, 1)
    fb = data.feedback
    obp_inputs = dict(reward=np.asarray(fb.rewards), action=np.asarray(fb.actions), pscore=np.asarray(fb.propensities),
                      action_dist=target[:, :, None])
    return fb, target, q, obp_inputs


PAIRS = [
    (lambda q: ope.IPS(), lambda: obp_est.InverseProbabilityWeighting(), False),
    (lambda q: ope.IPS(clip=3.0), lambda: obp_est.InverseProbabilityWeighting(lambda_=3.0), False),
    (lambda q: ope.SNIPS(), lambda: obp_est.SelfNormalizedInverseProbabilityWeighting(), False),
    (lambda q: ope.DM(reward_predictions=q), lambda: obp_est.DirectMethod(), True),
    (lambda q: ope.DR(reward_predictions=q), lambda: obp_est.DoublyRobust(), True),
    (lambda q: ope.DR(reward_predictions=q, clip=3.0), lambda: obp_est.DoublyRobust(lambda_=3.0), True),
    (lambda q: ope.SNDR(reward_predictions=q), lambda: obp_est.SelfNormalizedDoublyRobust(), True),
    (lambda q: ope.SwitchDR(reward_predictions=q, threshold=2.0), lambda: obp_est.SwitchDoublyRobust(lambda_=2.0), True),
    (lambda q: ope.DRos(reward_predictions=q, shrinkage=5.0), lambda: obp_est.DoublyRobustWithShrinkage(lambda_=5.0), True),
    (lambda q: ope.DRos(reward_predictions=q, shrinkage=100.0), lambda: obp_est.DoublyRobustWithShrinkage(lambda_=100.0), True),
]


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_same_value_as_obp(case, pair):
    fb, target, q, inputs = case
    ours, theirs, needs_q = PAIRS[pair]
    kwargs = dict(inputs)
    if needs_q:
        kwargs["estimated_rewards_by_reg_model"] = q[:, :, None]
        kwargs.pop("pscore") if isinstance(theirs(), obp_est.DirectMethod) else None
    expected = theirs().estimate_policy_value(**kwargs)
    value = ours(q).estimate(fb, target).value
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)
