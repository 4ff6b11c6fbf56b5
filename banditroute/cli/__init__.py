"""The ``banditroute`` command: argument parsers that call the library."""

from .main import main

__all__ = ["main"]
