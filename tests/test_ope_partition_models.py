"""Model-based estimators on log partitions (ope/partition_models.py, ope.evaluate_logs): reward models
fitted once on a sample and cross-fitted by bucket; the same values here, on Dask and for any number of
partitions; DR on partitions is unbiased with a wrong reward model and its normal interval covers."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge

import ope
import ope.cli
from ope.log_columns import plan_reading, read_partition
from ope.partition_models import SampleRewardModels, fit_for_estimators, fold_of, sample_stride, with_predictions
from ope.reward_models import predict_actions
from test_ope_distributed import SPECS, _assert_same_table, _write_logs
from test_ope_logs import DECISION_SCHEMA, OUTCOME_SCHEMA

distributed = pytest.importorskip("distributed")

PROFILES = ["small", "medium", "large"]
TASKS = ["chat", "code", "math"]
LOGGING = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])  # per task
TRUTH = np.array([[0.8, 0.6, 0.3], [0.3, 0.6, 0.9], [0.2, 0.5, 0.9]])  # P(reward = 1 | task, profile): interacting
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _estimators(model):
    return [ope.DM(reward_model=model), ope.DR(reward_model=model, clip=4.0), ope.SNDR(reward_model=model),
            ope.SwitchDR(reward_model=model, threshold=3.0), ope.DRos(reward_model=model, shrinkage=5.0)]


def _synthetic_logs(root, n, seed, *, prefix="r"):
    """``n`` decisions of one writer: task uniform, per-task logging distribution, Bernoulli(TRUTH) rewards,
    a unique numeric context ``uid`` and ``tokens`` (null on every 5th: its fill value is the sample's
    mean in every partition); every decision has one outcome (quality missing on every 4th)."""
    rng = np.random.default_rng(seed)
    task = rng.integers(0, 3, n)
    probs = LOGGING[task]
    action = np.minimum((probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), 2)
    reward = (rng.random(n) < TRUTH[task, action]).astype(float)
    ids = [f"{prefix}{seed}-{i}" for i in range(n)]
    ts = [T0 + dt.timedelta(seconds=i) for i in range(n)]
    decisions = {
        "decision_id": ids, "ts": ts, "writer": ["w"] * n, "seq": list(range(n)), "policy_version": ["v1"] * n,
        "context": [json.dumps({"task_type": TASKS[t], "uid": i, "tokens": None if i % 5 == 4 else int(k)})
                    for i, (t, k) in enumerate(zip(task, rng.integers(10, 1000, n)))],
        "task_types": [TASKS] * n, "task_probs": [[1 / 3] * 3] * n, "profiles": [PROFILES] * n,
        "probabilities": probs.tolist(), "profile": [PROFILES[a] for a in action],
        "propensity": probs[np.arange(n), action], "excluded": ["{}"] * n, "fallback_reason": [None] * n,
        "schema_version": [1] * n,
    }
    quality = [None if i % 4 == 0 else float(r) for i, r in enumerate(reward)]
    outcomes = {"decision_id": ids, "ts": [t + dt.timedelta(seconds=1) for t in ts], "writer": ["w"] * n,
                "seq": list(range(n)), "quality": quality, "cost_usd": [0.001] * n, "latency_ms": [500.0] * n,
                "reward": reward, "status": ["applied"] * n, "schema_version": [1] * n}
    for kind, rows, schema in (("decisions", decisions, DECISION_SCHEMA), ("outcomes", outcomes, OUTCOME_SCHEMA)):
        path = root / kind / "date=2026-01-01"
        path.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=schema).write_parquet(path / "part-w-000000.parquet")
    return root


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return _write_logs(tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return _synthetic_logs(tmp_path_factory.mktemp("synthetic"), 2400, 1)


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


# ---------------------------------------------------------------- engines and partitions agree


def test_dask_and_local_engines_agree_for_every_model_based_estimator(logs, client):
    estimators = [ope.IPS(), *_estimators(Ridge(alpha=1.0))]
    here = ope.evaluate_logs(logs, SPECS, estimators, engine="local", n_partitions=3, reward_sample=800, seed=3)
    on_cluster = ope.evaluate_logs(logs, SPECS, estimators, engine=client, n_partitions=5, reward_sample=800, seed=3)
    _assert_same_table(on_cluster, here)
    assert here["estimator"].to_list()[:6] == ["IPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"]
    dm = here.filter(pl.col("estimator") == "DM")["stderr"].to_numpy()
    dr = here.filter(pl.col("estimator") == "DR")["stderr"].to_numpy()
    assert np.isfinite(here["value"].to_numpy()).all() and (dm < dr).all()  # the model is used
    # the contexts matter: a model that sees the action alone gives other values
    alone = ope.evaluate_logs(logs, SPECS, estimators, engine="local", n_partitions=3, reward_sample=800, seed=3,
                              contexts=False)
    assert not np.allclose(alone.filter(pl.col("estimator") == "DM")["value"].to_numpy(),
                           here.filter(pl.col("estimator") == "DM")["value"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("n_partitions", [1, 4, 9])
def test_the_number_of_partitions_does_not_change_the_values(synthetic, n_partitions):
    estimators = _estimators(Ridge(alpha=1.0))
    ref = ope.evaluate_logs(synthetic, SPECS, estimators, n_partitions=2, reward_sample=700, seed=0)
    got = ope.evaluate_logs(synthetic, SPECS, estimators, n_partitions=n_partitions, reward_sample=700, seed=0)
    _assert_same_table(got, ref)


# ---------------------------------------------------------------- cross-fitting


class Memo(RegressorMixin, BaseEstimator):
    """Predicts 1 on a design row it was fitted on, 0 elsewhere (a model that memorises)."""

    def fit(self, x, y):
        self.seen_ = {tuple(row) for row in np.asarray(x)}
        return self

    def predict(self, x):
        return np.array([float(tuple(row) in self.seen_) for row in np.asarray(x)])


@pytest.mark.parametrize("n_folds, sample_rounds", [(2, 2400), (3, 800), (4, 600)])
def test_no_sample_round_is_predicted_by_a_model_that_saw_it(synthetic, n_folds, sample_rounds):
    plan = plan_reading(synthetic, contexts=True)
    models = SampleRewardModels.fit(plan, Memo(), n_folds=n_folds, sample_rounds=sample_rounds)
    stride = sample_stride(plan.n_decisions, sample_rounds)
    sample = read_partition(plan, 0, stride)
    assert models.stride == stride and models.n_sample == sample.actions.shape[0] > 0
    q = models.predict(sample)
    assert (q == 0).all()  # each round by the model of its fold, which did not see it
    x = models.encoding.transform(sample.contexts, sample.actions.shape[0])
    fold = models.folds(sample)
    logged = np.arange(sample.actions.shape[0]), sample.actions
    for k, fitted in enumerate(models.models):  # model k saw every sample round outside fold k
        seen = predict_actions(fitted, x, plan_n := len(plan.action_names))[logged]
        np.testing.assert_array_equal(seen, (fold != k).astype(float))
    assert plan_n == 3
    other = read_partition(plan, 1, stride) if stride > 1 else None
    if other is not None:
        assert (models.predict(other) == 0).all()


@pytest.mark.parametrize("stride, n_folds", [(4, 2), (6, 3), (10, 5), (5, 5), (3, 2)])
def test_the_sample_fills_every_fold_when_stride_and_folds_share_factors(synthetic, stride, n_folds):
    plan = plan_reading(synthetic)
    sample_rounds = math.ceil(plan.n_decisions / stride)
    assert sample_stride(plan.n_decisions, sample_rounds) == stride
    assert sample_stride(plan.n_decisions + 1, sample_rounds) == stride + 1  # a ceiling
    sample = read_partition(plan, 0, stride)
    n = sample.buckets.shape[0]
    if math.gcd(stride, n_folds) > 1:  # what bucket % K would do: the whole sample in few folds
        assert np.unique(sample.buckets % n_folds).size < n_folds
    counts = np.bincount(fold_of(sample.buckets, stride, n_folds), minlength=n_folds)
    p = 1 / n_folds
    assert (np.abs(counts - n * p) <= 4 * math.sqrt(n * p * (1 - p))).all(), counts
    models = SampleRewardModels.fit(plan, Ridge(), n_folds=n_folds, sample_rounds=sample_rounds)
    np.testing.assert_array_equal(np.bincount(models.folds(sample), minlength=n_folds), counts)


def test_a_metric_other_than_the_reward_fits_on_the_rounds_that_have_it(synthetic):
    plan = plan_reading(synthetic, contexts=True, metrics=True)
    models = SampleRewardModels.fit(plan, Ridge(), n_folds=2, sample_rounds=10_000, metric="quality", seed=0)
    sample = read_partition(plan, 0, 1)
    n_quality = int(sample.metrics["quality"].is_not_null().sum())
    assert models.metric == "quality" and models.n_sample == n_quality < sample.actions.shape[0]
    assert models.predict(sample).shape == (sample.actions.shape[0], 3)
    with pytest.raises(ope.InvalidConfigError, match=r"metric 'quality' needs a plan that reads the metrics") as info:
        SampleRewardModels.fit(plan_reading(synthetic), Ridge(), metric="quality")
    assert info.value.field == "metric"


def test_seeds_and_pickling(synthetic):
    import pickle

    from sklearn.ensemble import HistGradientBoostingRegressor

    plan = plan_reading(synthetic, contexts=True)
    hgb = HistGradientBoostingRegressor(max_iter=20)
    a, b = (SampleRewardModels.fit(plan, hgb, n_folds=2, sample_rounds=1000, seed=7) for _ in range(2))
    assert hgb.random_state is None and a.models[0].random_state == b.models[0].random_state is not None
    part = read_partition(plan, 2, 3)
    np.testing.assert_array_equal(a.predict(part), pickle.loads(pickle.dumps(b)).predict(part))
    shared = Ridge()
    fitted = fit_for_estimators(plan, {"DM": ope.DM(reward_model=shared), "DR": ope.DR(reward_model=shared),
                                       "IPS": ope.IPS(), "DR#2": ope.DR(reward_model=Ridge())}, sample_rounds=1000)
    assert set(fitted) == {"DM", "DR", "DR#2"} and fitted["DM"] is fitted["DR"] is not fitted["DR#2"]
    est = with_predictions(ope.SwitchDR(reward_model=shared, threshold=2.0), np.zeros((4, 3)))
    assert est.threshold == 2.0 and est.reward_model is None


# ---------------------------------------------------------------- DR on partitions is unbiased


def test_dr_on_partitions_is_unbiased_and_its_interval_covers(tmp_path, seed):
    """A wrong reward model (Ridge: no task x profile interaction), fitted on a sample (stride 3, three
    folds): DR's mean error is within 3 standard errors of 0 and its 95% interval covers about 95%."""
    truth = {"large": TRUTH[:, 2].mean(), "u": TRUTH.mean()}
    n_reps, errors, covered, dm_errors = 40, [], [], []
    for rep in range(n_reps):
        root = _synthetic_logs(tmp_path / f"rep{rep}", 1500, 1000 * seed + rep)
        table = ope.evaluate_logs(root, {"large": "always:large", "u": "uniform"},
                                  [ope.DR(reward_model=Ridge(alpha=1.0), n_folds=3), ope.DM(reward_model=Ridge())],
                                  n_partitions=2, reward_sample=500, seed=rep)
        for row in table.iter_rows(named=True):
            error = row["value"] - truth[row["policy"]]
            if row["estimator"] == "DR":
                errors.append(error)
                covered.append(row["ci_low"] <= truth[row["policy"]] <= row["ci_high"])
            else:
                dm_errors.append(error)
    errors = np.array(errors)
    assert abs(errors.mean()) <= 3 * errors.std(ddof=1) / math.sqrt(errors.size), errors.mean()
    assert abs(np.mean(covered) - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / len(covered)), np.mean(covered)
    dm = np.array(dm_errors[0::2])  # always:large: the misspecified model is biased, DR corrects it
    assert abs(dm.mean()) > 3 * dm.std(ddof=1) / math.sqrt(dm.size)


# ---------------------------------------------------------------- errors and the CLI


def test_bad_reward_sample_and_reward_predictions_are_clear_errors(synthetic, tmp_path):
    dr = [ope.DR(reward_model=Ridge())]
    for bad in (0, -5, 1.5, True, "many"):
        with pytest.raises(ope.InvalidConfigError, match=r"reward_sample must be an integer >= 1, got") as info:
            ope.evaluate_logs(synthetic, {"u": "uniform"}, dr, reward_sample=bad)
        assert info.value.field == "reward_sample"
    with pytest.raises(ope.InvalidConfigError, match="reward_predictions are aligned with the rounds") as info:
        ope.evaluate_logs(synthetic, {"u": "uniform"}, [ope.DR(reward_predictions=np.zeros((3, 3)))])
    assert info.value.field == "estimators"
    one = _synthetic_logs(tmp_path, 1, 0)  # one round: its fold's model has nothing to fit on
    with pytest.raises(ope.InvalidFeedbackError, match="leaves no round to fit the model of fold") as info:
        ope.evaluate_logs(one, {"u": "uniform"}, [ope.DR(reward_model=Ridge(), n_folds=2)])
    assert info.value.field == "sample_rounds"
    with pytest.raises(ope.InvalidConfigError, match="sample_rounds must be an integer >= 1, got 0"):
        SampleRewardModels.fit(plan_reading(synthetic), Ridge(), sample_rounds=0)


def test_cli_engine_local_evaluates_the_model_based_estimators(synthetic, capsys):
    argv = [str(synthetic), "--policy", "u=uniform", "--policy", "big=always:large", "--engine", "local",
            "--contexts", "--reward-sample", "1000", "--json", "-"]
    assert ope.cli.main([*argv, "--estimators", "dr"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["estimator"]) for r in rows] == [("u", "DR"), ("big", "DR")]
    assert ope.cli.main([*argv[:-2], "--estimators", "ips,dm,dr,sndr,switch-dr,dros", "--partitions", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("IPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"):
        assert out.count(f" {name} ") == 2, name
    with pytest.raises(SystemExit):
        ope.cli.main([*argv, "--reward-sample", "0"])
    assert "argument --reward-sample: must be an integer >= 1, got '0'" in capsys.readouterr().err
