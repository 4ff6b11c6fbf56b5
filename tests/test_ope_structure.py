"""The shape of the ``ope`` package, and the gate's two ways of taking options.

- no import cycle between ope's modules (function-level imports count too);
- no module over 400 lines;
- ``gate(..., options=GateOptions(...))`` is the keyword call, validated the same way.

That ``ope`` never imports ``banditroute`` is checked in ``test_ope_api.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib
import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import ope
from ope import GateOptions, InvalidConfigError, LoggedFeedback, gate
from ope.synthetic import SyntheticProblem

OPE_DIR = pathlib.Path(ope.__file__).parent
MODULES = {("ope" if p.stem == "__init__" else f"ope.{p.stem}"): p for p in sorted(OPE_DIR.glob("*.py"))}
MAX_LINES = 400


# ---------------------------------------------------------------- import graph


def imported_modules(module: str, path: pathlib.Path, modules) -> set[str]:
    """The modules of ``modules`` (name -> file) that ``module`` imports anywhere in its file
    (relative imports resolved; ``from pkg import sub`` counts as the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import ope.logs`` and ``from ope.logs.x import y``: the longest known module prefix
            parts = target.split(".")
            known = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules),
                         None)
            if known is not None and known != module:
                out.add(known)
    return out


def _imported_modules(module: str, path: pathlib.Path) -> set[str]:
    return imported_modules(module, path, MODULES)


def _import_graph() -> dict[str, set[str]]:
    return {module: _imported_modules(module, path) for module, path in MODULES.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"ope.a": {"ope.b"}, "ope.b": {"ope.c"}, "ope.c": {"ope.a"}, "ope.d": {"ope.a"}}
    assert _find_cycle(graph) == ["ope.a", "ope.b", "ope.c", "ope.a"]
    assert _find_cycle({"ope.a": {"ope.b"}, "ope.b": set()}) is None


def test_import_graph_sees_absolute_relative_and_lazy_imports(tmp_path):
    source = ("from ope.feedback import LoggedFeedback\nfrom . import errors\nfrom .intervals import RoundTerms\n"
              "import ope.ips\n\ndef f():\n    from ope import logs, IPS\n")
    path = tmp_path / "x.py"
    path.write_text(source)
    assert _imported_modules("ope.x", path) == {"ope.feedback", "ope.errors", "ope.intervals", "ope.ips",
                                                "ope.logs", "ope"}


def test_the_graph_has_the_known_edges():
    graph = _import_graph()
    assert "ope.feedback" in graph["ope.logs"]
    assert "ope.gate_options" in graph["ope.gate"]
    assert "ope.gate" in graph["ope"]


def test_ope_has_no_import_cycles():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_feedback_does_not_depend_on_the_log_facade():
    # the log reader that LoggedFeedback.from_logs uses must not lead back to ope.feedback
    graph = _import_graph()
    assert "ope.logs" not in graph["ope.feedback"]
    reachable, todo = set(), ["ope.log_columns"]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert "ope.feedback" not in reachable


def test_the_package_docstring_lists_every_module_below_its_imports():
    # the map in ope's docstring: each module imports only modules listed above it
    block = ope.__doc__.split("(no import cycles)::")[1].split("\nExamples")[0]
    order = [f"ope.{name.strip()}" for line in block.strip().splitlines()
             for name in re.split(r"\s{2,}", line.strip())[0].split(",")]
    assert set(order) == set(MODULES) - {"ope", "ope.__main__"}
    position = {module: i for i, module in enumerate(order)}
    upward = [(m, d) for m, deps in _import_graph().items() if m in position
              for d in deps if d in position and position[d] > position[m]]
    assert not upward, upward


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    n_lines = len(MODULES[module].read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{MODULES[module].name} has {n_lines} lines (max {MAX_LINES}): split it by concept"


def test_old_import_paths_still_work():
    from ope.dsjson import feedback_from_dsjson  # noqa: F401
    from ope.errors import InvalidConfigError, LogsNotFoundError, OPEError  # noqa: F401
    from ope.gate import GATE_TABLE_SCHEMA, GateResult, Guardrail, benjamini_hochberg, default_reward_model  # noqa: F401
    from ope.logs import action_space, feedback_from_logs, join_logs, scan_decisions, scan_outcomes  # noqa: F401
    from ope.policies import one_hot, uniform  # noqa: F401
    from ope.synthetic import SyntheticProblem  # noqa: F401
    from ope.vw_reward import VWRegressor  # noqa: F401

    assert ope.gate is gate and ope.GateOptions is GateOptions


# ---------------------------------------------------------------- GateOptions


@pytest.fixture(scope="module")
def problem():
    """Small synthetic logs with contexts, a cohort column and a cost metric, and two policies."""
    data = SyntheticProblem(seed=0, n_actions=3).sample(1500, seed=1)
    fb0 = data.feedback
    rng = np.random.default_rng(2)
    segment = np.where(fb0.contexts.to_numpy()[:, 0] > 0, "high", "low")
    cost = 0.001 * (1 + fb0.actions) + rng.normal(0.0, 1e-4, fb0.n_rounds)
    fb = LoggedFeedback(actions=fb0.actions, rewards=fb0.rewards, propensities=fb0.propensities,
                        n_actions=fb0.n_actions, contexts=fb0.contexts, logging_distribution=data.logging,
                        cohorts=pl.DataFrame({"segment": segment}), metrics=pl.DataFrame({"cost_usd": cost}))
    return fb, data.target, data.logging


def _same_result(a, b):
    assert a.promote == b.promote and a.verdict == b.verdict
    assert a.reasons == b.reasons
    assert a.alpha == b.alpha
    assert_frame_equal(a.table, b.table, check_exact=True)


@pytest.mark.parametrize("kw", [
    {},
    dict(estimator="ips", margin=0.01, cohorts=["segment"], guardrails={"cost_usd": 0.0005}, min_ess=10),
    dict(estimator="snips", cohorts="segment", cohort_margin=0.05, alpha=0.1, min_n=50, max_weight=None,
         mean_weight_z=3.0, max_support_deficiency=0.01),
    dict(estimator="dr", guardrails={"cost_usd": (0.0005, "lower")}, seed=3, min_ess=10),
], ids=["defaults", "ips-cohorts-guardrail", "snips-every-threshold", "dr-seeded"])
def test_keywords_and_options_give_the_same_verdict_and_estimates(problem, kw):
    fb, target, logging = problem
    by_keywords = gate(fb, candidate=target, baseline=logging, **kw)
    by_options = gate(fb, candidate=target, baseline=logging, options=GateOptions(**kw))
    _same_result(by_keywords, by_options)
    assert by_keywords.table.height >= 1 + (2 if "cohorts" in kw else 0)


def test_a_generator_seed_is_used_the_same_way_by_both(problem):
    fb, target, logging = problem
    kw = dict(estimator="dr", min_ess=10)
    by_keywords = gate(fb, candidate=target, baseline=logging, seed=np.random.default_rng(9), **kw)
    by_options = gate(fb, candidate=target, baseline=logging,
                      options=GateOptions(seed=np.random.default_rng(9), **kw))
    _same_result(by_keywords, by_options)


def test_gate_keywords_are_exactly_the_option_fields():
    params = inspect.signature(gate).parameters
    keywords = [name for name in params if name not in ("feedback", "candidate", "baseline", "options")]
    assert keywords == [f.name for f in dataclasses.fields(GateOptions)]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name != "feedback")


def test_options_are_frozen_and_keyword_only():
    opts = GateOptions(alpha=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.alpha = 0.2
    with pytest.raises(TypeError):
        GateOptions("ips")


@pytest.mark.parametrize("field, value, match", [
    ("alpha", 0.7, r"^alpha must be in \(0, 0\.5\), got 0\.7$"),
    ("alpha", float("nan"), r"^alpha must be a finite number, got nan$"),
    ("margin", "0.1", r"^margin must be a finite number, got '0\.1'$"),
    ("cohort_margin", -1.0, r"^cohort_margin must be >= 0, got -1\.0$"),
    ("min_n", 1, r"^min_n must be an integer >= 2, got 1$"),
    ("min_n", 2.5, r"^min_n must be an integer >= 2, got 2\.5$"),
    ("min_ess", -1, r"^min_ess must be >= 0, got -1$"),
    ("max_weight", 0, r"^max_weight must be > 0, got 0$"),
    ("mean_weight_z", 0.0, r"^mean_weight_z must be > 0, got 0\.0$"),
    ("max_support_deficiency", -0.1, r"^max_support_deficiency must be >= 0, got -0\.1$"),
    ("metric", 3, r"^metric must be a metric name, got 3$"),
    ("estimator", "magic", r"^estimator must be one of .* got 'magic'$"),
    ("guardrails", ["cost_usd"], r"^guardrails must be a mapping metric -> margin, got \['cost_usd'\]$"),
])
def test_invalid_option_values_name_the_field_and_the_value(field, value, match):
    with pytest.raises(InvalidConfigError, match=match) as info:
        GateOptions(**{field: value})
    assert info.value.field == field


def test_options_check_the_guardrails_against_the_primary_metric_and_the_estimator():
    with pytest.raises(InvalidConfigError, match=r"^guardrails must not repeat the primary metric 'reward'$"):
        GateOptions(guardrails={"reward": 0.1})
    with pytest.raises(InvalidConfigError, match=r"guardrails\['tokens'\] needs a direction") as info:
        GateOptions(guardrails={"tokens": 5})
    assert info.value.field == "guardrails['tokens']"
    with pytest.raises(InvalidConfigError, match="fixed reward_predictions") as info:
        GateOptions(estimator=ope.DR(reward_predictions=np.zeros((4, 2))), guardrails={"cost_usd": 0.1})
    assert info.value.field == "estimator"


def test_the_gate_reports_invalid_keywords_like_invalid_options(problem):
    fb, target, logging = problem
    with pytest.raises(InvalidConfigError, match=r"^alpha must be in \(0, 0\.5\), got 0\.7$") as info:
        gate(fb, candidate=target, baseline=logging, alpha=0.7)
    assert info.value.field == "alpha"


@pytest.mark.parametrize("kw", [dict(alpha=0.1), dict(alpha=0.05), dict(seed=0, margin=0.0)])
def test_options_and_a_keyword_together_are_an_error(problem, kw):
    # even a keyword equal to the option's value: one source of options per call
    fb, target, logging = problem
    with pytest.raises(InvalidConfigError, match=r"either as options=GateOptions\(\.\.\.\) or as keywords") as info:
        gate(fb, candidate=target, baseline=logging, options=GateOptions(alpha=0.1), **kw)
    assert info.value.field == "options"
    for name in kw:
        assert re.search(rf"\b{name}=", str(info.value))


def test_options_must_be_gate_options(problem):
    fb, target, logging = problem
    with pytest.raises(InvalidConfigError, match=r"^options must be a GateOptions, got dict$"):
        gate(fb, candidate=target, baseline=logging, options={"alpha": 0.1})
