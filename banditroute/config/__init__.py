"""Configuration as code: profiles, objective, budgets, priors (``profiles``) and the router's
settings with the routes file (``settings``)."""
