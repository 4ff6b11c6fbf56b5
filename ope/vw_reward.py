"""A Vowpal Wabbit reward model for the DM/DR family, as an alternative to scikit-learn.

:class:`VWRegressor` is a scikit-learn-compatible regressor (``fit``/``predict``,
``get_params``), so it plugs into ``reward_model=`` of :class:`ope.DM`, :class:`ope.DR`,
:class:`ope.SNDR`, ... and is cross-fitted like any other model by
:func:`ope.reward_models.cross_fit_predictions` (each fold gets a fresh VW model). The design
matrix there is the encoded context followed by the one-hot action; VW sees every column as
a feature of one namespace ``x`` with the quadratic interaction ``x x x``, which includes every
context x action product: plain VW regression on context x action features. With 0/1 rewards
it uses logistic loss and predicts probabilities (``loss="auto"``); ``--cb_adf --cb_type dm``
is deliberately not used (its scores are biased toward 0 in VW 9.9).

VW (``vowpal-wabbit-next``) is imported only when a model is fitted.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.integers(0, 2, size=(2000, 2)).astype(float)
>>> y = (rng.random(2000) < np.where(x[:, 0] == x[:, 1], 0.9, 0.1)).astype(float)
>>> model = VWRegressor(passes=5, random_state=0).fit(x, y)
>>> np.round(model.predict(np.array([[1.0, 1.0], [1.0, 0.0]])), 1).tolist()
[0.9, 0.1]
"""

from __future__ import annotations

import importlib

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ope.errors import InvalidConfigError

__all__ = ["VWRegressor"]

_SEED_BOUND = 2**31 - 1


def _vw():
    try:
        return importlib.import_module("vowpal_wabbit_next")
    except ImportError as exc:
        raise InvalidConfigError(
            "reward_model",
            f"reward_model VWRegressor needs vowpal_wabbit_next, which cannot be imported ({exc}); "
            "pip install vowpal-wabbit-next (wheels for CPython 3.8-3.12 on Linux x86_64, macOS, Windows)",
        ) from None


class VWRegressor(RegressorMixin, BaseEstimator):
    """VW linear regression with quadratic interactions, scikit-learn style.

    Parameters
    ----------
    loss : {"auto", "squared", "logistic"}
        ``"auto"``: logistic for 0/1 targets (predicting P(y = 1)), squared otherwise.
    passes : int
        Passes over the training rows, each in a fresh random order.
    interactions : bool
        Add all pairwise products of features (``-q xx``); without them the model is linear.
    learning_rate : float
        VW's ``-l``.
    l2 : float
        VW's ``--l2``.
    bits : int
        Hash table size ``2**bits``.
    random_state : int or None
        Seeds VW and the pass order.

    Attributes
    ----------
    n_features_in_ : int
    loss_ : str
        The loss used.
    """

    def __init__(self, *, loss: str = "auto", passes: int = 3, interactions: bool = True, learning_rate: float = 0.5,
                 l2: float = 0.0, bits: int = 18, random_state: int | None = None):
        self.loss = loss
        self.passes = passes
        self.interactions = interactions
        self.learning_rate = learning_rate
        self.l2 = l2
        self.bits = bits
        self.random_state = random_state

    def _check(self) -> None:
        if self.loss not in ("auto", "squared", "logistic"):
            raise InvalidConfigError("loss", f"loss must be 'auto', 'squared' or 'logistic', got {self.loss!r}")
        if isinstance(self.passes, bool) or not isinstance(self.passes, (int, np.integer)) or self.passes < 1:
            raise InvalidConfigError("passes", f"passes must be an integer >= 1, got {self.passes!r}")
        for name in ("learning_rate", "l2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise InvalidConfigError(name, f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 8 <= self.bits <= 30:
            raise InvalidConfigError("bits", f"bits must be an integer in [8, 30], got {self.bits!r}")

    def _start(self, args: list[str], model: bytes | None = None) -> None:
        vw = _vw()
        self._ws = vw.Workspace(["--quiet"] + ([] if model is not None else args), model_data=model)
        self._example = vw.Example()
        self._example.set_label(vw.SimpleLabel(0.0))
        # hashed in a plain workspace: the indices a parser would put in the example
        plain = vw.Workspace(["--quiet", "-b", str(int(self.bits))])
        self._index = np.array([plain.get_index_for_scalar_feature(f"f{j}", namespace_name="x")
                                for j in range(self.n_features_in_)], dtype=np.uint64)

    def _set(self, row: np.ndarray) -> None:
        group = self._example["x"]
        group.truncate_to(0)
        nz = np.flatnonzero(row)
        if nz.size:
            group.push_many_features(self._index[nz], row[nz].astype(np.float32))

    def fit(self, X, y) -> "VWRegressor":
        """Fit on rows ``X`` (n, n_features) and targets ``y`` (n,)."""
        self._check()
        vw = _vw()
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise InvalidConfigError("X", f"X must have shape (n, n_features) with n = len(y) = {y.shape[0]} > 0, "
                                          f"got {X.shape}")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise InvalidConfigError("X", "X and y must be finite")
        binary = bool(np.isin(y, (0.0, 1.0)).all())
        self.loss_ = ("logistic" if binary else "squared") if self.loss == "auto" else self.loss
        if self.loss_ == "logistic" and not binary:
            raise InvalidConfigError("loss", "loss 'logistic' needs 0/1 targets; use 'squared' or 'auto'")
        rng = np.random.default_rng(self.random_state)
        args = ["-b", str(int(self.bits)), "-l", f"{float(self.learning_rate):g}",
                "--random_seed", str(int(rng.integers(0, _SEED_BOUND)))]
        if self.l2:
            args += ["--l2", f"{float(self.l2):g}"]
        if self.interactions:
            args += ["--interactions", "xx"]
        if self.loss_ == "logistic":
            args += ["--loss_function", "logistic", "--link", "logistic"]
        self.n_features_in_ = X.shape[1]
        self._start(args)
        labels = np.where(y > 0.5, 1.0, -1.0) if self.loss_ == "logistic" else y
        self.y_range_ = (float(y.min()), float(y.max()))
        for _ in range(int(self.passes)):
            for i in rng.permutation(X.shape[0]).tolist():
                self._set(X[i])
                self._example.set_label(vw.SimpleLabel(float(labels[i])))
                self._ws.learn_one(self._example)
        self._example.set_label(vw.SimpleLabel(0.0))
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted rewards (probabilities of 1 under logistic loss), clipped to the
        range of the training targets."""
        if not hasattr(self, "_ws"):
            raise InvalidConfigError("reward_model", "VWRegressor is not fitted: call fit first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InvalidConfigError("X", f"X must have {self.n_features_in_} columns, got shape {X.shape}")
        out = np.empty(X.shape[0])
        for i in range(X.shape[0]):
            self._set(X[i])
            out[i] = self._ws.predict_one(self._example)
        return np.clip(out, *self.y_range_)

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_ws", "_example", "_index")}
        if hasattr(self, "_ws"):
            state["_model"] = self._ws.serialize()
        return state

    def __setstate__(self, state: dict) -> None:
        model = state.pop("_model", None)
        self.__dict__.update(state)
        if model is not None:
            self._start([], model)
