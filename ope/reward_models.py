"""Cross-fitted reward models ``q(x, a) ~ E[r | x, a]`` for the DM/DR family.

Any scikit-learn regressor or classifier works: it is cloned (never fitted in place),
and fitted with K-fold cross-fitting so that no round's prediction comes from a model
that saw that round (Chernozhukov et al., 2018, "Double/debiased machine learning").
Contexts are encoded as numeric columns (booleans as 0/1, nulls filled with the
column mean) plus one-hot columns for strings, categoricals and enums (levels
sorted, the first dropped), and the action is appended as one-hot columns. Classifiers predict ``sum_c c * P(c | x, a)``
(the expected reward; for 0/1 rewards, the probability of 1). Linear models see no
context-action interaction: use a tree ensemble or a pipeline adding interactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import clone, is_classifier
from sklearn.model_selection import KFold

from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.feedback import LoggedFeedback

__all__ = ["encode_contexts", "cross_fit_predictions", "ContextEncoding", "with_action", "predict_rewards",
           "predict_actions", "seeded_clone", "check_reward_model", "fold_seeds"]

_SEED_BOUND = 2**31 - 1


def encode_contexts(contexts: pl.DataFrame | None, n_rounds: int) -> np.ndarray:
    """Encode mixed numeric/categorical contexts as a float matrix.

    Parameters
    ----------
    contexts : polars.DataFrame or None
        Numeric, boolean, string, categorical or enum columns.
    n_rounds : int
        Number of rows (used when ``contexts`` is None).

    Returns
    -------
    numpy.ndarray, shape (n_rounds, n_features)

    Examples
    --------
    >>> df = pl.DataFrame({"tokens": [10, None, 30], "task": ["code", "chat", "code"]})
    >>> encode_contexts(df, 3)
    array([[10.,  1.],
           [20.,  0.],
           [30.,  1.]])
    """
    return ContextEncoding.fit(contexts).transform(contexts, n_rounds)


@dataclass(frozen=True)
class ContextEncoding:
    """How :func:`encode_contexts` turns contexts into columns, learnt on some rows and applied to others.

    ``columns``: per context column ``(name, None, fill)`` for a numeric or boolean column (nulls
    become ``fill``, the mean of the rows it was fitted on; NaN becomes 0) or ``(name, levels, None)``
    for a string, categorical or enum column (one-hot over the sorted ``levels``, the first dropped
    when there are several; a level the fitted rows did not have encodes as all zeros).

    Examples
    --------
    >>> enc = ContextEncoding.fit(pl.DataFrame({"tokens": [10, 30], "task": ["code", "chat"]}))
    >>> enc.transform(pl.DataFrame({"tokens": [None, 5], "task": ["math", "code"]}), 2)
    array([[20.,  0.],
           [ 5.,  1.]])
    """

    columns: tuple[tuple[str, tuple[str, ...] | None, float | None], ...] = ()

    @classmethod
    def fit(cls, contexts: pl.DataFrame | None) -> ContextEncoding:
        """The encoding of ``contexts``' columns (their means and levels); None: no column."""
        if contexts is None:
            return cls()
        columns = []
        for name, dtype in contexts.schema.items():
            col = contexts.get_column(name)
            if dtype.is_numeric() or dtype == pl.Boolean:
                mean = col.cast(pl.Float64).mean()
                columns.append((name, None, mean if mean is not None else 0.0))
            elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
                cats = col.cast(pl.String).fill_null("<null>").unique(maintain_order=True).sort()
                columns.append((name, tuple(cats.to_list()), None))
            else:
                raise InvalidFeedbackError(
                    "contexts", f"contexts column {name!r} has unsupported dtype {dtype}; use numeric or string columns"
                )
        return cls(tuple(columns))

    def transform(self, contexts: pl.DataFrame | None, n_rounds: int) -> np.ndarray:
        """The float matrix of ``contexts`` (the fitted columns), shape (n_rounds, n_features)."""
        if not self.columns:
            return np.zeros((n_rounds, 0))
        blocks = []
        for name, cats, fill in self.columns:
            col = contexts.get_column(name)
            if cats is None:
                blocks.append(col.cast(pl.Float64).fill_null(fill).fill_nan(0.0).to_numpy()[:, None])
                continue
            codes = (col.cast(pl.String).fill_null("<null>")
                     .replace_strict(cats, range(len(cats)), default=-1, return_dtype=pl.Int64).to_numpy())
            block = np.zeros((n_rounds, len(cats)))
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(block[:, 1:] if len(cats) > 1 else block)
        return np.hstack(blocks)


def with_action(x: np.ndarray, actions: np.ndarray, n_actions: int) -> np.ndarray:
    """The design matrix of a reward model: the encoded contexts ``x`` and the actions one-hot.

    >>> with_action(np.array([[2.0]]), np.array([1]), 2)
    array([[2., 0., 1.]])
    """
    onehot = np.zeros((x.shape[0], n_actions))
    onehot[np.arange(x.shape[0]), actions] = 1.0
    return np.hstack([x, onehot])


def predict_rewards(model: Any, x: np.ndarray) -> np.ndarray:
    """A fitted model's expected reward on the design rows ``x`` (a classifier: ``sum_c c * P(c | x)``)."""
    if is_classifier(model):
        classes = np.asarray(model.classes_, dtype=np.float64)
        return model.predict_proba(x) @ classes
    return np.asarray(model.predict(x), dtype=np.float64).ravel()


def predict_actions(model: Any, x: np.ndarray, n_actions: int) -> np.ndarray:
    """A fitted model's ``q(x_i, k)`` for every row of the encoded contexts ``x`` and every action,
    shape (n_rows, n_actions)."""
    out = np.empty((x.shape[0], n_actions))
    for k in range(n_actions):
        out[:, k] = predict_rewards(model, with_action(x, np.full(x.shape[0], k), n_actions))
    return out


def seeded_clone(model: Any, seed: int) -> Any:
    """An unfitted clone of ``model``; a ``random_state`` left at None is set to ``seed``."""
    fresh = clone(model)
    params = fresh.get_params(deep=False)
    if "random_state" in params and params["random_state"] is None:
        fresh.set_params(random_state=seed)
    return fresh


def check_reward_model(model: Any) -> None:
    """Raise :class:`~ope.errors.InvalidConfigError` naming ``reward_model`` unless ``model`` is a
    scikit-learn estimator."""
    if not hasattr(model, "fit") or not hasattr(model, "get_params"):
        raise InvalidConfigError("reward_model", f"reward_model must be a scikit-learn estimator, got {model!r}")


def fold_seeds(seed: int | np.random.Generator | None) -> tuple[int, int]:
    """The integer seeds (of the fold split, of the models) that cross-fitting draws from ``seed``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    split_seed, model_seed = (int(s) for s in rng.integers(0, _SEED_BOUND, size=2))
    return split_seed, model_seed


def cross_fit_predictions(
    feedback: LoggedFeedback,
    model: Any,
    *,
    n_folds: int = 5,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """K-fold cross-fitted reward predictions for every round and every action.

    Parameters
    ----------
    feedback : LoggedFeedback
        Logged rounds; contexts (if any) are encoded with :func:`encode_contexts`.
    model : scikit-learn regressor or classifier
        Cloned for each fold, never fitted in place. A ``random_state`` left at None
        is set to an integer drawn from ``seed``.
    n_folds : int
        Number of folds (>= 2); each round is predicted by the model fitted on the
        other folds.
    seed : int or numpy.random.Generator or None
        Seeds the fold split and the models.

    Returns
    -------
    numpy.ndarray, shape (n_rounds, n_actions)

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 2, 200)
    >>> fb = LoggedFeedback(actions=a, rewards=a * 1.0 + rng.normal(0, 0.1, 200),
    ...                     propensities=np.full(200, 0.5), n_actions=2)
    >>> q = cross_fit_predictions(fb, Ridge(alpha=1e-6), n_folds=2, seed=0)
    >>> q.shape, np.round(q[0], 1).tolist()
    ((200, 2), [-0.0, 1.0])
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InvalidConfigError("n_folds", f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n_folds > feedback.n_rounds:
        raise InvalidConfigError("n_folds", f"n_folds must be <= n_rounds ({feedback.n_rounds}), got {n_folds}")
    check_reward_model(model)
    split_seed, model_seed = fold_seeds(seed)
    x = encode_contexts(feedback.contexts, feedback.n_rounds)
    actions = np.asarray(feedback.actions)
    rewards = np.asarray(feedback.rewards)
    out = np.empty((feedback.n_rounds, feedback.n_actions))
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=split_seed)
    for train, test in folds.split(x):
        fitted = seeded_clone(model, model_seed).fit(
            with_action(x[train], actions[train], feedback.n_actions), rewards[train]
        )
        out[test] = predict_actions(fitted, x[test], feedback.n_actions)
    return out
