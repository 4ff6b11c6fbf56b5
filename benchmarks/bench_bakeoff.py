"""Contextual bandit bake-off: banditroute's contextual policies vs VW and MABWiser on real data.

The protocol of Bietti, Agarwal & Langford, "A Contextual Bandit Bake-off" (JMLR 2021): a
multiclass classification data set becomes a bandit. There is one action (a banditroute
*profile*) per class; each round the learner sees a row's standardised feature vector, picks an
action, and gets reward 1 if it is the row's true class, else 0, at once (no delay). It learns
only from the reward of the action it picked. The score is the *progressive* mean reward over
the stream: every round counts, the learning rounds included.

Protocol (the defaults; every item has a flag):

- Data sets that ship inside packages already installed (nothing is downloaded):
  scikit-learn's ``load_digits`` (1,797 rows, 64 features, 10 classes), ``load_wine`` (178, 13, 3),
  ``load_breast_cancer`` (569, 30, 2), ``load_iris`` (150, 4, 3), and three complete OpenML data
  sets that scikit-learn ships as test fixtures of ``fetch_openml`` (``sklearn/datasets/tests/
  data/openml``, read with ``scipy.io.arff``): ``kr-vs-kp`` (OpenML 3: 3,196 rows, 36 nominal
  features, 2 classes), ``zoo`` (OpenML 62: 101 rows, 16 features, 7 classes; the animal's name
  is dropped) and ``penguins`` (OpenML 42585: 342 rows with complete measurements, 3 species).
  A two-valued nominal feature becomes one 0/1 column, a nominal feature with more values one
  0/1 column per value. Every feature is z-scored with the full data's mean and standard
  deviation (a constant feature becomes 0).
- Stream: ``--rounds 4000`` rows drawn *with replacement* by ``numpy.random.default_rng(seed)``
  (``integers(0, n, rounds)``), so that small data sets give 4,000 rounds too; the same stream
  for every learner at a given seed. ``--seeds 0,1,2,3,4``.
- Learners (``--learners``; each gets the stream's X and y and a seed and returns the per-round
  rewards; internal randomness comes from ``default_rng([seed, salt])``, never the stream's):

  1. ``banditroute``: ``br.Router(profiles, objective=br.Objective(quality=1.0), policy=name,
     features={"x0": 1.0, ..., "x<d-1>": 1.0}, seed=seed)``, one learner per name of
     ``--policies`` (default ``linear``); profiles ``c0..c<K-1>`` with cost 0 and latency 0 (the
     same for all, so they play no role). Every other Router setting is left at its default: the
     point is to measure the defaults. Each round ``d = router.decide({"x0": .., ...})``,
     reward = 1 if ``d.profile`` is the true class's profile, ``router.record(d.id, quality=reward)``.
     ``--policy-kw linear:exploration=0.0,n_draws=256`` passes extra Router keyword arguments to
     one policy (tuning experiments; values are Python literals, else strings).
  2. ``vw`` (**the anchor**, label ``vw-squarecb``): Vowpal Wabbit directly through
     vowpal-wabbit-next, ``--cb_explore_adf --squarecb --quiet -q sa`` and ``--random_seed seed``,
     every squarecb and learner hyper-parameter at VW's default (gamma_scale 10, gamma_exponent
     0.5, cb_type mtr, -b 18, learning rate 0.5 with VW's adaptive/normalised/invariant updates).
     One ADF example per round in VW text format: the shared example holds the features in
     namespace ``s`` (``shared |s x0:0.123456 ...``), action k is ``|a c<k>``. The one choice that
     is not a default is ``-q sa``: without the ``s x a`` interaction every action shares the
     same weights on x and VW cannot learn a class-dependent policy at all. The action is drawn
     from VW's returned pmf with a seeded rng; VW learns from the same examples with the label
     ``0:<cost>:<probability>`` on the chosen action's line (the ADF convention; the leading
     action number is ignored), where cost = 1 - reward (the 0/1 loss: 0 for the true class)
     and probability = the pmf's probability of the chosen action, i.e. the exact propensity.
     ``--vw-cost neg`` gives cost = -reward instead (banditroute's VWPolicy convention). The
     0/1 default is the stronger anchor here: VW's regressors start at 0, which is optimistic
     under 0/1 costs and pessimistic under -1/0 ones, and with -reward VW earns clearly less on
     digits, kr-vs-kp and penguins: the harder bar is the default. (Row 3 keeps -reward.)
  3. ``br-vw`` (label ``banditroute:VWPolicy``): ``br.Router(profiles, objective=..., seed=seed,
     learner=br.VWPolicy(profiles, seed=seed))`` with the decide/record loop of 1 (VWPolicy's own
     defaults: squarecb, interactions ``sa`` and ``ta``, cost = -reward; the Router's default
     ``exploration`` floor applies on top). ``--policy-kw vwpolicy:key=value`` passes Router kwargs.
  4. ``lints`` / ``linucb`` (``mabwiser`` selects both): MABWiser ``LearningPolicy.LinTS()`` and
     ``LearningPolicy.LinUCB()`` at their defaults (alpha=1.0, l2_lambda=1.0, scale=False),
     ``MAB(arms, policy, seed=seed)``, trained progressively: round 1 plays a uniformly random arm
     (its reward counts) and ``fit``s on that one example; every later round ``predict``s one row,
     observes the reward and ``partial_fit([arm], [reward], x)``.
  5. ``ceiling``: scikit-learn ``LogisticRegression(max_iter=2000)`` fitted on the full data set's
     labels; its reward on the stream is its accuracy there (full information, in-sample: what
     knowing the labels' best linear rule would earn; not a bandit).
  6. ``uniform``: a uniformly random action (1/K in expectation), the floor.

Score and normalisation: per data set and learner, the mean over seeds of the progressive mean
reward, with its standard error over seeds (sd / sqrt(n_seeds)), and its ratio to VW squarecb's
mean measured in the same run. The normalised score of a learner is that ratio averaged over the
data sets (each data set weighs the same). Bars for each banditroute policy: ">= 0.98 x VW
squarecb on every data set" and ">= MABWiser LinTS on every data set" (means over seeds).

Run (from the repository root; 2 cores: BLAS runs single-threaded):

    .venv/bin/python benchmarks/bench_bakeoff.py [--seeds 0,1,2,3,4] [--rounds 4000]
        [--datasets digits,wine,...] [--learners banditroute,vw,br-vw,lints,linucb,ceiling,uniform]
        [--policies linear] [--policy-kw linear:exploration=0.0] [--json out.json]

Quick tuning loop: ``--learners banditroute,vw --seeds 0,1 --rounds 1000``.

Your own data: ``run_dataset`` runs the same protocol on any (X, y) (it standardises X and maps
the labels to 0..K-1 itself) and returns a dict; ``format_dataset`` renders it as markdown::

    cd /path/to/banditroute && .venv/bin/python -c "
    from benchmarks.bench_bakeoff import run_dataset, format_dataset   # benchmarks/ is a namespace package
    from sklearn.datasets import load_wine
    X, y = load_wine(return_X_y=True)
    print(format_dataset(run_dataset('wine', X, y, seeds=[0, 1], rounds=2000,
                                     learners=['banditroute', 'vw', 'lints'], policies=['linear'])))"

(or ``sys.path.insert(0, 'benchmarks'); from bench_bakeoff import run_dataset`` from anywhere.)
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

import banditroute as br
from banditroute.policies import registered

ANCHOR = "vw-squarecb"
LINTS = "mabwiser-LinTS"
ALL_LEARNERS = ("banditroute", "vw", "br-vw", "lints", "linucb", "ceiling", "uniform")
ALIASES = {"mabwiser": ("lints", "linucb"), "all": ALL_LEARNERS}
VW_ARGS = ("--cb_explore_adf", "--squarecb", "--quiet", "-q", "sa")
BAR_RATIO = 0.98
N_BLOCKS = 10  # the JSON keeps each seed's mean reward in 10 equal blocks of the stream (a learning curve)


# -- data ------------------------------------------------------------------------------------------
def standardize(X: np.ndarray) -> np.ndarray:
    """z-score every column with the data's own mean and sd; a constant column becomes 0."""
    X = np.asarray(X, dtype=float)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    return np.where(sd > 0, (X - mean) / np.where(sd > 0, sd, 1.0), 0.0)


def _sklearn(loader_name: str):
    def load():
        from sklearn import datasets
        return getattr(datasets, loader_name)(return_X_y=True)
    return load


def _openml_fixture(openml_id: int, target: str, drop: Sequence[str] = ()):
    """A complete OpenML data set shipped in scikit-learn's test data (no download)."""
    def load():
        import sklearn
        from scipy.io import arff
        folder = Path(sklearn.__file__).parent / "datasets" / "tests" / "data" / "openml" / f"id_{openml_id}"
        files = sorted(folder.glob("data-v1-dl-*.arff.gz"))
        if not files:
            raise FileNotFoundError(f"OpenML {openml_id} is not in this scikit-learn's test data ({folder}); "
                                    f"leave it out with --datasets")
        with gzip.open(files[0], "rt") as fh:
            data, meta = arff.loadarff(fh)
        columns = []
        for name in meta.names():
            if name == target or name in drop:
                continue
            kind, values = meta[name]
            if kind == "numeric":
                columns.append(data[name].astype(float))
            else:
                raw = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data[name]])
                picked = values[1:] if len(values) == 2 else values
                columns += [(raw == v).astype(float) for v in picked]
        X = np.column_stack(columns)
        y = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data[target]])
        keep = np.isfinite(X).all(axis=1)  # rows with a missing measurement are dropped
        return X[keep], y[keep]
    return load


DATASETS = {
    "digits": _sklearn("load_digits"),
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "iris": _sklearn("load_iris"),
    "kr-vs-kp": _openml_fixture(3, "class"),
    "zoo": _openml_fixture(62, "type", drop=("animal",)),
    "penguins": _openml_fixture(42585, "species"),
}


# -- learners: prepare(X_all, y_all) once per data set, then run(X, y, seed) -> rewards per round --
class Learner:
    label = "learner"
    n_classes = 0

    def prepare(self, X_all: np.ndarray, y_all: np.ndarray, n_classes: int) -> None:
        self.n_classes = n_classes

    def run(self, X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"label": self.label}


class RouterLearner(Learner):
    """banditroute's public Router API: a named policy, or (``vw_policy``) a VWPolicy learner."""

    def __init__(self, policy: str | None, router_kw: Mapping | None = None, *, vw_policy: bool = False):
        self.policy, self.vw_policy = policy, vw_policy
        self.router_kw = dict(router_kw or {})
        self.label = "banditroute:VWPolicy" if vw_policy else f"banditroute:{policy}"

    def router(self, n_features: int, seed: int):
        profiles = [br.Profile(f"c{k}", cost_usd=0.0, latency_ms=0.0) for k in range(self.n_classes)]
        kw: dict = {"objective": br.Objective(quality=1.0), "seed": seed}
        if self.vw_policy:
            kw["learner"] = br.VWPolicy(profiles, seed=seed)
        else:
            kw.update(policy=self.policy, features={f"x{j}": 1.0 for j in range(n_features)})
        kw.update(self.router_kw)
        return br.Router(profiles, **kw)

    def run(self, X, y, seed):
        names = [f"x{j}" for j in range(X.shape[1])]
        router = self.router(X.shape[1], seed)
        index = {f"c{k}": k for k in range(self.n_classes)}
        out = np.empty(len(y))
        for t, (row, label) in enumerate(zip(X.tolist(), y.tolist())):
            d = router.decide(dict(zip(names, row)))
            reward = 1.0 if index[d.profile] == label else 0.0
            router.record(d.id, quality=reward)
            out[t] = reward
        return out

    def describe(self):
        return {"label": self.label, "policy": self.policy, "vw_policy": self.vw_policy, "router_kw": self.router_kw}


class VWSquareCB(Learner):
    """VW ``--cb_explore_adf --squarecb`` straight through vowpal-wabbit-next (text format)."""

    label = ANCHOR

    def __init__(self, cost: str = "one-minus"):
        if cost not in ("neg", "one-minus"):
            raise ValueError(f"vw cost encoding must be 'neg' or 'one-minus', got {cost!r}")
        self.cost = cost

    def run(self, X, y, seed):
        import vowpal_wabbit_next as vwn
        ws = vwn.Workspace([*VW_ARGS, "--random_seed", str(seed)])
        parser = vwn.TextFormatParser(ws)
        rng = np.random.default_rng([seed, 2])
        n = self.n_classes
        actions = [f"|a c{k}" for k in range(n)]
        out = np.empty(len(y))
        for t, (row, label) in enumerate(zip(X.tolist(), y.tolist())):
            shared = "shared |s " + " ".join(f"x{j}:{v:.6f}" for j, v in enumerate(row) if v != 0.0)
            pmf = np.zeros(n)
            for i, p in ws.predict_one([parser.parse_line(shared), *map(parser.parse_line, actions)]):
                pmf[i] = p
            pmf /= pmf.sum()  # VW computes in float32
            k = min(int(np.searchsorted(np.cumsum(pmf), rng.random(), side="right")), n - 1)
            while pmf[k] <= 0.0:  # float round-off at the top of the cumsum
                k -= 1
            reward = 1.0 if k == label else 0.0
            cost = -reward if self.cost == "neg" else 1.0 - reward
            lines = [shared, *actions]
            lines[1 + k] = f"0:{cost:g}:{pmf[k]:.9g} {actions[k]}"
            ws.learn_one([parser.parse_line(line) for line in lines])
            out[t] = reward
        return out

    def describe(self):
        return {"label": self.label, "args": [*VW_ARGS, "--random_seed", "<seed>"],
                "cost": "-reward" if self.cost == "neg" else "1 - reward"}


class MabLinear(Learner):
    """MABWiser LinTS / LinUCB at their defaults, trained one round at a time."""

    def __init__(self, kind: str):
        self.kind = kind
        self.label = f"mabwiser-{kind}"

    def _policy(self):
        from mabwiser.mab import LearningPolicy
        return getattr(LearningPolicy, self.kind)()

    def run(self, X, y, seed):
        from mabwiser.mab import MAB
        mab = MAB(list(range(self.n_classes)), self._policy(), seed=seed)
        rng = np.random.default_rng([seed, 3])
        out = np.empty(len(y))
        arm = int(rng.integers(self.n_classes))  # round 1: no model yet, a uniform arm; its reward counts
        out[0] = 1.0 if arm == y[0] else 0.0
        mab.fit([arm], [out[0]], X[:1])
        for t in range(1, len(y)):
            x = X[t:t + 1]
            arm = mab.predict(x)
            out[t] = 1.0 if arm == y[t] else 0.0
            mab.partial_fit([arm], [out[t]], x)
        return out

    def describe(self):
        return {"label": self.label, "policy": repr(self._policy())}


class Ceiling(Learner):
    """Supervised logistic regression on the full data's labels, scored on the stream."""

    label = "supervised-ceiling"

    def prepare(self, X_all, y_all, n_classes):
        from sklearn.linear_model import LogisticRegression
        super().prepare(X_all, y_all, n_classes)
        self.model = LogisticRegression(max_iter=2000).fit(X_all, y_all)

    def run(self, X, y, seed):
        return (self.model.predict(X) == y).astype(float)

    def describe(self):
        return {"label": self.label, "model": "LogisticRegression(max_iter=2000), fit on the full data set"}


class Uniform(Learner):
    label = "uniform"

    def run(self, X, y, seed):
        rng = np.random.default_rng([seed, 4])
        return (rng.integers(self.n_classes, size=len(y)) == y).astype(float)


def expand_learners(learners: Sequence[str]) -> list[str]:
    """Learner keys in canonical order, aliases expanded; unknown keys raise ValueError."""
    keys: set[str] = set()
    for key in learners:
        key = key.strip()
        if key in ALIASES:
            keys.update(ALIASES[key])
        elif key in ALL_LEARNERS:
            keys.add(key)
        elif key:
            raise ValueError(f"unknown learner {key!r}: choose from {', '.join(ALL_LEARNERS)} "
                             f"(or {', '.join(ALIASES)})")
    return [k for k in ALL_LEARNERS if k in keys]


def build_learners(learners: Sequence[str], policies: Sequence[str], policy_kw: Mapping[str, Mapping] | None = None,
                   *, vw_cost: str = "one-minus") -> list[Learner]:
    """The learner objects for the selected keys (``banditroute``: one per policy name)."""
    policy_kw = dict(policy_kw or {})
    known = list(registered())
    unknown = [p for p in policies if p not in known]
    if unknown:
        raise ValueError(f"unknown banditroute policy {', '.join(map(repr, unknown))}: this banditroute "
                         f"registers {', '.join(map(repr, known))}")
    targets = set(policies) | {"vwpolicy"}
    stray = [name for name in policy_kw if name not in targets]
    if stray:
        raise ValueError(f"--policy-kw names {', '.join(map(repr, stray))}, which is not among --policies "
                         f"({', '.join(policies)}) nor 'vwpolicy'")
    out: list[Learner] = []
    for key in expand_learners(learners):
        if key == "banditroute":
            out += [RouterLearner(p, policy_kw.get(p)) for p in policies]
        elif key == "vw":
            out.append(VWSquareCB(vw_cost))
        elif key == "br-vw":
            out.append(RouterLearner(None, policy_kw.get("vwpolicy"), vw_policy=True))
        elif key == "lints":
            out.append(MabLinear("LinTS"))
        elif key == "linucb":
            out.append(MabLinear("LinUCB"))
        elif key == "ceiling":
            out.append(Ceiling())
        elif key == "uniform":
            out.append(Uniform())
    return out


# -- the protocol ----------------------------------------------------------------------------------
def run_dataset(name: str, X, y, *, seeds: Sequence[int] = (0, 1, 2, 3, 4), rounds: int = 4000,
                learners: Sequence[str] = ALL_LEARNERS, policies: Sequence[str] = ("linear",),
                policy_kw: Mapping[str, Mapping] | None = None, vw_cost: str = "one-minus",
                progress=None) -> dict:
    """Run the bake-off protocol on one data set; returns per-learner, per-seed results.

    ``X`` (n, d) numeric and ``y`` (n,) labels of any type; ``X`` is standardised here and the labels
    are mapped to 0..K-1 (sorted). ``learners`` are keys of ``ALL_LEARNERS`` (or ``mabwiser``,
    ``all``); ``policies`` are banditroute policy names; ``policy_kw`` maps a policy name (or
    ``"vwpolicy"``) to extra Router keyword arguments. ``progress`` (callable) gets one line per
    learner. A learner that raises is reported with its error and does not stop the others.
    """
    X = standardize(X)
    classes, y = np.unique(np.asarray(y), return_inverse=True)
    if X.ndim != 2 or len(X) != len(y) or len(classes) < 2:
        raise ValueError("X must be (n, d) and y (n,) with at least 2 classes")
    seeds = [int(s) for s in seeds]
    streams = {s: np.random.default_rng(s).integers(0, len(y), size=int(rounds)) for s in seeds}
    result = {"name": name, "n": int(len(y)), "d": int(X.shape[1]), "n_classes": int(len(classes)),
              "class_shares": np.bincount(y).tolist(), "rounds": int(rounds), "seeds": seeds, "learners": {}}
    for learner in build_learners(learners, policies, policy_kw, vw_cost=vw_cost):
        row = {**learner.describe(), "per_seed": [], "error": None}
        started = time.perf_counter()
        try:
            learner.prepare(X, y, len(classes))
            for s in seeds:
                idx = streams[s]
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    rewards = np.asarray(learner.run(X[idx], y[idx], s), dtype=float)
                seconds = time.perf_counter() - t0
                if rewards.shape != (len(idx),):
                    raise RuntimeError(f"returned {rewards.shape} rewards for {len(idx)} rounds")
                row["per_seed"].append({"seed": s, "mean_reward": float(rewards.mean()), "seconds": seconds,
                                        "blocks": [float(b.mean()) for b in np.array_split(rewards, N_BLOCKS)]})
        except Exception as exc:  # noqa: BLE001 - report it, keep measuring the others
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = time.perf_counter() - started
        means = np.array([r["mean_reward"] for r in row["per_seed"]])
        row["mean"] = float(means.mean()) if len(means) and row["error"] is None else None
        row["se"] = float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 and row["mean"] is not None \
            else None
        row["us_per_round"] = (1e6 * sum(r["seconds"] for r in row["per_seed"])
                               / max(1, len(row["per_seed"]) * int(rounds)))
        result["learners"][learner.label] = row
        if progress:
            what = f"{row['mean']:.4f} +- {row['se'] or 0:.4f}" if row["mean"] is not None else row["error"]
            progress(f"{name}: {learner.label}: {what} ({row['seconds']:.1f} s)")
    anchor = result["learners"].get(ANCHOR, {}).get("mean")
    for row in result["learners"].values():
        row["ratio_vw"] = row["mean"] / anchor if anchor and row["mean"] is not None else None
    return result


# -- reporting --------------------------------------------------------------------------------------
def _f(value, spec: str = ".4f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def format_dataset(res: dict) -> str:
    lines = [f"### {res['name']} (n = {res['n']:,}, d = {res['d']}, {res['n_classes']} classes; "
             f"{res['rounds']:,} rounds x {len(res['seeds'])} seeds)", "",
             "| learner | mean progressive reward | s.e. (seeds) | x VW squarecb | time (s) | µs / round |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, row in res["learners"].items():
        if row["error"]:
            lines.append(f"| {label} | ERROR: {row['error'][:200]} | | | {row['seconds']:.1f} | |")
            continue
        name = f"{label} **[anchor]**" if label == ANCHOR else label
        lines.append(f"| {name} | {_f(row['mean'])} | {_f(row['se'])} | {_f(row['ratio_vw'], '.3f')} | "
                     f"{row['seconds']:.1f} | {row['us_per_round']:.0f} |")
    return "\n".join(lines)


def summarise(results: list[dict]) -> tuple[str, dict]:
    """The normalised-score table and the bars of each banditroute policy."""
    labels: list[str] = []
    for res in results:
        labels += [label for label in res["learners"] if label not in labels]
    names = [res["name"] for res in results]
    lines = ["### Normalised score: mean progressive reward / VW squarecb's, per data set and averaged", "",
             "| learner | " + " | ".join(names) + " | **mean** | wall time (s) |",
             "|---|" + "---:|" * (len(names) + 2)]
    scores = {}
    for label in labels:
        ratios = [res["learners"].get(label, {}).get("ratio_vw") for res in results]
        ok = [r for r in ratios if r is not None]
        scores[label] = float(np.mean(ok)) if ok and len(ok) == len(ratios) else None
        wall = sum(res["learners"][label]["seconds"] for res in results if label in res["learners"])
        lines.append(f"| {label} | " + " | ".join(_f(r, ".3f") for r in ratios)
                     + f" | **{_f(scores[label], '.3f')}** | {wall:.1f} |")
    bars = {}
    lines += ["", "### Bars (banditroute policies)", ""]
    for label in [lb for lb in labels if lb.startswith("banditroute:")]:
        rows = [(res["name"], res["learners"].get(label, {}), res["learners"].get(ANCHOR, {}),
                 res["learners"].get(LINTS, {})) for res in results]
        bar = {}
        for key, text, test in (
                ("vw", f">= {BAR_RATIO} x VW squarecb on every data set",
                 lambda me, vw, lt: me.get("ratio_vw") is not None and me["ratio_vw"] >= BAR_RATIO),
                ("lints", ">= MABWiser LinTS on every data set",
                 lambda me, vw, lt: None not in (me.get("mean"), lt.get("mean")) and me["mean"] >= lt["mean"])):
            if any((key == "vw" and vw.get("mean") is None) or (key == "lints" and lt.get("mean") is None)
                   for _, _, vw, lt in rows):
                bar[key] = None
                lines.append(f"- {label}: {text}: not measured (its reference was not run or failed)")
                continue
            misses = [name for name, me, vw, lt in rows if not test(me, vw, lt)]
            bar[key] = not misses
            detail = "; ".join(
                f"{name} {_f(me.get('mean'), missing='error')} vs {_f((vw if key == 'vw' else lt).get('mean'))}"
                + (f" (x{me['ratio_vw']:.3f})" if key == "vw" and me.get("ratio_vw") is not None else "")
                for name, me, vw, lt in rows if name in misses)
            lines.append(f"- {label}: {text}: **{'met' if not misses else 'NOT met'}**"
                         + (f" (missed on {detail})" if misses else ""))
        bars[label] = bar
    return "\n".join(lines), {"normalised_score": scores, "bars": bars}


def machine() -> dict:
    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(),
            **{pkg: ver(pkg) for pkg in ("banditroute", "vowpal-wabbit-next", "mabwiser", "scikit-learn", "numpy")}}


def parse_policy_kw(items: Sequence[str]) -> dict[str, dict]:
    """``["linear:exploration=0.0,n_draws=256"]`` -> ``{"linear": {"exploration": 0.0, "n_draws": 256}}``."""
    out: dict[str, dict] = {}
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or not name:
            raise ValueError(f"--policy-kw {item!r}: expected name:key=value[,key=value...]")
        for pair in filter(None, rest.split(",")):
            key, eq, raw = pair.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"--policy-kw {item!r}: {pair!r} is not key=value")
            try:
                value = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                value = raw.strip()
            out.setdefault(name.strip(), {})[key.strip()] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated stream seeds")
    parser.add_argument("--rounds", type=int, default=4000, help="rounds per stream (rows drawn with replacement)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"subset of {','.join(DATASETS)}")
    parser.add_argument("--learners", default=",".join(ALL_LEARNERS),
                        help=f"subset of {','.join(ALL_LEARNERS)} (mabwiser = lints,linucb)")
    parser.add_argument("--policies", default="linear", help="banditroute policy names, comma-separated")
    parser.add_argument("--policy-kw", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="extra Router kwargs for one policy (or 'vwpolicy'); repeatable")
    parser.add_argument("--vw-cost", choices=("one-minus", "neg"), default="one-minus",
                        help="cost encoding of the direct VW learner: 1 - reward (default) or -reward")
    parser.add_argument("--json", help="also write every per-seed number here")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        policy_kw = parse_policy_kw(args.policy_kw)
        learners = expand_learners(args.learners.split(","))
        build_learners(learners, policies, policy_kw)  # fail now on unknown names, not after an hour
    except ValueError as exc:
        parser.error(str(exc))
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not seeds or args.rounds < 2 or not learners or ("banditroute" in learners and not policies):
        parser.error(f"unknown data set(s) {unknown} (choose from {', '.join(DATASETS)})" if unknown else
                     "need >= 1 seed, --rounds >= 2, >= 1 learner, and >= 1 policy with the banditroute learner")

    from threadpoolctl import threadpool_limits
    info = machine()
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    load_start = os.getloadavg()
    print(f"machine: {info['platform']}, {info['cpu']}, {info['cpu_count']} CPUs; banditroute {info['banditroute']}, "
          f"vowpal-wabbit-next {info['vowpal-wabbit-next']}, mabwiser {info['mabwiser']}, "
          f"scikit-learn {info['scikit-learn']}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    results = []
    with threadpool_limits(1):  # a shared 2-core machine; also keeps per-round times comparable
        for name in datasets:
            X, y = DATASETS[name]()
            results.append(run_dataset(name, X, y, seeds=seeds, rounds=args.rounds, learners=learners,
                                       policies=policies, policy_kw=policy_kw, vw_cost=args.vw_cost,
                                       progress=lambda line: print(line, file=sys.stderr, flush=True)))
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    summary, verdict = summarise(results)
    print(f"## Contextual bandit bake-off (Bietti, Agarwal & Langford 2021 protocol): {len(datasets)} data sets, "
          f"{args.rounds:,} rounds x {len(seeds)} seeds ({','.join(map(str, seeds))})\n")
    print(f"- command: `{command}`")
    print(f"- machine: {info['platform']}; {info['cpu']}; {info['cpu_count']} CPUs ({info['usable_cores']} usable); "
          f"Python {info['python']}; BLAS limited to 1 thread; load average (1 min) {load_start[0]:.2f} at start, "
          f"{load_end[0]:.2f} at end; total {elapsed:.0f} s")
    print(f"- versions: banditroute {info['banditroute']}, vowpal-wabbit-next {info['vowpal-wabbit-next']}, "
          f"mabwiser {info['mabwiser']}, scikit-learn {info['scikit-learn']}, numpy {info['numpy']}")
    print(f"- anchor: VW `{' '.join(VW_ARGS)}` (defaults except the s x a interaction), cost = "
          f"{'-reward' if args.vw_cost == 'neg' else '1 - reward'}; reward = 1 for the true class, "
          f"progressive mean over every round")
    if policy_kw:
        print(f"- extra Router kwargs: {policy_kw}")
    print()
    for res in results:
        print(format_dataset(res) + "\n")
    print(summary)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": command, "machine": info, "config": vars(args) | {"policy_kw": policy_kw},
                       "elapsed_s": elapsed, "load_average": {"start": load_start, "end": load_end},
                       "datasets": results, **verdict}, fh, indent=2)


if __name__ == "__main__":
    main()
