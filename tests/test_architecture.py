"""The package's structure holds (ARCHITECTURE.md): sub-packages by concern, no import cycle
between banditroute's modules (function-level imports count too), no module over the size
limit, no private attribute of another object read outside its module, and the public API
free of the simulator's names. ope's own structure is checked in test_ope_structure.py."""

from __future__ import annotations

import inspect
import pathlib
import re

import banditroute as br
from banditroute.config.settings import RouterConfig
from test_ope_structure import _find_cycle, imported_modules

ROOT = pathlib.Path(br.__file__).parent
MODULES = {}
for _path in sorted(ROOT.rglob("*.py")):
    _parts = _path.relative_to(ROOT).with_suffix("").parts
    _name = ".".join(("banditroute",) + (_parts[:-1] if _parts[-1] == "__init__" else _parts))
    MODULES[_name] = _path
MAX_LINES = 420  # ~400: the Router façade is the largest (one short method per public operation, documented)


def _imported(module: str, path: pathlib.Path) -> set[str]:
    return imported_modules(module, path, MODULES)


def test_banditroute_has_no_import_cycles():
    graph = {m: _imported(m, p) for m, p in MODULES.items()}
    assert "banditroute.decide.pipeline" in graph["banditroute.decide.router"]  # the graph is read
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_sub_packages_do_not_import_each_other_in_a_circle():
    """Folded to sub-packages (decide, logs, ...), the imports still run one way."""
    def folder(module):
        parts = module.split(".")
        return ".".join(parts[:2])
    graph: dict[str, set[str]] = {}
    for m, p in MODULES.items():
        if m == "banditroute":
            continue  # the package's face imports every part
        graph.setdefault(folder(m), set()).update(folder(t) for t in _imported(m, p)
                                                  if t != "banditroute" and folder(t) != folder(m))
    assert "banditroute.logs" in graph["banditroute.decide"]
    cycle = _find_cycle(graph)
    assert cycle is None, "sub-package cycle: " + " -> ".join(cycle)


def test_sub_packages_by_concern():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert {"decide", "policies", "beliefs", "logs", "evaluation", "service", "cli", "sim", "config"} <= packages
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py"]


def test_no_module_over_the_limit():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}


_REACH_IN = re.compile(r"\b(?!self\b|cls\b)([a-z_][a-z_0-9]*)\._([a-z][a-z_0-9]*)")


def test_no_private_attribute_read_across_objects():
    """``other._field`` outside ``self``/``cls``: each must be justified on its line (# own class)."""
    found = []
    for module, path in MODULES.items():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if ">>>" in line or "own class" in line:
                continue
            for m in _REACH_IN.finditer(code):
                if not code[: m.start()].rstrip().endswith(("'", '"')):
                    found.append(f"{path.relative_to(ROOT)}:{i}: {m.group(0)}")
    assert not found


def test_router_parameters_are_explicit_and_match_the_settings():
    """help(br.Router) shows every setting, with RouterConfig's default."""
    params = inspect.signature(br.Router).parameters
    for field in RouterConfig.__dataclass_fields__.values():
        if field.name == "profiles":
            continue
        assert field.name in params, field.name
        assert params[field.name].kind is inspect.Parameter.KEYWORD_ONLY
        if field.name == "exploration":  # None: the policy's own default (0.02, or 0.01 for contextual policies)
            assert params[field.name].default is None and field.default == 0.02
            continue
        assert params[field.name].default == field.default, field.name
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_public_api_holds_no_simulator_names():
    assert not {"Scenario", "Simulator", "run_demo", "DemoResult"} & set(br.__all__)
    import banditroute.sim as sim

    public = {n for n, o in vars(sim).items() if not n.startswith("_") and not inspect.ismodule(o)
              and n != "annotations"}
    assert public == set(sim.__all__)
