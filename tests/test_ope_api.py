"""Package-level contracts: __all__, no banditroute import, evaluate()."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import Ridge

import ope
from ope.synthetic import SyntheticProblem

OPE_DIR = pathlib.Path(ope.__file__).parent


def test_all_is_complete():
    public = {
        name for name, obj in vars(ope).items()
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith("ope")
    }
    assert public <= set(ope.__all__), public - set(ope.__all__)
    for name in ope.__all__:
        assert hasattr(ope, name), name


@pytest.mark.parametrize("module", sorted(p.stem for p in OPE_DIR.glob("*.py")))
def test_module_all_is_complete(module):
    mod = __import__(f"ope.{module}", fromlist=["_"])
    if module in ("__init__", "__main__"):
        return
    defined = {n for n, o in vars(mod).items() if not n.startswith("_") and getattr(o, "__module__", None) == mod.__name__}
    assert defined <= set(getattr(mod, "__all__", ())), defined - set(mod.__all__)


def test_ope_never_imports_banditroute_statically():
    for path in OPE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "banditroute" for n in names), path


def test_ope_never_imports_banditroute_at_runtime():
    code = "import sys, ope, ope.cli, ope.logs; print(any(m.split('.')[0] == 'banditroute' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_evaluate_table():
    data = SyntheticProblem(seed=0, n_actions=3).sample(2000, seed=1)
    fb = data.feedback
    policies = {"target": data.target, "uniform": ope.uniform(fb.n_rounds, 3)}
    model = Ridge()
    estimators = [ope.IPS(), ope.SNIPS(), ope.DR(reward_model=model, n_folds=3), ope.SNDR(reward_model=model, n_folds=3)]
    table = ope.evaluate(fb, policies, estimators, seed=0, interval="bootstrap", n_bootstrap=200)
    assert table.shape[0] == 8
    assert list(table.schema) == list(ope.evaluate.__globals__["RESULT_SCHEMA"])
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    again = ope.evaluate(fb, policies, estimators, seed=0, interval="bootstrap", n_bootstrap=200)
    assert table.equals(again)


def test_evaluate_cross_fits_each_model_once(monkeypatch):
    import ope.dr

    calls = []
    real = ope.dr.cross_fit_predictions

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ope.dr, "cross_fit_predictions", counting)
    data = SyntheticProblem(seed=0, n_actions=3).sample(500, seed=1)
    model = Ridge()
    estimators = [ope.DM(reward_model=model, n_folds=2), ope.DR(reward_model=model, n_folds=2), ope.SNDR(reward_model=model, n_folds=2)]
    table = ope.evaluate(data.feedback, {"a": data.target, "b": data.logging}, estimators, seed=0)
    assert table.height == 6 and len(calls) == 1


def test_evaluate_names():
    data = SyntheticProblem(seed=0, n_actions=3).sample(500, seed=1)
    fb = data.feedback
    named = ope.evaluate(fb, {"t": data.target}, [ope.IPS(), ope.IPS(clip=2.0)])
    assert named["estimator"].to_list() == ["IPS", "IPS#2"]
    with pytest.raises(ope.InvalidConfigError, match="policies must be a non-empty mapping"):
        ope.evaluate(fb, {})
