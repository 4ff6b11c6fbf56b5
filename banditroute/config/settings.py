"""The router's settings (a frozen dataclass) and loading them from a TOML file.

A routes file keeps profiles, objective, budgets and priors as code::

    [router]
    task_types = ["chat", "code", "math"]
    exploration = 0.02
    discount = 0.995
    fallback = "small"
    log_dir = "logs"
    seed = 0

    [objective]
    quality = 1.0
    cost = 20.0

    [budget]
    max_latency_ms = 3000

    [drift]            # optional: Page-Hinkley drift detection triggers recalibration
    threshold = 15.0

    [prior]            # default prior of every (profile, task type)
    alpha = 1.0
    beta = 1.0

    [[profiles]]
    name = "small"
    cost_usd = 0.0004
    latency_ms = 400

    [[profiles]]
    name = "large"
    cost_usd = 0.012
    latency_ms = 2500
    tags = ["frontier"]
    allow = { tenant = ["acme", "globex"] }
    prior = { code = { alpha = 9, beta = 1 } }   # or { alpha = 9, beta = 1 } for every task type

>>> cfg = RouterConfig(profiles=(Profile("a"),), exploration=0.1)
>>> cfg.task_types, cfg.exploration
(('default',), 0.1)
>>> RouterConfig(profiles=(Profile("a"),), exploration=1.5)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: exploration must be < 1, got 1.5
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from .hygiene import check_text
from .mechanisms import Cooldown, CostLearning, Onboarding
from .profiles import BetaPrior, Budget, DriftConfig, Objective, Profile, check_name, check_number
from ..errors import ConfigError
from .features import check_features

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["RouterConfig", "load_config", "build_from_file"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (blocked)
        return False


def _check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise ConfigError(name, value, f"must be an integer >= {lo}" + ("" if hi is None else f" and <= {hi:,}"))


# Bounds that keep a typo from allocating absurd memory: the draw bank holds n_draws floats per
# (profile, task type), the pending window up to max_pending entries (~200 bytes each).
MAX_DRAWS = 100_000
MAX_PENDING = 50_000_000


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    """Every setting of a :class:`~banditroute.decide.router.Router`.

    Parameters
    ----------
    profiles : tuple of Profile
    task_types : tuple of str
        Task types of the reliability posterior; one implicit type ``"default"`` if omitted.
    objective : Objective
    budget : Budget
    prior : BetaPrior
        Default prior of every (profile, task type); diffuse Beta(1, 1) unless given.
    policy : {"thompson", "greedy", "ucb", "linear", "squarecb"}
        Thompson sampling over the Beta posterior per (profile, task type) (default); the
        posterior means (with the exploration floor this is epsilon-greedy: a baseline and an
        OPE candidate); or contextual Thompson sampling over a Bayesian linear model of the
        reward on ``features`` (:class:`~banditroute.policies.linear.LinearTS`); or
        inverse-gap weighting over the same model (``"squarecb"``,
        :class:`~banditroute.policies.squarecb.LinearSquareCB`).
    features : tuple of (name, scale | Text | Category)
        What the contextual policies read from a request: numeric fields, each divided by its
        scale, and text or string fields hashed into buckets (``{"prompt_tokens": 1000.0,
        "prompt": Text(ngrams=2), "tenant": "category"}`` is accepted by Router and the TOML
        file; see :mod:`banditroute.config.features`).
    exploration : float in [0, 1)
        Exploration floor: every feasible profile gets at least ``exploration / n_feasible``
        (a Router not given one takes its policy's default: 0.01 for ``"linear"`` and
        ``"squarecb"``, 0.02 otherwise).
    discount : float in (0, 1]
        Forgetting per unit of a task type's traffic; < 1 for non-stationary traffic.
    n_draws : int
        Posterior draws ``M`` in the bank; the pmf is the share of draws each profile wins.
    refresh_every : int
        Redraw the touched cells of the bank after this many outcomes.
    drift : DriftConfig or None
        Drift detection per (profile, task type) that recalibrates a cell when its quality
        changes (see :mod:`banditroute.beliefs.drift`); None: off.
    reliability_floor : float in (0, 1) or None
        Exclude a profile for a request when its reliability is below this with probability
        above ``floor_confidence``.
    floor_confidence : float in (0.5, 1)
    fallback : str or None
        Profile used (and logged with the reason) when nothing is feasible or the decision
        exceeds ``decision_timeout_ms``.
    decision_timeout_ms : float or None
    log_dir : str or None
        Root of the decision log; None disables logging.
    durability : {"group", "sync"}
        See :mod:`banditroute.logs.store`.
    log_journal : bool
        Commit log rows through an append-only journal (one fdatasync'ed line per commit,
        compacted into Parquet parts later; see :mod:`banditroute.logs.journal`): makes
        ``durability="sync"`` cheap. The service always uses it.
    log_table : {"parquet", "delta"}
        The tables' format: plain date-partitioned Parquet (default), or Delta Lake tables (the
        ``delta`` extra; compaction registers the journal's parts in one Delta commit per table
        and segment, see :mod:`banditroute.logs.delta`). ``"delta"`` implies ``log_journal``.
    wait_window_s : float
        How long a decision waits for its outcome; later outcomes are "late" and teach nothing.
    max_pending : int
        Upper bound on decisions waiting for an outcome (memory bound); the oldest leave first.
    policy_version : str or None
        Logged with every decision; defaults to a fingerprint of these settings.
    seed : int or None
        Seeds every random draw of the router; None takes fresh OS entropy.
    cost_learning : CostLearning
        Learn each profile's cost and latency per task type from the outcomes (the configured
        values are the prior); see :class:`~banditroute.config.mechanisms.CostLearning`.
    max_escalations : int
        Longest escalation chain (``Router.escalate``) below one first decision.
    onboarding : Onboarding or None
        Cap the probability of a profile added to a running router until it has enough
        outcomes (see :class:`~banditroute.config.mechanisms.Onboarding`); None: no cap.
    cooldown : Cooldown or None
        Exclude a profile for a while after consecutive failed calls; None: never.
    error_quality : float in [0, 1] or None
        Quality learned from a failed call (``record(error=...)``); None (default): a failure
        counts against availability only, not as a judgement of quality.
    """

    profiles: tuple[Profile, ...]
    task_types: tuple[str, ...] = ("default",)
    objective: Objective = Objective()
    budget: Budget = Budget()
    prior: BetaPrior = BetaPrior()
    policy: str = "thompson"
    features: tuple = ()
    exploration: float = 0.02
    discount: float = 1.0
    n_draws: int = 1024
    refresh_every: int = 16
    drift: DriftConfig | None = None
    reliability_floor: float | None = None
    floor_confidence: float = 0.95
    fallback: str | None = None
    decision_timeout_ms: float | None = None
    log_dir: str | None = None
    durability: str = "group"
    log_journal: bool = False
    log_table: str = "parquet"
    wait_window_s: float = 3600.0
    max_pending: int = 200_000
    policy_version: str | None = None
    seed: int | None = None
    cost_learning: CostLearning = CostLearning()
    max_escalations: int = 2
    onboarding: Onboarding | None = None
    cooldown: Cooldown | None = None
    error_quality: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.profiles, tuple) or not self.profiles:
            raise ConfigError("profiles", self.profiles, "must be a non-empty sequence of Profile")
        names = []
        for i, p in enumerate(self.profiles):
            if not isinstance(p, Profile):
                raise ConfigError(f"profiles[{i}]", p, "must be a Profile")
            if p.name in names:
                raise ConfigError(f"profiles[{i}].name", p.name, "is a duplicate")
            names.append(p.name)
        if not isinstance(self.task_types, tuple) or not self.task_types:
            raise ConfigError("task_types", self.task_types, "must be a non-empty tuple of names")
        for i, t in enumerate(self.task_types):
            check_name(f"task_types[{i}]", t)
        if len(set(self.task_types)) != len(self.task_types):
            raise ConfigError("task_types", self.task_types, "must not repeat a name")
        if self.drift is not None and not isinstance(self.drift, DriftConfig):
            raise ConfigError("drift", self.drift, "must be a DriftConfig or None")
        for name, cls in (("objective", Objective), ("budget", Budget), ("prior", BetaPrior)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, getattr(self, name), f"must be a {cls.__name__}")
        for p in self.profiles:
            if isinstance(p.prior, dict):
                unknown = set(p.prior) - set(self.task_types)
                if unknown:
                    raise ConfigError(f"profiles[{p.name}].prior", sorted(unknown), "names unknown task types")
        if not isinstance(self.policy, str) or not self.policy:
            raise ConfigError("policy", self.policy, "must be the name of a policy")  # which: the Router checks
        object.__setattr__(self, "features", check_features(self.features))  # "text" -> Text(), ...
        check_number("exploration", self.exploration, lo=0.0, hi=1.0, hi_open=True)
        check_number("discount", self.discount, lo=0.0, hi=1.0, lo_open=True)
        _check_int("n_draws", self.n_draws, 1, MAX_DRAWS)
        _check_int("refresh_every", self.refresh_every, 1)
        _check_int("max_pending", self.max_pending, 1, MAX_PENDING)
        if self.reliability_floor is not None:
            check_number("reliability_floor", self.reliability_floor, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_number("floor_confidence", self.floor_confidence, lo=0.5, hi=1.0, lo_open=True, hi_open=True)
        if self.fallback is not None and self.fallback not in names:
            raise ConfigError("fallback", self.fallback, f"must be one of the profiles {names}")
        if self.decision_timeout_ms is not None:
            check_number("decision_timeout_ms", self.decision_timeout_ms, lo=0.0, lo_open=True)
        if self.log_dir is not None and not isinstance(self.log_dir, (str, os.PathLike)):
            raise ConfigError("log_dir", self.log_dir, "must be a path or None")
        if self.durability not in ("group", "sync"):
            raise ConfigError("durability", self.durability, "must be 'group' or 'sync'")
        if not isinstance(self.log_journal, bool):
            raise ConfigError("log_journal", self.log_journal, "must be true or false")
        if self.log_table not in ("parquet", "delta"):
            raise ConfigError("log_table", self.log_table, "must be 'parquet' or 'delta'")
        if self.log_table == "delta":
            if not _installed("deltalake"):
                raise ConfigError("log_table", "delta", "needs the delta extra: pip install 'banditroute[delta]'")
            object.__setattr__(self, "log_journal", True)  # the journal is the Delta log's write-ahead log
        check_number("wait_window_s", self.wait_window_s, lo=0.0, lo_open=True)
        if self.policy_version is not None:
            check_text("policy_version", self.policy_version)  # stamped on every log row
        for name, cls in (("cost_learning", CostLearning), ("onboarding", Onboarding), ("cooldown", Cooldown)):
            value = getattr(self, name)
            if not isinstance(value, cls) and (value is not None or name == "cost_learning"):
                article = "an" if cls.__name__[0] in "AEIOU" else "a"
                raise ConfigError(name, value, f"must be {article} {cls.__name__}" + (
                    "" if name == "cost_learning" else " or None"))
        _check_int("max_escalations", self.max_escalations, 0, 100)
        if self.error_quality is not None:
            check_number("error_quality", self.error_quality, lo=0.0, hi=1.0)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError("seed", self.seed, "must be a non-negative integer or None")

    def fingerprint(self) -> str:
        """A short hash of the settings that shape decisions (the default policy version is
        ``<policy's version prefix>-<fingerprint>``)."""
        shaping = ("profiles", "task_types", "objective", "budget", "prior", "policy", "features", "exploration",
                   "discount",
                   "n_draws", "refresh_every", "drift", "reliability_floor", "floor_confidence", "fallback")
        defaults = {f.name: f.default for f in fields(RouterConfig)}
        shaping += tuple(n for n in _NEW_SHAPING if getattr(self, n) != defaults[n])  # old fingerprints hold
        text = repr([(name, getattr(self, name)) for name in shaping])
        return hashlib.sha1(text.encode()).hexdigest()[:10]


_NEW_SHAPING = ("cost_learning", "max_escalations", "onboarding", "cooldown", "error_quality")
_TABLES = {"objective": Objective, "budget": Budget, "drift": DriftConfig, "cost_learning": CostLearning,
           "onboarding": Onboarding, "cooldown": Cooldown}  # sections that are one settings object
_SECTIONS = {"router", "prior", "profiles", *_TABLES}
_ROUTER_KEYS = {f.name for f in fields(RouterConfig)} - {"profiles", "prior", *_TABLES}
_PROFILE_KEYS = {"name", "cost_usd", "latency_ms", "tags", "allow", "prior"}


def load_config(path: str | os.PathLike) -> tuple[list[Profile], dict]:
    r"""Read a routes TOML file; return ``(profiles, settings)`` for :class:`Router`.

    Every error names the file and the offending key.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "routes.toml"
    >>> _ = path.write_text('[router]\nexploration = 0.1\n[[profiles]]\nname = "a"\ncost_usd = 0.001\n')
    >>> profiles, settings = load_config(path)
    >>> profiles[0].cost_usd, settings["exploration"]
    (0.001, 0.1)
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path.name, str(exc), "is not valid TOML") from None
    try:
        return _parse(doc)
    except ConfigError as exc:
        raise exc.renamed(f"{path.name}: {exc.field}") from None


def build_from_file(build, path: str | os.PathLike, overrides: dict):
    """``build(profiles, **settings)`` with the settings of the routes file at ``path``
    (:func:`load_config`) updated by ``overrides``; a cross-field :class:`ConfigError` about a
    key the file set names the file and the key."""
    profiles, settings = load_config(path)
    from_file = set(settings)
    settings.update(overrides)
    try:
        return build(profiles, **settings)
    except ConfigError as exc:
        key = exc.field.split("[")[0].split(".")[0]
        if key not in from_file and key != "profiles":  # profiles always come from the file
            raise
        section = "" if key in ("prior", "profiles", *_TABLES) else "router."
        raise exc.renamed(f"{Path(path).name}: {section}{exc.field}") from None


def _table(doc: dict, name: str, allowed: set) -> dict:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(name, table, "must be a table")
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{name}.{key}", table[key], f"is not a known key (known: {sorted(allowed)})")
    return table


def _prior(where: str, value) -> BetaPrior:
    if not isinstance(value, dict) or set(value) - {"alpha", "beta"}:
        raise ConfigError(where, value, "must be a table with alpha and beta")
    try:
        return BetaPrior(**value)
    except ConfigError as exc:
        raise exc.renamed(f"{where}.{exc.field.split('.')[-1]}") from None


def _features(table) -> tuple:
    """``[router.features]``: ``field = scale``, ``field = "text"`` / ``"category"`` or
    ``field = { kind = "text", ... }``, checked here so that errors name ``router.features...``."""
    if not isinstance(table, dict):
        raise ConfigError("router.features", table, "must be a table of field = scale, 'text', 'category' "
                          "or { kind = ... }")
    try:
        return check_features(tuple(table.items()))
    except ConfigError as exc:
        raise exc.renamed(f"router.{exc.field}") from None


def _parse(doc: dict) -> tuple[list[Profile], dict]:
    for key in doc:
        if key not in _SECTIONS:
            raise ConfigError(key, doc[key], f"is not a known section (known: {sorted(_SECTIONS)})")
    settings = dict(_table(doc, "router", _ROUTER_KEYS))
    if "features" in settings:
        settings["features"] = _features(settings["features"])
    if "task_types" in settings:
        if not isinstance(settings["task_types"], list):
            raise ConfigError("router.task_types", settings["task_types"], "must be a list of names")
        settings["task_types"] = tuple(settings["task_types"])
    for name, cls in _TABLES.items():
        if name in doc or name in ("objective", "budget"):
            settings[name] = cls(**_table(doc, name, {f.name for f in fields(cls)}))
    if "prior" in doc:
        settings["prior"] = _prior("prior", doc["prior"])
    raw = doc.get("profiles")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("profiles", raw, "must be a non-empty array of tables ([[profiles]])")
    profiles = []
    for i, entry in enumerate(raw):
        where = f"profiles[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, entry, "must be a table")
        for key in entry:
            if key not in _PROFILE_KEYS:
                raise ConfigError(f"{where}.{key}", entry[key], f"is not a known key (known: {sorted(_PROFILE_KEYS)})")
        if "name" not in entry:
            raise ConfigError(f"{where}.name", None, "is required")
        kwargs = {k: v for k, v in entry.items() if k not in ("name", "prior")}
        prior = entry.get("prior")
        if prior is not None:
            if isinstance(prior, dict) and prior and all(isinstance(v, dict) for v in prior.values()):
                kwargs["prior"] = {t: _prior(f"{where}.prior.{t}", v) for t, v in prior.items()}
            else:
                kwargs["prior"] = _prior(f"{where}.prior", prior)
        try:
            profiles.append(Profile(entry["name"], **kwargs))
        except ConfigError as exc:
            raise exc.renamed(exc.field.replace(f"profiles[{entry['name']}]", where)) from None
        except TypeError as exc:
            raise ConfigError(where, entry, str(exc)) from None
    return profiles, settings
