"""The command-line reference (``docs/cli.md``), generated from the argparse parsers only.

:func:`cli_reference` renders :func:`banditroute.cli.main.build_parser` (one section per
subcommand, in :data:`~banditroute.cli.main.SUBCOMMANDS` order) and :func:`ope.cli.build_parser`
(``python -m ope``): each command's usage line, its description and every option (flags,
metavar, whether required, default, choices, help). The usage lines are built here
from the actions, not by argparse's formatter, so the text is the same on every Python version
and terminal width.

``python -m banditroute.cli.reference`` prints it; ``--write PATH`` writes it; ``--check PATH``
exits 1 with a unified diff when PATH differs.

>>> text = cli_reference()
>>> text.splitlines()[2]
'_Generated from the argparse parsers by `python -m banditroute.cli.reference --write docs/cli.md`; do not edit._'
>>> print(text.split("## `banditroute compact`")[1].split("##")[0].strip())
```text
banditroute compact --log-dir LOG_DIR [--optimize] [--vacuum-hours H]
```
<BLANKLINE>
Compact the journal segments left by stopped writers into Parquet parts (on a Delta log: ...
<BLANKLINE>
- `--log-dir LOG_DIR` (required): log directory
- `--optimize`: Delta log: rewrite each table's small files into larger ones (rows unchanged)
- `--vacuum-hours H`: Delta log: delete files the tables no longer reference that are older than H hours ...
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cli_reference", "command_parsers", "parser_actions", "long_flags", "main"]

REGENERATE = "python -m banditroute.cli.reference --write docs/cli.md"
_WIDTH = 100  # usage lines are wrapped at this width, whatever the terminal


class _Recorder(argparse.HelpFormatter):
    """A help formatter that keeps the actions a parser hands it, in the order of ``--help``
    (argparse lists a parser's actions nowhere public, but gives them all to its formatter)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog)
        self.actions: list[argparse.Action] = []

    def add_argument(self, action: argparse.Action) -> None:
        self.actions.append(action)


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of ``parser`` but ``-h/--help``, positionals first (as ``--help`` lists them).

    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--n", type=int, default=1, help="how many")
    >>> [a.dest for a in parser_actions(p)]
    ['n']
    """
    recorder = _Recorder(parser.prog)
    reader = copy.copy(parser)  # the parser itself keeps its formatter
    reader.formatter_class = lambda prog, **_: recorder
    reader.format_help()
    return [a for a in recorder.actions if "--help" not in a.option_strings]


def long_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The ``--long`` option strings of ``parser``, without ``--help``."""
    return {s for a in parser_actions(parser) for s in a.option_strings if s.startswith("--")}


def command_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` for every documented command: ``banditroute``, each subcommand in
    ``SUBCOMMANDS`` order, then ``python -m ope``."""
    from ope.cli import build_parser as ope_parser

    from .main import build_parser

    top = build_parser()
    sub = next(a for a in parser_actions(top) if a.nargs == argparse.PARSER)
    return ([("banditroute", top)] + [(f"banditroute {name}", p) for name, p in sub.choices.items()]
            + [("python -m ope", ope_parser())])


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None and not isinstance(action.choices, dict):
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _invocation(action: argparse.Action) -> str:
    """``--flag METAVAR`` (the long form), or the positional's metavar."""
    m = _metavar(action)
    value = {None: m, 0: "", argparse.OPTIONAL: f"[{m}]", argparse.ZERO_OR_MORE: f"[{m} ...]",
             argparse.ONE_OR_MORE: f"{m} [{m} ...]", argparse.PARSER: f"{m} ..."}.get(action.nargs)
    if value is None:  # an integer nargs
        value = " ".join([m] * int(action.nargs))
    if not action.option_strings:
        return value
    flag = next((s for s in reversed(action.option_strings) if s.startswith("--")), action.option_strings[0])
    return f"{flag} {value}".rstrip()


def _usage(prog: str, actions: Sequence[argparse.Action]) -> str:
    """The usage line (optionals, then positionals), wrapped at a fixed width."""
    parts = [_invocation(a) if a.required or not a.option_strings else f"[{_invocation(a)}]"
             for a in sorted(actions, key=lambda a: not a.option_strings)]
    lines = [prog]
    for part in parts:
        if len(lines[-1]) + 1 + len(part) > _WIDTH and lines[-1].strip():
            lines.append(" " * (len(prog) + 1) + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)


def _help(action: argparse.Action, prog: str) -> str:
    text = " ".join((action.help or "").split())
    if "%" in text:  # argparse's own expansion: %(default)s, %(prog)s...
        text = text % {**vars(action), "prog": prog}
    return text


def _option(action: argparse.Action, prog: str) -> str:
    facts = []
    if action.required or not action.option_strings:
        facts.append("required" if action.option_strings else "positional")
    if action.choices is not None and action.nargs != argparse.PARSER:
        facts.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    default = action.default
    if not (default is None or default is False or default == [] or default == argparse.SUPPRESS):
        facts.append(f"default `{default}`")
    attributes = f" ({'; '.join(facts)})" if facts else ""
    return f"- `{_invocation(action)}`{attributes}: {_help(action, prog)}"


def _section(command: str, parser: argparse.ArgumentParser) -> list[str]:
    actions = parser_actions(parser)
    out = [f"## `{command}`", "", "```text", _usage(command, actions), "```", ""]
    if parser.description:
        out += [" ".join(parser.description.split()), ""]
    sub = next((a for a in actions if a.nargs == argparse.PARSER), None)
    if sub is not None:
        out += [f"- [`{name}`](#{command.replace(' ', '-')}-{name}): {' '.join((p.description or '').split())}"
                for name, p in sub.choices.items()]
    else:
        out += [_option(a, command) for a in actions]
    return out + [""]


def cli_reference() -> str:
    """The Markdown reference of every command (``docs/cli.md``)."""
    lines = ["# Command-line reference", "",
             f"_Generated from the argparse parsers by `{REGENERATE}`; do not edit._", "",
             "Every command also takes `-h`/`--help`.", ""]
    for command, parser in command_parsers():
        lines += _section(command, parser)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, write it (``--write PATH``) or compare it (``--check PATH``: 1 if it differs)."""
    parser = argparse.ArgumentParser(prog="python -m banditroute.cli.reference", description=main.__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="PATH", help="exit 1 with a unified diff if PATH differs from the reference")
    mode.add_argument("--write", metavar="PATH", help="write the reference to PATH")
    args = parser.parse_args(argv)
    text = cli_reference()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    elif args.check:
        path = Path(args.check)
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                                       fromfile=str(path), tofile="generated from the parsers"))
            print(f"{path} is out of date; regenerate it: {REGENERATE}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
