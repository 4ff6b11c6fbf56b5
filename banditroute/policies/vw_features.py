"""The features Vowpal Wabbit sees: the request as the shared example, each profile as an action.

Namespace ``s``: the request's numeric fields as floats, string fields as categorical
``<key><value>`` features, booleans as 1; namespace ``t``: the task type, or the caller's
``task_probs``, as weights; namespace ``a``: the profile's ``id<name>``, ``cost_usd``,
``latency_ms`` and ``tag<tag>``. Hashed once per example through the binding's hasher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from . import vw_binding as vw
from ..config.profiles import Profile

__all__ = ["shared_namespaces", "action_namespaces"]

_SKIP = ("task_type", "task_probs")


def shared_namespaces(context: Mapping, task_probs: Mapping[str, float] | None = None) -> dict:
    """The request's features as DSJSON-style namespaces ``{"s": {...}, "t": {...}}``.

    ``s`` keeps numeric, string and boolean fields (``task_type``, ``task_probs``, keys starting
    with ``_`` (VW's JSON parser ignores them), nulls and nested values are left out); ``t``
    holds ``task_probs`` if given, else the context's ``task_probs`` or its ``task_type`` label.

    >>> shared_namespaces({"task_type": "code", "tenant": "acme", "prompt_tokens": 812, "x": None})
    {'s': {'tenant': 'acme', 'prompt_tokens': 812}, 't': {'code': 1.0}}
    """
    s = {k: v for k, v in context.items()
         if k not in _SKIP and not k.startswith("_") and isinstance(v, (int, float, str)) and not
         (isinstance(v, float) and not math.isfinite(v))}
    if task_probs is None:
        task_probs = context.get("task_probs")
        if not isinstance(task_probs, Mapping):
            label = context.get("task_type")
            task_probs = {label: 1.0} if isinstance(label, str) else {}
    t = {str(k): float(p) for k, p in task_probs.items() if p}
    return {"s": s, "t": t}


def action_namespaces(profile: Profile) -> dict:
    """A profile's features as a DSJSON-style namespace ``{"a": {...}}``.

    >>> action_namespaces(Profile("small", cost_usd=0.0004, latency_ms=400, tags=("eu",)))
    {'a': {'id': 'small', 'cost_usd': 0.0004, 'latency_ms': 400.0, 'tageu': 1}}
    """
    a: dict = {"id": profile.name, "cost_usd": profile.cost_usd, "latency_ms": profile.latency_ms}
    a.update({f"tag{t}": 1 for t in profile.tags})
    return {"a": a}


def _hashed(hasher: vw.FeatureHasher, namespaces: Mapping[str, Mapping]) -> dict:
    """DSJSON-style namespaces as ``{namespace: (indices, values)}``, hashed as VW's JSON parser."""
    out = {}
    for ns, feats in namespaces.items():
        idx, val = [], []
        for key, value in feats.items():
            if isinstance(value, str):
                idx.append(hasher.index(ns, key + value))
                val.append(1.0)
            elif isinstance(value, bool):
                if value:
                    idx.append(hasher.index(ns, key))
                    val.append(1.0)
            elif value:
                idx.append(hasher.index(ns, key))
                val.append(float(value))
        out[ns] = (idx, val)
    return out
