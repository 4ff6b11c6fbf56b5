"""The HTTP service in-process (Starlette's TestClient): API, durability on ack, error envelope."""

import json

import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
pytest.importorskip("starlette", reason="the in-process tests use starlette's TestClient (dev extra)")
pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2")

import banditroute as br  # noqa: E402
from banditroute.service.app import ServiceConfig, create_app, openapi_spec  # noqa: E402

ROUTES = """
[router]
task_types = ["chat", "code"]
seed = 0
[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400
[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
"""
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def routes(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    return path


@pytest.fixture
def client(tmp_path, routes):
    from starlette.testclient import TestClient

    app = create_app(ServiceConfig(config=str(routes), log_dir=str(tmp_path / "logs"), token=TOKEN,
                                   max_body_bytes=4096))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def envelope(response, status, field):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["status"] == status and err["field"] == field and err["code"] and err["message"]
    return err


def test_decide_then_outcome_are_durable_when_acknowledged(client, tmp_path):
    r = client.post("/v1/decide", json={"context": {"task_type": "code", "tenant": "acme"}}, headers=AUTH)
    assert r.status_code == 200
    d = r.json()
    assert d["profile"] in ("small", "large")
    assert d["propensity"] == d["probabilities"][d["profile"]]
    assert abs(sum(d["probabilities"].values()) - 1) < 1e-12
    # acknowledged => already on disk, before any shutdown flush
    logged = br.scan_table(tmp_path / "logs", "decisions").collect()
    assert logged.filter(pl.col("decision_id") == d["id"]).height == 1
    r = client.post("/v1/outcome", json={"decision_id": d["id"], "quality": 1.0, "latency_ms": 300}, headers=AUTH)
    assert r.json() == {"decision_id": d["id"], "status": "applied"}
    outcomes = br.scan_table(tmp_path / "logs", "outcomes").collect()
    assert outcomes.filter(pl.col("decision_id") == d["id"]).get_column("status").to_list() == ["applied"]
    r = client.post("/v1/outcome", json={"decision_id": d["id"], "quality": 0.0}, headers=AUTH)
    assert r.json()["status"] == "duplicate"
    beliefs = client.get("/v1/beliefs", headers=AUTH).json()["beliefs"]
    assert sum(row["n"] for row in beliefs) == 1.0


def test_many_concurrent_requests_share_group_commits(client, tmp_path):
    import concurrent.futures as cf

    def one(i):
        return client.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH).json()["id"]

    with cf.ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(one, range(64)))
    logged = br.scan_table(tmp_path / "logs", "decisions").collect().get_column("decision_id")
    assert set(ids) <= set(logged) and logged.len() == logged.n_unique() == 64
    assert 1 <= client.app.state.service.commit.n_commits <= 64


def test_journal_is_compacted_into_parquet_on_shutdown_and_recovered_after_a_crash(tmp_path, routes):
    from starlette.testclient import TestClient

    logs = tmp_path / "logs"
    app = create_app(ServiceConfig(config=str(routes), log_dir=str(logs), token=TOKEN))
    with TestClient(app) as c:
        ids = [c.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH).json()["id"]
               for _ in range(20)]
        assert list((logs / "_journal").glob("*.jsonl"))  # acknowledged rows live in the journal for now
        assert not list((logs / "decisions").glob("date=*/part-*.parquet"))
    # graceful shutdown compacted the journal into Parquet; nothing is left behind or doubled
    assert not list((logs / "_journal").glob("*.jsonl"))
    on_parquet = pl.read_parquet(logs / "decisions" / "date=*" / "part-*.parquet")
    assert sorted(on_parquet.get_column("decision_id")) == sorted(ids)
    # a segment a process killed mid-write left behind (its last line torn, so never acknowledged)
    # is read by scan_table, and compacted by the next writer that opens the directory
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal
        from banditroute.logs.store import LogWriter
        w = LogWriter({str(logs)!r}, journal=True, writer_id="deadbeef")
        w.append("outcomes", ({ids[0]!r}, 1, "deadbeef", 0, 1.0, None, None, 1.0, "applied"))
        w.flush()
        os.write(w._journal._current.fd, b'{{"outcomes": [["torn')
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    segment = next((logs / "_journal").glob("deadbeef-*.jsonl"))
    assert br.scan_table(logs, "outcomes").collect().get_column("decision_id").to_list() == [ids[0]]
    from banditroute.cli.main import main

    assert main(["compact", "--log-dir", str(logs)]) == 0
    assert not segment.exists()
    assert br.scan_table(logs, "outcomes").collect().get_column("decision_id").to_list() == [ids[0]]
    assert len(list((logs / "outcomes").glob("date=*/part-deadbeef-j*.parquet"))) == 1


@pytest.mark.parametrize("body, status, field", [
    (b"{", 400, "body"),                                            # bad JSON
    (b'{"context": {"a": NaN}}', 400, "body"),                      # not JSON (NaN)
    (b"[1, 2]", 422, "body"),                                       # not an object
    (b"{}", 422, "context"),                                        # missing field
    (b'{"context": 3}', 422, "context"),                            # wrong type
    (b'{"context": {}, "extra": 1}', 422, "extra"),                 # unknown field
    (b'{"context": {"task_type": "poetry"}}', 422, "context.task_type"),
    (b'{"context": {"task_type": 7}}', 422, "context.task_type"),
    (b'{"context": {"task_probs": {"chat": 2}}}', 422, "context.task_probs.chat"),
    (b'{"context": {"x": "\\ud800"}}', 422, "context.x"),           # lone surrogate: cannot be logged
    (b"[" * 2040 + b"]" * 2040, 400, "body"),                       # nested too deeply
])
def test_malformed_decide_gets_the_envelope(client, body, status, field):
    envelope(client.post("/v1/decide", content=body, headers=AUTH), status, field)


@pytest.mark.parametrize("payload, status, field", [
    ({}, 422, "decision_id"),
    ({"decision_id": 5}, 422, "decision_id"),
    ({"decision_id": "abc-1"}, 404, "decision_id"),                 # unknown decision id
    ({"decision_id": "abc-1", "quality": "good"}, 422, "quality"),
    ({"decision_id": "abc-1", "quality": 1.5}, 422, "quality"),
    ({"decision_id": "abc-1", "cost_usd": -1}, 422, "cost_usd"),
    ({"decision_id": "abc-1", "latency_ms": True}, 422, "latency_ms"),
    ({"decision_id": "abc-1", "qualty": 1}, 422, "qualty"),
])
def test_malformed_outcome_gets_the_envelope(client, payload, status, field):
    err = envelope(client.post("/v1/outcome", json=payload, headers=AUTH), status, field)
    if status == 404:
        assert "replica that issued the decision" in err["message"]


def test_oversize_body_gets_413(client):
    envelope(client.post("/v1/decide", content=b" " * 5000, headers=AUTH), 413, "body")

    def chunks():  # no content-length: the limit holds while streaming
        for _ in range(10):
            yield b" " * 1000

    envelope(client.post("/v1/decide", content=chunks(), headers=AUTH), 413, "body")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_bad_token_gets_401(client, headers):
    for method, path in (("post", "/v1/decide"), ("post", "/v1/outcome"), ("get", "/v1/beliefs"), ("get", "/metrics")):
        r = getattr(client, method)(path, headers=headers, **({"json": {"context": {}}} if method == "post" else {}))
        envelope(r, 401, "authorization")
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200  # probes need no token


def test_unknown_path_and_method(client):
    envelope(client.get("/v2/nothing", headers=AUTH), 404, "path")
    envelope(client.get("/v1/decide", headers=AUTH), 405, "method")


def test_unexpected_errors_are_a_generic_500(client, monkeypatch):
    svc = client.app.state.service

    def boom(context):
        raise RuntimeError("secret internals at /etc/shadow")

    monkeypatch.setattr(svc.router, "decide", boom)
    r = client.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH)
    err = envelope(r, 500, None)
    assert err["message"] == "internal error" and "secret" not in r.text and "shadow" not in r.text


def test_log_failure_is_a_503_without_paths(client, monkeypatch):
    svc = client.app.state.service

    def fail(tables):
        raise br.LogError("log_dir/decisions", "/very/private/path", "cannot be written (No space left)")

    monkeypatch.setattr(svc.log, "commit_detached", fail)
    r = client.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH)
    err = envelope(r, 503, "log_dir")
    assert "private" not in r.text and "not acknowledged" in err["message"]


def test_metrics_and_health(client):
    for _ in range(3):
        did = client.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH).json()["id"]
        client.post("/v1/outcome", json={"decision_id": did, "quality": 1}, headers=AUTH)
    client.post("/v1/decide", content=b"{", headers=AUTH)
    text = client.get("/metrics", headers=AUTH).text
    assert "banditroute_decision_latency_seconds_count" in text
    assert 'banditroute_outcomes_total{replica="' in text and 'status="applied"} 3' in text
    assert 'code="invalid_json"} 1' in text
    assert "banditroute_profile_share" in text
    shares = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("banditroute_profile_share")]
    assert sum(shares) == pytest.approx(1.0)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["shared_state"] == "off"


def test_openapi_describes_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] \
        == ["context"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    json.dumps(spec)


def test_openapi_spec_without_auth_has_no_security():
    spec = openapi_spec(br.Router([br.Profile("a")]), auth=False, max_body_bytes=10)
    assert "securitySchemes" not in spec["components"]


def test_service_config_errors_name_field_and_value():
    with pytest.raises(br.ConfigError, match="commit_interval_ms must be >= 0, got -1.0"):
        ServiceConfig(config="r.toml", commit_interval_ms=-1)
    with pytest.raises(br.ConfigError, match="token must be a string of at least 8 characters"):
        ServiceConfig(config="r.toml", token="short")
