"""The command-line documentation follows the argparse parsers (issue 17, item 6).

- ``docs/cli.md`` is exactly :func:`banditroute.cli.reference.cli_reference` (generated from
  the parsers);
- every option of every parser has a help text;
- README's "## Command line" section has a bullet per subcommand whose backticked synopsis names
  exactly the subcommand's ``--flags``; ``serve``'s options, too many for a synopsis, are the ones
  "## HTTP service" names, and its bullet points to ``docs/cli.md`` for the rest; the
  ``python -m ope`` example of "## `ope`" names only options that exist;
- a planted drift is reported (the comparison cannot pass vacuously).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from banditroute.cli.reference import REGENERATE, cli_reference, command_parsers, long_flags, parser_actions

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: A bullet of the Command line section: its first backticked span, ``banditroute CMD ...``.
BULLET = re.compile(r"^- `(banditroute ([a-z][a-z-]*)[^`]*)`(.*?)(?=^- |\Z)", re.M | re.S)
#: Subcommands too rich for a synopsis: their bullet points to docs/cli.md, and their options
#: are the ones the named README section mentions.
DOCUMENTED_IN = {"serve": "## HTTP service"}


def _parsers() -> dict[str, set[str]]:
    """``{command: its --flags}``: ``demo``, ..., and ``python -m ope``."""
    return {command.removeprefix("banditroute "): long_flags(parser) for command, parser in command_parsers()
            if command != "banditroute"}


def section(text: str, heading: str) -> str:
    """The section whose ``## `` heading starts with ``heading``, up to the next ``## `` heading."""
    start = text.find(f"\n{heading}")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else len(text)]


def _drift(command: str, expected: set[str], found: set[str], where: str, *, subset: bool = False) -> list[str]:
    missing = set() if subset else expected - found
    extra = found - expected
    if not missing and not extra:
        return []
    return [f"{command}: {where} " + "; ".join(
        part for part in (f"lacks {', '.join(sorted(missing))}" if missing else "",
                          f"names unknown {', '.join(sorted(extra))}" if extra else "") if part)]


def readme_drift(readme: str, parsers: dict[str, set[str]]) -> list[str]:
    """Where README's command lines and the parsers disagree, one message each (naming the
    command and the missing or unknown flags); empty when they agree."""
    problems = []
    commands = section(readme, "## Command line")
    if "`docs/cli.md`" not in commands:
        problems.append("README's Command line section does not point to `docs/cli.md`")
    bullets = {m.group(2): (m.group(1), m.group(3)) for m in BULLET.finditer(commands.lstrip("\n"))}
    for command, flags in parsers.items():
        if command == "python -m ope":
            continue
        if command not in bullets:
            problems.append(f"{command}: no `banditroute {command} ...` bullet in README's Command line section")
            continue
        synopsis, text = bullets[command]
        found = set(FLAG.findall(synopsis))
        if command not in DOCUMENTED_IN:
            problems += _drift(command, flags, found, "README synopsis")
            continue
        mentioned = set(FLAG.findall(section(readme, DOCUMENTED_IN[command])))
        problems += _drift(command, flags, found, "README synopsis", subset=True)
        problems += _drift(command, flags, mentioned, f"README's {DOCUMENTED_IN[command]!r}", subset=True)
        if flags - found - mentioned and "`docs/cli.md`" not in synopsis + text:
            problems.append(f"{command}: README names neither {', '.join(sorted(flags - found - mentioned))} "
                            "nor points its bullet to `docs/cli.md`")
    problems += [f"{command}: a README bullet for a command that does not exist" for command in bullets
                 if command not in parsers]
    for example in re.findall(r"`(python -m ope [^`]*)`", section(readme, "## `ope`")):
        problems += _drift("python -m ope", parsers["python -m ope"], set(FLAG.findall(example)), "README example",
                           subset=True)
    return problems


def test_docs_cli_md_is_generated_from_the_parsers():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == cli_reference(), (
        f"docs/cli.md is out of date with the parsers; regenerate it: {REGENERATE}")


def test_the_reference_has_a_section_per_command_with_every_option():
    text = cli_reference()
    for command, parser in command_parsers():
        body = text.split(f"## `{command}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser_actions(parser):
            if action.option_strings:
                assert f"`{max(action.option_strings, key=len)}" in body, (command, action.option_strings)
    assert text.index("## `banditroute demo`") < text.index("## `banditroute export`") < text.index("python -m ope`")


def test_check_reports_a_stale_file_with_a_diff(tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text(cli_reference().replace("--no-report", "--no-html"), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "banditroute.cli.reference", "--check", str(stale)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    assert "-- `--no-html`" in out.stdout and "+- `--no-report`" in out.stdout
    assert REGENERATE in out.stderr


@pytest.mark.parametrize("command,parser", command_parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_a_help_text(command, parser):
    actions = [a for a in parser_actions(parser) if a.nargs != argparse.PARSER]  # banditroute's COMMAND: the sections
    assert actions or command == "banditroute"
    missing = [a.option_strings or a.dest for a in actions if not (a.help or "").strip()]
    assert not missing, f"{command}: options without help: {missing}"


def test_readme_command_lines_match_the_parsers():
    problems = readme_drift(README, _parsers())
    assert not problems, "README.md disagrees with the parsers:\n" + "\n".join(problems)


def test_every_subcommand_has_a_readme_bullet():
    bullets = {m.group(2) for m in BULLET.finditer(section(README, "## Command line").lstrip("\n"))}
    assert set(_parsers()) - {"python -m ope"} <= bullets


def test_a_planted_drift_is_reported():
    parsers = _parsers()
    assert readme_drift(README, parsers) == []
    lacking = README.replace(" [--no-progress]", "", 1)
    assert readme_drift(lacking, parsers) == ["demo: README synopsis lacks --no-progress"]
    unknown = README.replace("[--bins 10]", "[--bins 10] [--html]", 1)
    assert readme_drift(unknown, parsers) == ["calibration: README synopsis names unknown --html"]
    no_bullet = re.sub(r"^- `banditroute compact .*?(?=^- )", "", README, count=1, flags=re.M | re.S)
    assert readme_drift(no_bullet, parsers) == [
        "compact: no `banditroute compact ...` bullet in README's Command line section"]
    renamed = README.replace("--max-header-bytes", "--max-head-bytes")  # in ## HTTP service
    assert readme_drift(renamed, parsers) == ["serve: README's '## HTTP service' names unknown --max-head-bytes"]
    silent = README.replace("all its options are in `docs/cli.md`", "more below")
    assert readme_drift(silent, parsers)[0].startswith("serve: README names neither --max-commits-in-flight, ")
    ope_example = README.replace("--estimators ips,snips,dr", "--estimator dr", 1)
    assert readme_drift(ope_example, parsers) == ["python -m ope: README example names unknown --estimator"]
    a_new_option = {**parsers, "export": parsers["export"] | {"--compress"}}
    assert readme_drift(README, a_new_option) == ["export: README synopsis lacks --compress"]
