"""Validation of the simulator's configuration values, raising :class:`~banditroute.errors.ConfigError`.

Private to :mod:`banditroute.sim`: the scenario checks its fields once, at construction, and
the simulator checks the few integers it is given; nothing further in checks again.

>>> _check_float("scenario.cost_noise", 0.2, lo=0.0, hi=3.0)
>>> _check_int("seed", -1)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: seed must be an integer >= 0, got -1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError


def _check_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(name, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(name, value, f"must be <= {hi:g}")


def _check_int(name: str, value: Any, *, lo: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, value, f"must be an integer >= {lo}")


def _check_reliability(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(name, value, "must be a non-empty mapping task_type -> probability")
    for task, p in value.items():
        _check_float(f"{name}.{task}", p, lo=0.0, hi=1.0)
