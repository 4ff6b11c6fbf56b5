"""Cross-fitted reward models and context encoding."""

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.ensemble import RandomForestRegressor

import ope
from ope import InvalidConfigError, InvalidFeedbackError, LoggedFeedback, cross_fit_predictions


def feedback(n=400, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    x = rng.normal(size=n)
    ctx = pl.DataFrame({"x": x, "task": rng.choice(["chat", "code"], n), "flag": rng.random(n) < 0.5})
    r = (rng.random(n) < 0.2 + 0.6 * a).astype(float)
    return LoggedFeedback(actions=a, rewards=r, propensities=np.full(n, 0.5), n_actions=2, contexts=ctx)


def test_no_round_predicted_by_a_model_that_saw_it():
    # 1-nearest-neighbour memorises: in-sample it would reproduce every reward exactly
    fb = feedback()
    q = cross_fit_predictions(fb, KNeighborsRegressor(n_neighbors=1), n_folds=5, seed=0)
    factual = q[np.arange(fb.n_rounds), fb.actions]
    assert not np.allclose(factual, fb.rewards)
    in_sample = KNeighborsRegressor(n_neighbors=1).fit(
        np.column_stack([ope.encode_contexts(fb.contexts, fb.n_rounds), np.eye(2)[fb.actions]]), fb.rewards
    )
    assert np.allclose(in_sample.predict(np.column_stack([ope.encode_contexts(fb.contexts, fb.n_rounds), np.eye(2)[fb.actions]])), fb.rewards)


def test_classifier_gives_probabilities_and_model_not_fitted_in_place():
    fb = feedback()
    model = LogisticRegression()
    q = cross_fit_predictions(fb, model, n_folds=3, seed=1)
    assert q.shape == (fb.n_rounds, 2) and ((q >= 0) & (q <= 1)).all()
    assert q[:, 1].mean() > q[:, 0].mean() + 0.4
    assert not hasattr(model, "coef_")


def test_seeded_and_random_state_derived():
    fb = feedback()
    model = RandomForestRegressor(n_estimators=5)
    a = cross_fit_predictions(fb, model, n_folds=2, seed=3)
    b = cross_fit_predictions(fb, model, n_folds=2, seed=3)
    assert np.array_equal(a, b) and model.get_params()["random_state"] is None


def test_encoding_errors_and_config_errors():
    with pytest.raises(InvalidFeedbackError, match="contexts column 'l' has unsupported dtype"):
        ope.encode_contexts(pl.DataFrame({"l": [[1], [2]]}), 2)
    fb = feedback(n=10)
    with pytest.raises(InvalidConfigError, match="n_folds must be <= n_rounds"):
        cross_fit_predictions(fb, LogisticRegression(), n_folds=20)
    with pytest.raises(InvalidConfigError, match="reward_model must be a scikit-learn estimator"):
        cross_fit_predictions(fb, object(), n_folds=2)
