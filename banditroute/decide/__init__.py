"""Deciding: a request's way from context to a logged decision.

``router`` (the façade), ``request`` (validate a context, task-type posterior), ``feasibility``
(budgets, allow-lists, fallback), ``pipeline`` (policy scores -> mask -> floor -> exact pmf, the
cache, the rollout stage), ``pending`` (the window of decisions awaiting outcomes), ``frame``
(the vectorised DataFrame path), ``decision`` (the record returned to the caller).
"""
