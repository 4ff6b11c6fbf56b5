"""Known-answer and contract tests for every estimator."""

import math
import pickle

import numpy as np
import pytest
from sklearn.linear_model import Ridge

import ope
from ope import DM, DR, IPS, SNDR, SNIPS, DRos, InvalidConfigError, LoggedFeedback, SwitchDR, one_hot
from ope.synthetic import SyntheticProblem

ALPHA_TEST = 0.001  # 99.9% intervals for "agrees with the truth" checks on fixed seeds


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    return request.param


def all_estimators(q):
    return [
        IPS(), IPS(clip=5.0), SNIPS(), DM(reward_predictions=q), DR(reward_predictions=q), DR(reward_predictions=q, clip=5.0),
        SNDR(reward_predictions=q), SwitchDR(reward_predictions=q, threshold=3.0), DRos(reward_predictions=q, shrinkage=5.0),
    ]


def unbiased_estimators(q):
    return [IPS(), SNIPS(), DR(reward_predictions=q), SNDR(reward_predictions=q)]


def test_on_policy_ips_is_sample_mean(seed):
    data = SyntheticProblem(seed=seed, n_actions=4).sample(2000, seed=seed + 10)
    fb = data.feedback
    est = IPS().estimate(fb, data.logging)
    assert est.value == pytest.approx(fb.rewards.mean(), abs=1e-12)
    assert est.mean_weight == pytest.approx(1.0) and est.ess == pytest.approx(fb.n_rounds)
    assert SNIPS().estimate(fb, data.logging).value == pytest.approx(fb.rewards.mean(), abs=1e-12)
    assert est.warnings == ()


def test_uniform_logging_estimators_agree_with_truth(seed):
    problem = SyntheticProblem(seed=seed, n_actions=4, logging_beta=0.0, exploration=0.0)
    truth = problem.true_value(n_rounds=1_000_000, seed=99)
    data = problem.sample(20_000, seed=seed + 100)
    q = data.expected_rewards + 0.1  # an imperfect reward model
    for estimator in unbiased_estimators(q):
        for interval in ("normal", "bootstrap"):
            est = estimator.estimate(data.feedback, data.target, alpha=ALPHA_TEST, interval=interval, seed=seed)
            assert est.ci_low <= truth <= est.ci_high, (estimator.name, interval, est, truth)


def test_dr_unbiased_with_wrong_model_dm_is_not(seed):
    problem = SyntheticProblem(seed=seed, n_actions=3, logging_beta=1.0)
    truth = problem.true_value(n_rounds=1_000_000, seed=98)
    data = problem.sample(50_000, seed=seed + 200)
    wrong = np.full_like(data.expected_rewards, 0.9)  # deliberately wrong reward model
    dr = DR(reward_predictions=wrong).estimate(data.feedback, data.target, alpha=ALPHA_TEST)
    dm = DM(reward_predictions=wrong).estimate(data.feedback, data.target, alpha=ALPHA_TEST)
    assert dr.ci_low <= truth <= dr.ci_high
    assert not dm.ci_low <= truth <= dm.ci_high
    assert dm.value == pytest.approx(0.9)


def test_dr_mean_over_replications_is_unbiased():
    problem = SyntheticProblem(seed=5, n_actions=3, noise="gaussian")
    truth = problem.true_value(n_rounds=1_000_000, seed=97)
    values = []
    for rep in range(200):
        data = problem.sample(500, seed=rep)
        wrong = np.full_like(data.expected_rewards, -1.0) + data.expected_rewards[:, ::-1]
        values.append(DR(reward_predictions=wrong).estimate(data.feedback, data.target).value)
    values = np.asarray(values)
    z = (values.mean() - truth) / (values.std(ddof=1) / math.sqrt(values.size))
    assert abs(z) < 3.3


def test_dm_exact_with_perfect_model(seed):
    problem = SyntheticProblem(seed=seed, n_actions=5)
    data = problem.sample(3000, seed=seed)
    exact = float(np.einsum("ij,ij->i", data.expected_rewards, data.target).mean())
    assert DM(reward_predictions=data.expected_rewards).estimate(data.feedback, data.target).value == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("index", range(9))
def test_contract_every_estimator(index):
    data = SyntheticProblem(seed=3, n_actions=4).sample(3000, seed=4)
    estimator = all_estimators(data.expected_rewards)[index]
    fb, target = data.feedback, data.target
    runs = [estimator.estimate(fb, target, interval="bootstrap", n_bootstrap=200, seed=7) for _ in range(2)]
    assert runs[0].value == runs[1].value and runs[0].ci_low == runs[1].ci_low  # same seed, same result
    for interval in ("normal", "bootstrap", "bernstein"):
        est = estimator.estimate(fb, target, interval=interval, n_bootstrap=200, seed=1)
        assert est.ci_low <= est.value <= est.ci_high
        assert est.stderr > 0 and est.n == 3000 and est.interval == interval
    per_round = estimator.per_round(fb, target)
    assert per_round.shape == (3000,)
    assert per_round.mean() == pytest.approx(est.value, rel=1e-10, abs=1e-12)
    assert np.array_equal(est.per_round, per_round)
    normal = estimator.estimate(fb, target)
    assert normal.stderr == pytest.approx(per_round.std(ddof=1) / math.sqrt(3000))
    assert pickle.loads(pickle.dumps(estimator)).estimate(fb, target).value == normal.value
    # a deterministic target (one-hot rows) works everywhere
    det = one_hot(data.expected_rewards.argmax(axis=1), 4)
    assert np.isfinite(estimator.estimate(fb, det).value)


def test_snips_delta_method_and_ratio_bootstrap():
    data = SyntheticProblem(seed=1, n_actions=5, logging_beta=2.0).sample(4000, seed=2)
    fb, target = data.feedback, data.target
    w = target[np.arange(fb.n_rounds), fb.actions] / fb.propensities
    r = fb.rewards
    value = (w * r).sum() / w.sum()
    infl = w * (r - value) / w.mean()
    est = SNIPS().estimate(fb, target)
    assert est.value == pytest.approx(value)
    assert est.stderr == pytest.approx(infl.std(ddof=1) / math.sqrt(fb.n_rounds))
    boot = SNIPS().estimate(fb, target, interval="bootstrap", n_bootstrap=2000, seed=0)
    assert boot.stderr == pytest.approx(est.stderr, rel=0.1)  # ratio bootstrap matches delta method
    # reference: explicit loop bootstrap that re-normalises every resample
    rng = np.random.default_rng(0)
    ref = []
    for _ in range(2000):
        i = rng.integers(0, fb.n_rounds, fb.n_rounds)
        ref.append((w[i] * r[i]).sum() / w[i].sum())
    assert boot.ci_low == pytest.approx(np.quantile(ref, 0.025), abs=0.25 * est.stderr)
    assert boot.ci_high == pytest.approx(np.quantile(ref, 0.975), abs=0.25 * est.stderr)


def test_clipping_and_shrinkage_limits():
    data = SyntheticProblem(seed=2, n_actions=4).sample(2000, seed=3)
    fb, target, q = data.feedback, data.target, data.expected_rewards
    dr = DR(reward_predictions=q).estimate(fb, target).value
    dm = DM(reward_predictions=q).estimate(fb, target).value
    assert SwitchDR(reward_predictions=q).estimate(fb, target).value == pytest.approx(dr)
    assert SwitchDR(reward_predictions=q, threshold=0.0).estimate(fb, target).value == pytest.approx(dm)
    assert DRos(reward_predictions=q, shrinkage=math.inf).estimate(fb, target).value == pytest.approx(dr)
    assert DRos(reward_predictions=q, shrinkage=0.0).estimate(fb, target).value == pytest.approx(dm)
    assert IPS(clip=1e9).estimate(fb, target).value == pytest.approx(IPS().estimate(fb, target).value)


def test_reward_model_cross_fitted_inside_estimator():
    data = SyntheticProblem(seed=0, n_actions=3, noise="gaussian").sample(3000, seed=1)
    model = Ridge(alpha=1.0)
    est = DR(reward_model=model, n_folds=3).estimate(data.feedback, data.target, seed=0)
    again = DR(reward_model=model, n_folds=3).estimate(data.feedback, data.target, seed=0)
    assert est.value == again.value
    assert not hasattr(model, "coef_")  # never fitted in place


def test_diagnostics_warn():
    fb = LoggedFeedback(actions=[0] * 200, rewards=[1.0] * 200, propensities=[0.5] * 200, n_actions=3)
    est = IPS().estimate(fb, np.tile([0.0, 0.0, 1.0], (200, 1)))
    text = " ".join(est.warnings)
    assert "support_deficiency 100.00%" in text and "effective sample size" in text
    # wrong propensities are caught by the mean weight
    data = SyntheticProblem(seed=0, n_actions=4).sample(20_000, seed=0)
    bad = LoggedFeedback(actions=data.feedback.actions, rewards=data.feedback.rewards,
                         propensities=np.full(20_000, 0.5), n_actions=4)
    assert any("mean_weight" in w for w in IPS().estimate(bad, data.target).warnings)
    assert not any("mean_weight" in w for w in IPS().estimate(data.feedback, data.target).warnings)


def test_support_deficiency_exact_with_logging_distribution():
    logging = np.tile([0.5, 0.5, 0.0], (4, 1))
    fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0] * 4, propensities=[0.5] * 4, n_actions=3,
                        logging_distribution=logging)
    est = IPS().estimate(fb, np.tile([0.5, 0.0, 0.5], (4, 1)))
    assert est.support_deficiency == pytest.approx(0.5) and est.diagnostics.support_exact


@pytest.mark.parametrize(
    ("factory", "field", "match"),
    [
        (lambda: IPS(clip=0), "clip", r"clip must be > 0 or None, got 0"),
        (lambda: IPS(clip=float("nan")), "clip", r"clip must be > 0 or None"),
        (lambda: IPS(clip=True), "clip", r"clip must be > 0 or None, got True"),
        (lambda: IPS(clip="3"), "clip", r"clip must be > 0 or None, got '3'"),
        (lambda: DR(reward_model=Ridge(), clip=-1.0), "clip", r"clip must be > 0 or None, got -1.0"),
        (lambda: DR(), "reward_model", r"DR needs exactly one of reward_model or reward_predictions"),
        (lambda: DR(reward_model=Ridge(), reward_predictions=np.ones((2, 2))), "reward_model", r"exactly one"),
        (lambda: DR(reward_model=Ridge(), n_folds=1), "n_folds", r"n_folds must be an integer >= 2, got 1"),
        (lambda: SwitchDR(reward_model=Ridge(), threshold=-1.0), "threshold", r"threshold must be >= 0, got -1.0"),
        (lambda: DRos(reward_model=Ridge(), shrinkage=-2.0), "shrinkage", r"shrinkage must be >= 0, got -2.0"),
    ],
)
def test_bad_config(factory, field, match):
    with pytest.raises(InvalidConfigError, match=match) as info:
        factory()
    assert info.value.field == field


def test_bad_estimate_arguments():
    fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    target = [[0.5, 0.5]] * 2
    with pytest.raises(InvalidConfigError, match=r"alpha must be in \(0, 1\), got 1.5"):
        IPS().estimate(fb, target, alpha=1.5)
    with pytest.raises(InvalidConfigError, match=r"interval must be one of .*got 'wald'"):
        IPS().estimate(fb, target, interval="wald")
    with pytest.raises(InvalidConfigError, match=r"n_bootstrap must be an integer >= 2, got 1"):
        IPS().estimate(fb, target, interval="bootstrap", n_bootstrap=1)
    with pytest.raises(InvalidConfigError, match=r"reward_predictions must have shape \(2, 2\), got \(3, 2\)"):
        DR(reward_predictions=np.zeros((3, 2))).estimate(fb, target)


def test_snips_zero_weights_is_nan_with_warning():
    fb = LoggedFeedback(actions=[0, 0], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    est = SNIPS().estimate(fb, [[0.0, 1.0]] * 2)
    assert math.isnan(est.value) and any("undefined" in w for w in est.warnings)


def test_policy_protocol_object():
    class Greedy:
        def action_distribution(self, contexts, action_names):
            return one_hot((contexts["x0"].to_numpy() > 0).astype(int), len(action_names))

    data = SyntheticProblem(seed=0, n_actions=2).sample(500, seed=0)
    est = ope.IPS().estimate(data.feedback, Greedy())
    target = one_hot((data.feedback.contexts["x0"].to_numpy() > 0).astype(int), 2)
    assert est.value == ope.IPS().estimate(data.feedback, target).value
