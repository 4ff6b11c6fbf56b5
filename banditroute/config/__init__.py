"""Configuration as code: profiles, objective, budgets, priors, drift (``profiles``), the
router's settings with the routes file (``settings``), and input hygiene (``hygiene``: what
every string and number must be for the log to hold it). Imports nothing but ``errors``."""
