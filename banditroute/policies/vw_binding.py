"""The one thin adapter over Vowpal Wabbit's Python binding (``vowpal-wabbit-next``).

Everything else in banditroute reaches VW through this module, so the binding is imported
lazily (importing banditroute never needs it) and its quirks are handled in one place:

- wheels exist only for CPython 3.8-3.12 on Linux x86_64, macOS and Windows; elsewhere
  :func:`require` raises :class:`VWUnavailableError` naming the missing package;
- ``Example`` objects live in a pool that never shrinks (about 30 KiB each): a
  :class:`ADFBuffer` keeps one shared and one example per action and refills them in place;
- nothing pickles: models travel as ``serialize()`` bytes (:func:`load`);
- ``Workspace.weights()`` crashes on stacks with several sub-models and is never called.

>>> available() in (True, False)
True
>>> cb_explore_args("squarecb", epsilon=0.05, gamma_scale=10.0, cover=4, bag=5, softmax_lambda=10.0)
['--cb_explore_adf', '--squarecb', '--gamma_scale', '10']
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import BanditrouteError

__all__ = ["VWUnavailableError", "available", "require", "workspace", "load", "cb_explore_args",
           "EXPLORATIONS", "FeatureHasher", "ADFBuffer", "SimpleBuffer", "dsjson_parser", "pmf_array"]

EXPLORATIONS = ("squarecb", "epsilon", "cover", "bag", "regcb", "softmax")
_PACKAGE = "vowpal_wabbit_next"
_HINT = ("pip install vowpal-wabbit-next (wheels exist for CPython 3.8-3.12 on Linux x86_64, "
         "macOS and Windows only)")


class VWUnavailableError(BanditrouteError, ImportError):
    """The Vowpal Wabbit binding ``vowpal_wabbit_next`` cannot be imported.

    >>> str(VWUnavailableError("vowpal_wabbit_next", None, "is not installed"))
    'vowpal_wabbit_next is not installed, got None'
    """


def available() -> bool:
    """Whether the binding can be imported here."""
    try:
        require()
    except VWUnavailableError:
        return False
    return True


def require():
    """Import and return the binding module, or raise :class:`VWUnavailableError`."""
    try:
        return importlib.import_module(_PACKAGE)
    except ImportError as exc:
        raise VWUnavailableError(_PACKAGE, None, f"is needed for the Vowpal Wabbit features and cannot be "
                                 f"imported ({exc}); {_HINT}") from None


def workspace(args: Sequence[str]):
    """A fresh ``Workspace`` configured with VW command-line ``args`` (quiet)."""
    vw = require()
    return vw.Workspace(["--quiet", *args])


def load(model: bytes):
    """A ``Workspace`` from ``serialize()`` bytes; the options are read from the model itself
    (passing them again can conflict, e.g. ``--bag`` stores its derived random seed)."""
    vw = require()
    return vw.Workspace(["--quiet"], model_data=bytes(model))


def dsjson_parser(ws):
    """VW's own DSJSON parser bound to ``ws`` (``parse_json(line) -> [Example]``)."""
    return require().DSJsonFormatParser(ws)


def cb_explore_args(exploration: str, *, epsilon: float, gamma_scale: float, cover: int, bag: int,
                    softmax_lambda: float) -> list[str]:
    """VW options for ``--cb_explore_adf`` with one exploration algorithm."""
    base = ["--cb_explore_adf"]
    if exploration == "squarecb":
        return base + ["--squarecb", "--gamma_scale", f"{gamma_scale:g}"]
    if exploration == "epsilon":
        return base + ["--epsilon", f"{epsilon:g}"]
    if exploration == "cover":
        return base + ["--cover", str(cover), "--epsilon", f"{epsilon:g}"]
    if exploration == "bag":
        return base + ["--bag", str(bag), "--epsilon", f"{epsilon:g}"]
    if exploration == "regcb":
        return base + ["--regcb"]
    if exploration == "softmax":
        return base + ["--softmax", "--lambda", f"{softmax_lambda:g}"]
    raise ValueError(f"unknown exploration {exploration!r}")


class FeatureHasher:
    """Hash (namespace, feature name) to the feature indices VW's own parsers put in examples.

    A categorical feature is the name and value concatenated (``tenant`` + ``acme``), exactly
    as VW's JSON/DSJSON parser hashes a string-valued key, so models trained on exported
    DSJSON and models trained in memory share features. The hashing runs in a plain
    workspace with the same ``-b``: a workspace with several sub-models (``--bag``,
    ``--cover``) reports indices already spread over its sub-models, which are not what
    belongs in an example.
    """

    def __init__(self, bits: int, *, max_cache: int = 200_000):
        self._ws = workspace(["-b", str(int(bits))])
        self._cache: dict[tuple[str, str], int] = {}
        self._max = max_cache

    def index(self, namespace: str, name: str) -> int:
        key = (namespace, name)
        idx = self._cache.get(key)
        if idx is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            idx = self._cache[key] = self._ws.get_index_for_scalar_feature(name, namespace_name=namespace)
        return idx


def _fill(example, features: dict) -> None:
    """Replace the example's feature groups by ``{namespace: (indices, values)}``."""
    for group in list(example.feat_group_indices):
        example[group].truncate_to(0)
    for namespace, (indices, values) in features.items():
        if indices:
            example[namespace].push_many_features(np.asarray(indices, dtype=np.uint64),
                                                  np.asarray(values, dtype=np.float32))


class ADFBuffer:
    """Reusable examples for one ``--cb_explore_adf`` / ``--cb_adf`` workspace.

    One shared example (refilled per request) and one example per action (filled once,
    when the action is added); labels are set for a ``learn`` and cleared right after.
    """

    def __init__(self, ws):
        self._vw = require()
        self.ws = ws
        self.shared = self._vw.Example()
        self.shared.set_label(self._vw.CBLabel(shared=True))
        self.actions: list = []

    def add_action(self, features: dict) -> None:
        example = self._vw.Example()
        example.set_label(self._vw.CBLabel())
        _fill(example, features)
        self.actions.append(example)

    def set_shared(self, features: dict) -> None:
        _fill(self.shared, features)

    def pmf(self, chosen: Sequence[int]) -> list[tuple[int, float]]:
        """VW's prediction over the actions ``chosen`` (positions into ``actions``): a list of
        (0-based position within ``chosen``, probability) pairs (in no particular order)."""
        return self.ws.predict_one([self.shared, *(self.actions[i] for i in chosen)])

    def learn(self, chosen: Sequence[int], position: int, cost: float, probability: float) -> None:
        """Learn that ``chosen[position]`` cost ``cost`` when played with ``probability``."""
        example = self.actions[chosen[position]]
        example.set_label(self._vw.CBLabel(label=(position + 1, float(cost), float(probability))))
        try:
            self.ws.learn_one([self.shared, *(self.actions[i] for i in chosen)])
        finally:
            example.set_label(self._vw.CBLabel())


class SimpleBuffer:
    """One reusable single-line example for VW regression / classification."""

    def __init__(self, ws):
        self._vw = require()
        self.ws = ws
        self.example = self._vw.Example()
        self.example.set_label(self._vw.SimpleLabel(0.0))

    def set_features(self, features: dict) -> None:
        _fill(self.example, features)

    def learn(self, label: float, weight: float = 1.0) -> None:
        self.example.set_label(self._vw.SimpleLabel(float(label), float(weight)))
        self.ws.learn_one(self.example)

    def predict(self) -> float:
        return float(self.ws.predict_one(self.example))


def pmf_array(pairs: Iterable[tuple[int, float]], n: int) -> np.ndarray:
    """VW's (index, probability) pairs as a float64 array of length ``n``, renormalised (VW
    computes in float32)."""
    out = np.zeros(n)
    for i, p in pairs:
        out[i] = p
    total = out.sum()
    return out / total if total > 0 else np.full(n, 1.0 / n)
