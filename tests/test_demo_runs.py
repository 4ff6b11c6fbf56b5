"""The README's demo run where the user meets it: through the CLI, any number of times in one
folder, each run in its own directory with the routes file it ran with, and the follow-up
commands it prints working on that run's logs."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest

import banditroute as br
from banditroute.sim import run_demo

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

N = 2_000


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "banditroute", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def next_commands(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = lines.index("Next, on this run's logs and routes file:") + 1
    return [line.strip() for line in lines[start:] if line.startswith("  banditroute ")]


def test_demo_twice_in_one_folder_writes_two_runs_and_its_commands_work(tmp_path):
    first = cli("demo", "--requests", str(N), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("demo", "--requests", str(N), "--no-progress", "--seed", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    for name, out in (("run-1", first), ("run-2", second)):
        run = tmp_path / "runs" / name
        assert (run / "logs" / "decisions").is_dir() and (run / "report.html").is_file()
        assert f"Report: runs/{name}/report.html" in out.stdout
        routes = tomllib.loads((run / "routes.toml").read_text())
        assert routes["router"]["log_dir"] == f"runs/{name}/logs"
        assert routes["router"]["task_types"] == ["chat", "code", "math", "summarize"]
        assert "drift" in routes and routes["objective"] == {"quality": 1.0, "cost": 10.0, "latency": 2e-5}
        assert [p["name"] for p in routes["profiles"]] == ["small", "medium", "large", "medium-v2"]
    commands = next_commands(second.stdout)
    assert [c.split()[1] for c in commands] == ["replay", "serve", "promote", "report"]
    assert all("runs/run-2/" in c and "run-1" not in c for c in commands)
    for command in commands:
        if command.split()[1] == "serve":
            continue  # a server: started by hand in the work's report (it resumes the run's beliefs)
        done = cli(*shlex.split(command)[1:], cwd=tmp_path)
        assert done.returncode in ((0, 3) if "promote" in command else (0,)), (command, done.stderr)
    assert (tmp_path / "runs" / "run-2" / "report-config.html").is_file()


def test_replay_with_the_written_routes_file_gives_the_live_beliefs_through_the_cli(tmp_path):
    demo = cli("demo", "--requests", str(N), "--no-progress", "--no-evaluate", "--json", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    live = json.loads(demo.stdout)
    replay = cli("replay", "--logs", "runs/run-1/logs", "--config", live["routes_path"], "--json", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(replay.stdout)
    failed = sum(f["n_failed"] for f in live["failures"])  # applied, but without a quality to count
    assert failed > 0 and replayed["outcomes_applied"] == N + live["cascade"]["n_escalations"] - failed
    assert replayed["beliefs"] == live["beliefs"] and len(live["beliefs"]) == 4 * 4


def test_replay_gives_the_live_beliefs_after_a_drift_reset_and_a_join(tmp_path):
    r = run_demo(n_requests=6_000, seed=1, log_dir=tmp_path / "logs", progress=False, out=None, evaluate=False)
    assert r.drift_events and r.onboardings  # the cases a replay could get wrong
    router = br.Router.from_config(r.routes_path, log_dir=None)
    failed = sum(f["n_failed"] for f in r.failures)  # applied (availability), but without a quality
    assert router.replay(tmp_path / "logs") == 6_000 + r.cascade["n_escalations"] - failed
    assert tuple(router.beliefs().to_dicts()) == r.beliefs


def test_a_log_dir_that_holds_a_log_is_refused_before_the_run(tmp_path):
    assert cli("demo", "--requests", "300", "--no-progress", "--no-evaluate", "--log-dir", "mine/logs",
               cwd=tmp_path).returncode == 0
    t0 = time.perf_counter()
    again = cli("demo", "--requests", str(50 * N), "--log-dir", "mine/logs", cwd=tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert time.perf_counter() - t0 < 15  # refused up front, not after 100,000 requests
    assert "--log-dir already holds a decision log" in again.stderr and "'mine/logs'" in again.stderr
    assert "omit --log-dir" in again.stderr
    # a fresh log dir next to a routes file the run would replace: refused too
    other = cli("demo", "--requests", "300", "--log-dir", "mine/other", cwd=tmp_path)
    assert other.returncode == 2 and "mine/routes.toml" in other.stderr
    # the library refuses it as well (the evaluation would otherwise mix two runs' decisions)
    with pytest.raises(br.ConfigError, match="log_dir already holds a decision log"):
        run_demo(n_requests=300, seed=0, log_dir=tmp_path / "mine" / "logs", progress=False, out=None)
