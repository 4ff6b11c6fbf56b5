import inspect
import subprocess
import sys

import banditroute as br


def test_all_is_complete():
    public = {name for name, obj in vars(br).items()
              if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"}
    assert public == set(br.__all__)
    for name in br.__all__:
        assert getattr(br, name).__doc__, f"{name} has no docstring"


def test_contract_names_exist():
    for name in ("decide", "record", "probabilities", "action_distribution", "decide_batch", "flush",
                 "beliefs", "save", "load", "from_config", "replay", "add_profile"):
        assert callable(getattr(br.Router, name))


def test_python_dash_m_works_like_the_command():
    out = subprocess.run([sys.executable, "-m", "banditroute", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "replay" in out.stdout


def test_cli_errors_go_to_stderr_with_nonzero_exit(tmp_path):
    bad = tmp_path / "routes.toml"
    bad.write_text("[[profiles]]\nname = 'a'\ncost_usd = -1\n")
    out = subprocess.run([sys.executable, "-m", "banditroute", "replay", "--config", str(bad), "--logs", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "routes.toml: profiles[0].cost_usd must be >= 0, got -1.0" in out.stderr


def test_cli_replay(tmp_path):
    routes = tmp_path / "routes.toml"
    routes.write_text("[router]\ntask_types = ['x']\n[[profiles]]\nname = 'a'\n[[profiles]]\nname = 'b'\n")
    router = br.Router.from_config(routes, log_dir=tmp_path / "logs", seed=0)
    for _ in range(10):
        router.record(router.decide({}).id, quality=1.0)
    router.flush()
    out = subprocess.run([sys.executable, "-m", "banditroute", "replay", "--config", str(routes), "--logs",
                          str(tmp_path / "logs"), "--json", "--out", str(tmp_path / "state.pkl")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    payload = json.loads(out.stdout)
    assert payload["outcomes_applied"] == 10
    assert br.Router.load(tmp_path / "state.pkl", log_dir=None).beliefs().equals(router.beliefs())


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """``banditroute calibration ... | head -1``: the reader closes the pipe; no traceback, exit 141."""
    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["x", "y"], log_dir=tmp_path, seed=0)
    for i in range(400):
        router.record(router.decide({"task_type": "xy"[i % 2]}).id, quality=float(i % 3 == 0))
    router.close()
    proc = subprocess.Popen([sys.executable, "-m", "banditroute", "calibration", "--logs", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before the command writes (it is still importing): every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    # python -m ope on the same logs, its table piped into a reader that is already gone
    proc = subprocess.Popen([sys.executable, "-m", "ope", str(tmp_path), "--policy", "u=uniform"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
