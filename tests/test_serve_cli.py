"""``banditroute serve`` as an operator meets it: it says where it listens, refuses to expose
an unauthenticated router beyond loopback unless told to, and takes the Bearer scheme in any case."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
pytest.importorskip("starlette", reason="the in-process tests use starlette's TestClient (dev extra)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_service import ROUTES, free_port, start_service, stop_service  # noqa: E402
from test_service import TOKEN, client, routes  # noqa: E402,F401  (fixtures)


def test_a_non_loopback_address_without_a_token_is_refused(tmp_path):
    (tmp_path / "routes.toml").write_text(ROUTES)
    out = subprocess.run([sys.executable, "-m", "banditroute", "serve", "--config", str(tmp_path / "routes.toml"),
                          "--host", "0.0.0.0", "--log-dir", str(tmp_path / "logs")],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and out.stdout == ""
    assert "--host is not a loopback address: give --token" in out.stderr and "0.0.0.0" in out.stderr
    assert not (tmp_path / "logs").exists()  # refused before anything was created


def test_serve_says_where_it_listens_and_warns_without_auth(tmp_path):
    port = free_port()
    proc = start_service(tmp_path, port, extra=["--host", "0.0.0.0", "--insecure-no-auth"])
    try:
        pass
    finally:
        stop_service(proc)
    err = (tmp_path / f"server-{port}.log").read_text()
    assert "WARNING: 0.0.0.0 is served without authentication" in err
    assert f"on http://0.0.0.0:{port} (1 worker(s)" in err and "auth off" in err


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(client, scheme):  # noqa: F811
    r = client.get("/v1/beliefs", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200


@pytest.mark.parametrize("header", [f"Basic {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN}x", TOKEN, ""])
def test_anything_else_is_401(client, header):  # noqa: F811
    assert client.get("/v1/beliefs", headers={"Authorization": header}).status_code == 401
