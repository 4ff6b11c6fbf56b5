"""``banditroute replay``: rebuild a router's beliefs from its logs.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--config", "r.toml", "--logs", "logs"])
>>> args.config, args.logs, args.out
('r.toml', 'logs', None)
"""

from __future__ import annotations

import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``replay`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("replay", help="rebuild a router's beliefs from its logs",
                              description="Rebuild a router's beliefs from its logs: replay the logged outcomes into "
                                          "a router built from the routes file, print (and save) its beliefs.")
    p.add_argument("--config", required=True, help="routes TOML file")
    p.add_argument("--logs", required=True, help="log directory")
    p.add_argument("--out", help="save the rebuilt router to this file")
    p.add_argument("--json", action="store_true", help="print the beliefs as JSON")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Replay the logs into a router built from the routes file; print (and save) its beliefs."""
    from ..decide.router import Router

    router = Router.from_config(args.config, log_dir=None)
    n = router.replay(args.logs)
    beliefs = router.beliefs()
    if args.out:
        router.save(args.out)
    if args.json:
        print(json.dumps({"outcomes_applied": n, "beliefs": beliefs.to_dicts()}, indent=2))
    else:
        print(f"applied {n} outcomes from {args.logs}")
        print(beliefs)
    return 0
