"""The demo's progress where the user meets it (issue 17): every phase says when it starts and
ends, in plain lines with no carriage return when stderr is not a terminal (a log file, a pipe,
CI), a live bar when it is; nothing with ``--no-progress``; ``--json`` stdout stays pure JSON.

No timing is asserted (CONVENTIONS): the heartbeat tests wait, with a generous deadline, for the
line they expect. The longest silence of the README's run is measured by hand (issue 17 notes).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time

import pytest

from banditroute.sim import run_demo
from banditroute.sim.demo_summary import PhaseLog

LINE = re.compile(r"^\[demo +\d+\.\ds\] (?P<phase>[^:]+): (?P<what>.*)$")
EVALUATED = ["setup", "simulation", "finish", "evaluation data", "ucb candidate", "off-policy estimates",
             "promotion gate", "report", "summary"]


def phases_of(text: str) -> list[str]:
    """The phases of a non-terminal stream, in order; checks that every line is a plain phase
    line and that each phase starts, then ends, before the next one starts."""
    assert "\r" not in text and text.endswith("\n")
    done, current = [], None
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, line
        phase, what = m["phase"], m["what"]
        if what.startswith("started"):
            assert current is None, f"{phase} starts while {current} runs"
            current = phase
        else:
            assert phase == current, line
            if what.startswith("done in "):
                done.append(phase)
                current = None
            else:  # a progress line: a percentage of counted work, or "running"
                assert re.match(r"^(\d+% \([\d,]+/[\d,]+ \w+\)|running), \d+\.\d s$", what), line
    assert current is None, f"{current} never ended"
    return done


def wait_for(stream: io.StringIO, needle: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in stream.getvalue():
        assert time.monotonic() < deadline, f"no {needle!r} in {stream.getvalue()!r}"
        time.sleep(0.01)


def test_every_phase_of_an_evaluated_run_starts_and_ends_in_plain_lines(tmp_path):
    err, out = io.StringIO(), io.StringIO()
    r = run_demo(n_requests=3_000, seed=0, log_dir=tmp_path / "run" / "logs", progress=True, out=out,
                 progress_stream=err)
    text = err.getvalue()
    assert phases_of(text) == EVALUATED
    assert "simulation: done in " in text and "(3,000/3,000 requests)" in text
    assert f"report: started ({r.report_path})" in text
    assert "[demo" not in out.getvalue()  # the summary's stream holds no progress


def test_a_run_without_evaluation_has_fewer_phases_and_a_quiet_run_none(tmp_path):
    err = io.StringIO()
    run_demo(n_requests=500, seed=0, log_dir=None, progress=True, out=None, progress_stream=err)
    assert phases_of(err.getvalue()) == ["setup", "simulation", "finish", "summary"]
    quiet = io.StringIO()
    run_demo(n_requests=500, seed=0, log_dir=None, progress=False, out=None, progress_stream=quiet)
    assert quiet.getvalue() == ""


def test_a_long_phase_writes_progress_lines_not_carriage_returns():
    stream = io.StringIO()
    log = PhaseLog(stream, heartbeat_s=0.01)
    with log.phase("gate", "opaque work"):
        wait_for(stream, "gate: running, ")
    with log.phase("ucb", total=10, unit="rounds") as advance:
        advance(5)
        wait_for(stream, "ucb: 50% (5/10 rounds), ")
        advance(10)
    assert phases_of(stream.getvalue()) == ["gate", "ucb"]
    assert stream.getvalue().splitlines()[-1].endswith("(10/10 rounds)")


def heartbeats() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("demo progress")]


def test_the_heartbeat_stops_with_its_phase():
    stream = io.StringIO()
    with PhaseLog(stream, heartbeat_s=0.01).phase("gate"):
        wait_for(stream, "gate: running")
        assert heartbeats() == ["demo progress: gate"]
    assert heartbeats() == []
    ended = stream.getvalue()
    time.sleep(0.05)  # more than a heartbeat: nothing more is written
    assert stream.getvalue() == ended and ended.splitlines()[-1].split("] ")[1].startswith("gate: done in ")


def test_a_failing_phase_says_so_and_raises():
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with PhaseLog(stream).phase("simulation", total=100, unit="requests") as advance:
            advance(40)
            raise KeyboardInterrupt
    assert re.search(r"simulation: stopped after \d+\.\d s \(40/100 requests\)\n$", stream.getvalue())


def test_silent_log_writes_nothing_and_starts_no_thread():
    with PhaseLog(None).phase("simulation", total=10, unit="requests") as advance:
        advance(10)
        assert heartbeats() == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_bar_between_the_phase_lines():
    stream = Terminal()
    log = PhaseLog(stream)
    assert log.live
    with log.phase("simulation", total=1_000, unit="requests") as advance:
        for done in range(100, 1_001, 100):
            advance(done)
    text = stream.getvalue()
    assert re.search(r"\rsimulation: +\d+%\|.*\| \d+/1000 ", text)  # tqdm's bar, redrawn in place
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("[demo")]
    assert [LINE.match(line)["what"].split(" ")[0] for line in lines] == ["started", "done"]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "banditroute", "demo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_reports_phases_on_a_piped_stderr_and_keeps_json_stdout_pure(tmp_path):
    done = cli("--requests", "2000", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["report_path"] == "runs/run-1/report.html"
    assert phases_of(done.stderr) == EVALUATED


def test_cli_no_progress_writes_nothing_on_stderr(tmp_path):
    done = cli("--requests", "500", "--no-progress", "--no-evaluate", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and json.loads(done.stdout)["n_requests"] == 500
