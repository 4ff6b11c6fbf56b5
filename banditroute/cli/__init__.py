"""The ``banditroute`` command: one module per subcommand (its parser and a small function
calling the library), :mod:`~banditroute.cli.main` building the top parser and dispatching."""

from .main import main

__all__ = ["main"]
