"""Beliefs: Beta reliability posteriors per (profile, task type) and drift detection on them."""
