"""Where a demo run writes, and what it hands over: a fresh run directory, its routes file and
the commands that use them.

``banditroute demo`` writes each run into a new directory ``<out_dir>/run-N/`` (N = 1, 2, ...)
holding ``logs/``, ``routes.toml`` (the exact settings of the router it ran, in the format of
:meth:`~banditroute.Router.from_config`) and ``report.html``, so a second run in the same
folder never appends to the first one's log. :func:`follow_up_commands` are the commands the
demo prints at the end (``replay``, ``serve``, ``promote``, ``report``) on those files.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> new_run_dir(root).name, new_run_dir(root).name
('run-1', 'run-2')
>>> holds_log(root)
False
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import fields
from pathlib import Path

from ..config.features import Category, Text
from ..config.mechanisms import CostLearning
from ..config.profiles import BetaPrior, Budget, Profile
from ..config.settings import RouterConfig

__all__ = ["ROUTES_FILE", "follow_up_commands", "holds_log", "new_run_dir", "routes_toml"]

#: Name of the routes file a run writes next to its ``logs/``.
ROUTES_FILE = "routes.toml"
_LOG_PARTS = ("decisions", "outcomes", "events", "_journal", "_snapshots")
_ALWAYS = ("task_types", "exploration", "discount", "log_dir", "seed")  # written even at their default
_SECTIONS = ("profiles", "objective", "budget", "prior", "drift", "cost_learning", "onboarding", "cooldown")


def holds_log(log_dir: str | os.PathLike) -> bool:
    """Whether ``log_dir`` already holds (part of) a decision log: anything in its
    ``decisions/``, ``outcomes/``, ``events/``, ``_journal/`` or ``_snapshots/``."""
    root = Path(log_dir)
    return any((root / part).is_dir() and any((root / part).iterdir()) for part in _LOG_PARTS)


def new_run_dir(out_dir: str | os.PathLike) -> Path:
    """Create and return ``<out_dir>/run-N`` for the smallest N above every existing run
    (created atomically: two demos started together get different directories)."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[4:]) for p in root.glob("run-*") if p.name[4:].isdigit()]
    n = max(taken, default=0) + 1
    while True:
        try:
            (root / f"run-{n}").mkdir()
            return root / f"run-{n}"
        except FileExistsError:
            n += 1


def _value(x) -> str:
    """A TOML value."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(x, (str, os.PathLike)):
        return json.dumps(os.fspath(x), ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(x, BetaPrior):
        return f"{{ alpha = {_value(x.alpha)}, beta = {_value(x.beta)} }}"
    if isinstance(x, (Text, Category)):  # a hashed feature: { kind = "text", analyzer = "word", ... }
        kind = {"kind": "text" if isinstance(x, Text) else "category"}
        return _value({**kind, **{f.name: getattr(x, f.name) for f in fields(x)}})
    if isinstance(x, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_value(v)}" for k, v in x.items()) + " }"
    if isinstance(x, (list, tuple, frozenset, set)):
        items = sorted(x) if isinstance(x, (frozenset, set)) else x
        return "[" + ", ".join(_value(v) for v in items) + "]"
    raise TypeError(f"no TOML form for {x!r}")


def _profile(p: Profile) -> list[str]:
    lines = ["[[profiles]]", f"name = {_value(p.name)}", f"cost_usd = {_value(p.cost_usd)}",
             f"latency_ms = {_value(p.latency_ms)}"]
    if p.tags:
        lines.append(f"tags = {_value(p.tags)}")
    if p.allow is not None:
        lines.append(f"allow = {_value(dict(p.allow))}")
    if p.prior is not None:
        lines.append(f"prior = {_value(p.prior)}")
    return lines


def routes_toml(config: RouterConfig, *, header: str = "") -> str:
    """The routes file (TOML) of ``config``: :meth:`Router.from_config <banditroute.Router.from_config>`
    on it builds a router with the same settings.

    >>> import pathlib, tempfile, banditroute as br
    >>> live = br.Router([br.Profile("a", cost_usd=0.001)], task_types=["chat"], discount=0.99, seed=3,
    ...                   onboarding=br.Onboarding(max_share=0.1), cooldown=br.Cooldown(seconds=0.5))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "routes.toml"
    >>> _ = path.write_text(routes_toml(live.config))
    >>> br.Router.from_config(path).config == live.config
    True
    >>> linear = br.RouterConfig(profiles=(br.Profile("a"),), policy="linear",
    ...                          features=(("prompt", br.Text(ngrams=2)), ("tenant", "category")))
    >>> _ = path.write_text(routes_toml(linear))
    >>> br.Router.from_config(path).config == linear
    True
    >>> routes_toml(linear).splitlines()[3][:62]
    'features = { "prompt" = { "kind" = "text", "analyzer" = "word"'
    """
    lines = [f"# {line}" for line in header.splitlines()] + ["[router]"]
    for f in fields(RouterConfig):
        value = getattr(config, f.name)
        if f.name in _SECTIONS or value is None or (f.name not in _ALWAYS and value == f.default):
            continue
        lines.append(f"{f.name} = {_value(dict(value) if f.name == 'features' else value)}")
    for name, default in (("objective", None), ("budget", Budget()), ("prior", BetaPrior()), ("drift", None),
                          ("cost_learning", CostLearning()), ("onboarding", None), ("cooldown", None)):
        section = getattr(config, name)
        if section is None or (default is not None and section == default):
            continue
        lines += ["", f"[{name}]"] + [f"{f.name} = {_value(getattr(section, f.name))}" for f in fields(section)
                                      if getattr(section, f.name) is not None]
    for p in config.profiles:
        lines += [""] + _profile(p)
    return "\n".join(lines) + "\n"


def follow_up_commands(*, log_dir: str | os.PathLike, routes: str | os.PathLike,
                       shadow: str | None = None) -> list[str]:
    """The commands the demo prints after a run: replay its logs with its routes file, serve
    its routes (continuing its log and beliefs), gate the routes file as a candidate against the
    logged policy, and write a report (with the shadow candidate ``shadow``, if it ran one).

    >>> follow_up_commands(log_dir="runs/run-1/logs", routes="runs/run-1/routes.toml")[0]
    'banditroute replay --logs runs/run-1/logs --config runs/run-1/routes.toml'
    """
    logs, cfg = shlex.quote(os.fspath(log_dir)), shlex.quote(os.fspath(routes))
    out = shlex.quote(os.fspath(Path(routes).parent / "report-config.html"))
    candidates = "--candidate routes=config" + (f" --candidate {shadow}=shadow:{shadow}" if shadow else "")
    return [f"banditroute replay --logs {logs} --config {cfg}",
            f"banditroute serve --config {cfg} --log-dir {logs}",
            f"banditroute promote --logs {logs} --config {cfg} --candidate config --baseline logged",
            f"banditroute report --logs {logs} --config {cfg} {candidates} --out {out}"]
