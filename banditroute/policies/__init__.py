"""Policies: one interface (``base.Policy``), one file per policy.

``bank`` (Thompson sampling and greedy over the Beta draw bank), ``linear`` (LinTS),
``vw`` (Vowpal Wabbit through ``vw_binding``, the one adapter over the binding).
"""
