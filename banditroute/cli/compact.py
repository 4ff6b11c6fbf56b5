"""``banditroute compact``: compact journal segments left by stopped writers into Parquet parts.

>>> run(add_parser(__import__("argparse").ArgumentParser().add_subparsers()).parse_args(["--log-dir", "/nonexistent"]))
Traceback (most recent call last):
...
banditroute.errors.ConfigError: --log-dir is not a directory, got '/nonexistent'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``compact`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("compact", help="compact journal segments left by stopped writers into Parquet parts",
                              description="Compact the journal segments left by stopped writers into Parquet parts.")
    p.add_argument("--log-dir", required=True, help="log directory")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Open (and close) a log writer on the directory: opening recovers every segment whose writer is gone."""
    from ..logs.store import LogWriter

    if not Path(args.log_dir).is_dir():
        raise ConfigError("--log-dir", args.log_dir, "is not a directory")
    writer = LogWriter(args.log_dir)  # opening a writer recovers every segment whose writer is gone
    writer.close()
    print(f"compacted {writer.n_recovered} journal segment(s) into Parquet parts")
    return 0
