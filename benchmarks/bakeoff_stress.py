"""Stress sets for the contextual bake-off: the protocol of ``bench_bakeoff.py`` on data sets
made harder on purpose (fewer features, noisy labels, many noise features, many classes).

Command: ``python benchmarks/bakeoff_stress.py [--seeds 0,1,2] [--sets digits8,...]``. Each set is
built from scikit-learn data with a fixed seed:

- ``digits8``: digits restricted to 8 of its 64 features (chosen at random, seed 5);
- ``digits_noisy_labels``: digits with 30% of the labels replaced by a random class (seed 6);
- ``digits_noise_features``: digits with 200 standard-normal features added (d = 264, seed 9);
- ``synthetic26`` / ``synthetic5``: ``make_classification`` with 20 features (10 informative),
  26 or 5 classes, ``flip_y=0.05``;
- ``hard_binary``: ``make_classification`` with 40 features (8 informative), 2 classes,
  ``class_sep=0.5``, ``flip_y=0.2``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from sklearn.datasets import load_digits, make_classification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bakeoff import format_dataset, run_dataset  # noqa: E402


def stress_sets() -> dict:
    X, y = load_digits(return_X_y=True)
    out = {"digits8": (X[:, np.random.default_rng(5).choice(64, 8, replace=False)], y)}
    rng = np.random.default_rng(6)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.3
    noisy[flip] = rng.integers(0, 10, flip.sum())
    out["digits_noisy_labels"] = (X, noisy)
    out["digits_noise_features"] = (np.hstack([X, np.random.default_rng(9).standard_normal((len(y), 200))]), y)
    for k in (26, 5):
        out[f"synthetic{k}"] = make_classification(3000, 20, n_informative=10, n_classes=k, n_clusters_per_class=1,
                                                   class_sep=1.0, flip_y=0.05, random_state=k)
    out["hard_binary"] = make_classification(5000, 40, n_informative=8, n_classes=2, flip_y=0.2, class_sep=0.5,
                                             random_state=3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=4000)
    p.add_argument("--sets", default=None, help="comma-separated subset")
    p.add_argument("--policies", default="linear,squarecb")
    p.add_argument("--learners", default="banditroute,vw,lints")
    args = p.parse_args()
    sets = stress_sets()
    names = args.sets.split(",") if args.sets else list(sets)
    for name in names:
        X, y = sets[name]
        result = run_dataset(name, X, y, seeds=[int(s) for s in args.seeds.split(",")], rounds=args.rounds,
                             learners=args.learners.split(","), policies=args.policies.split(","))
        print(format_dataset(result), flush=True)


if __name__ == "__main__":
    main()
