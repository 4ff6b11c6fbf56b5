"""Request budgets, escalations and failed calls through the real service.

Every test talks HTTP to ``python -m banditroute serve`` (uvicorn) in a subprocess, one request
per connection, and reads what the service logged with ``banditroute.scan_table``:

- ``POST /v1/decide`` with ``budget``: the excluded profiles and the reason; malformed budgets
  get a 422 naming the field and the value;
- ``POST /v1/escalate``: a child decision that never repeats a tried profile, with its exact
  propensity, ``parent_id`` in the answer and in the log, 409 beyond ``max_escalations``, 404, 422,
  durable when acknowledged (SIGKILL), not acknowledged when the log refuses it (a full disk),
  any worker of ``serve --workers 2`` escalates any decision;
- ``POST /v1/outcome`` with ``error``: the outcomes' ``error`` column, ``failed_calls`` in the
  beliefs and ``banditroute_failed_calls_total``, the cooldown of ``[cooldown]``;
- the routes file's ``[cooldown]``, ``[cost_learning]``, ``[onboarding]``, ``max_escalations`` and
  ``error_quality`` as the service reads them.
"""

import concurrent.futures as cf
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

import banditroute as br  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402
from test_disk_full import fill, tmpfs  # noqa: E402,F401 - a real full disk (a tmpfs; root only, else skipped)

TOKEN = "mechanisms-test-token"
PROFILES = """
[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400
[[profiles]]
name = "medium"
cost_usd = 0.002
latency_ms = 900
[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
"""
ROUTES = """
[router]
task_types = ["chat", "code"]
max_escalations = 2
error_quality = 0.0
seed = 0
[cooldown]
errors = 3
seconds = 30
[cost_learning]
prior_weight = 2.0
[onboarding]
max_share = 0.1
min_outcomes = 5
""" + PROFILES
CHAT = {"task_type": "chat"}


# -- helpers --------------------------------------------------------------------------------------
def call(port, path, body=None, raw=None):
    """One request on a fresh connection: (status, JSON body or text, headers)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if data is None else "POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text, headers = r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as exc:
        status, text, headers = exc.code, exc.read().decode(), exc.headers
    return status, (json.loads(text) if headers.get("content-type", "").startswith("application/json") else text)


def error_of(answer, status, field, *needles):
    """The envelope of an error answer, checked: status, field, and the message's phrases."""
    got_status, body = answer
    assert got_status == status, body
    err = body["error"]
    assert (err["status"], err["field"]) == (status, field), err
    for needle in needles:
        assert needle in err["message"], err
    return err


def metric(text, name, **labels):
    """Sum of the Prometheus samples ``name`` whose labels include ``labels``."""
    out = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(p.split("=", 1) for p in series.partition("{")[2].rstrip("}").split('",') if p)
        if all(found.get(k, "").strip('"') == v for k, v in labels.items()):
            out += float(value)
    return out


def serve(workdir, *, routes=ROUTES, workers=1, log_dir=None):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "routes.toml").write_text(routes)
    port = free_port()
    return port, start_service(workdir, port, workers=workers, extra=["--token", TOKEN], log_dir=log_dir)


def decide(port, context=CHAT, **extra):
    status, body = call(port, "/v1/decide", {"context": context, **extra})
    assert status == 200, body
    return body


def assert_exact(decision):
    assert decision["propensity"] == decision["probabilities"][decision["profile"]] > 0
    assert sum(decision["probabilities"].values()) == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One server for the tests that change nothing another test reads."""
    workdir = tmp_path_factory.mktemp("shared")
    port, proc = serve(workdir)
    yield port
    stop_service(proc)


# -- budgets --------------------------------------------------------------------------------------
def test_a_budget_excludes_the_profiles_over_it_with_the_reason(service):
    free = decide(service)
    assert free["excluded"] == {} and free.get("parent_id") is None
    cheap = decide(service, budget={"max_cost_usd": 0.005})
    assert cheap["probabilities"]["large"] == 0.0 and cheap["profile"] != "large"
    assert cheap["excluded"] == {"large": "expected cost_usd 0.012 > request budget.max_cost_usd 0.005"}
    assert_exact(cheap)
    fast = decide(service, budget={"max_latency_ms": 1000, "max_cost_usd": None})
    assert set(fast["excluded"]) == {"large"} and "budget.max_latency_ms 1000" in fast["excluded"]["large"]
    assert decide(service, budget=None)["excluded"] == {}
    err = error_of(call(service, "/v1/decide", {"context": CHAT, "budget": {"max_latency_ms": 100}}), 422, "profiles",
                   "small: expected latency_ms 400 > request budget.max_latency_ms 100", "no fallback")
    assert err["code"] == "no_feasible_profile"


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/escalate"])
@pytest.mark.parametrize("budget, field, needle", [
    ("cheap", "budget", "budget must be a JSON object with max_cost_usd and/or max_latency_ms, got str"),
    ([0.01], "budget", "got list"),
    ({"max_cost": 1}, "budget.max_cost", "budget.max_cost is not a budget field (known: max_cost_usd, "
                                         "max_latency_ms), got 1"),
    ({"max_cost_usd": -1}, "budget.max_cost_usd", "budget.max_cost_usd must be >= 0, got -1"),
    ({"max_cost_usd": "NaN"}, "budget.max_cost_usd", "budget.max_cost_usd must be a number, got 'NaN'"),
    ({"max_latency_ms": True}, "budget.max_latency_ms", "budget.max_latency_ms must be a number, got True"),
    ("1e999", "budget.max_latency_ms", "budget.max_latency_ms must be finite, got inf"),  # JSON's overflow
])
def test_a_malformed_budget_gets_422_naming_field_and_value(service, path, budget, field, needle):
    head = '{"context": {"task_type": "chat"}' if path == "/v1/decide" else '{"decision_id": "nobody-1"'
    value = '{"max_latency_ms": 1e999}' if budget == "1e999" else json.dumps(budget)
    err = error_of(call(service, path, raw=f'{head}, "budget": {value}}}'.encode()), 422, field, needle)
    assert err["code"] == "invalid_request"


# -- failed calls ---------------------------------------------------------------------------------
@pytest.mark.parametrize("outcome, field, needle", [
    ({"error": "timeout", "quality": 0.0}, "quality", "quality must not be given with error='timeout'"),
    ({"error": "HTTP 503!"}, "error", "error must be a short identifier"),
    ({"error": 503}, "error", "got 503"),
    ({"error": ""}, "error", "got ''"),
    ({"error": "x" * 65}, "error", "at most 64 characters"),
    ({"eror": "timeout"}, "eror", "'eror' is not a known field"),
])
def test_a_malformed_error_outcome_gets_422_and_changes_nothing(service, outcome, field, needle):
    d = decide(service)
    error_of(call(service, "/v1/outcome", {"decision_id": d["id"], **outcome}), 422, field, needle)
    assert call(service, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0}) == (
        200, {"decision_id": d["id"], "status": "applied"})


# -- escalations ----------------------------------------------------------------------------------
def test_an_escalation_chain_through_http_is_exact_bounded_logged_and_counted(tmp_path):
    logs = tmp_path / "logs"
    port, proc = serve(tmp_path, log_dir=logs)
    try:
        root = decide(port, {"task_type": "code"})
        status, child = call(port, "/v1/escalate", {"decision_id": root["id"], "reason": "tests_failed"})
        assert status == 200, child
        assert child["parent_id"] == root["id"] and child["id"] != root["id"]
        assert child["profile"] != root["profile"] and child["probabilities"][root["profile"]] == 0.0
        assert child["excluded"] == {root["profile"]: "already tried in this escalation chain (tests_failed)"}
        assert child["task_probs"] == root["task_probs"]
        assert_exact(child)
        err = error_of(call(port, "/v1/escalate", {"decision_id": root["id"]}), 409, "decision_id",
                       f"was already escalated, to {child['id']}")
        assert err["code"] == "escalation_refused"
        status, grandchild = call(port, "/v1/escalate", {"decision_id": child["id"], "reason": None})  # the default
        assert status == 200 and grandchild["parent_id"] == child["id"]
        last = ({"small", "medium", "large"} - {root["profile"], child["profile"]}).pop()
        assert grandchild["profile"] == last and grandchild["propensity"] == 1.0
        assert "(verifier_failed)" in grandchild["excluded"][child["profile"]]
        error_of(call(port, "/v1/escalate", {"decision_id": grandchild["id"]}), 409, "decision_id",
                 f"is escalation 2 below {root['id']}: max_escalations is 2", grandchild["id"])

        other = decide(port, budget={"max_cost_usd": 0.005})  # refused escalations change nothing
        error_of(call(port, "/v1/escalate", {"decision_id": other["id"], "budget": {"max_latency_ms": 1}}),
                 422, "profiles", "no feasible profile")
        error_of(call(port, "/v1/escalate", {"decision_id": other["id"], "reason": "not ok"}), 422, "reason",
                 "reason must be a short identifier", "got 'not ok'")
        error_of(call(port, "/v1/escalate", {"decision_id": 7}), 422, "decision_id", "must be a string, got int")
        error_of(call(port, "/v1/escalate", {"decision_id": other["id"], "why": "x"}), 422, "why", "not a known field")
        error_of(call(port, "/v1/escalate", {"reason": "x"}), 422, "decision_id", "decision_id is required")
        error_of(call(port, "/v1/escalate", {"decision_id": "f00d-3"}), 404, "decision_id",
                 "was not issued by this router", "replica that issued the decision")
        status, cheap = call(port, "/v1/escalate", {"decision_id": other["id"], "budget": {"max_cost_usd": 0.005}})
        assert status == 200 and cheap["parent_id"] == other["id"] and cheap["profile"] != other["profile"]
        assert cheap["probabilities"]["large"] == 0.0 and "budget.max_cost_usd 0.005" in cheap["excluded"]["large"]
        assert_exact(cheap)
        # a child is a decision like any other: its outcome is recorded
        assert call(port, "/v1/outcome", {"decision_id": child["id"], "quality": 1.0})[1]["status"] == "applied"

        status, text = call(port, "/metrics")
        assert metric(text, "banditroute_escalations_total", reason="tests_failed", profile=child["profile"]) == 1
        assert metric(text, "banditroute_escalations_total", reason="verifier_failed") == 2
        assert metric(text, "banditroute_escalations_total") == 3
        assert metric(text, "banditroute_decisions_total") == 2  # /v1/decide's; children are escalations
        assert metric(text, "banditroute_escalation_rate") == 1.5
        assert metric(text, "banditroute_errors_total", status="409", code="escalation_refused") == 2
        spec = call(port, "/openapi.json")[1]
        escalate = spec["paths"]["/v1/escalate"]["post"]
        assert escalate["requestBody"]["content"]["application/json"]["schema"]["required"] == ["decision_id"]
        assert "parent_id" in escalate["responses"]["200"]["content"]["application/json"]["schema"]["required"]
        assert "budget" in spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"][
            "schema"]["properties"]
    finally:
        stop_service(proc)
    rows = br.scan_table(logs, "decisions").collect()
    assert rows.height == 5  # 2 decisions, 3 acknowledged escalations: nothing refused was logged
    links = dict(zip(rows.get_column("decision_id"), rows.get_column("parent_id")))
    assert links == {root["id"]: None, child["id"]: root["id"], grandchild["id"]: child["id"],
                     other["id"]: None, cheap["id"]: other["id"]}
    logged = rows.filter(pl.col("decision_id") == child["id"]).row(0, named=True)
    assert (logged["profile"], logged["propensity"]) == (child["profile"], child["propensity"])


def test_an_acknowledged_escalation_survives_sigkill(tmp_path):
    logs = tmp_path / "logs"
    port, proc = serve(tmp_path, log_dir=logs)
    try:
        root = decide(port)
        status, child = call(port, "/v1/escalate", {"decision_id": root["id"]})
        assert status == 200
        os.killpg(proc.pid, signal.SIGKILL)  # the answer came after the group commit: nothing is flushed later
        proc.wait()
        rows = br.scan_table(logs, "decisions").collect()
        assert dict(zip(rows.get_column("decision_id"), rows.get_column("parent_id"))) == {
            root["id"]: None, child["id"]: root["id"]}
        port, proc = serve(tmp_path, log_dir=logs)  # the restart takes the killed replica's decisions over
        assert call(port, "/v1/outcome", {"decision_id": child["id"], "quality": 0.0})[1]["status"] == "applied"
    finally:
        stop_service(proc)


def test_an_escalation_chain_holds_across_a_restart(tmp_path):
    """The chain's tried profiles and depth come from the log (``parent_id``) after a restart: the
    root is still escalated (409) and the child's escalation still excludes the root's profile."""
    logs = tmp_path / "logs"
    port, proc = serve(tmp_path, log_dir=logs)
    try:
        root = decide(port)
        status, child = call(port, "/v1/escalate", {"decision_id": root["id"]})
        assert status == 200
        stop_service(proc)
        port, proc = serve(tmp_path, log_dir=logs)
        again = call(port, "/v1/escalate", {"decision_id": root["id"]})
        status, grandchild = call(port, "/v1/escalate", {"decision_id": child["id"]})
    finally:
        stop_service(proc)
    assert status == 200 and grandchild["parent_id"] == child["id"]
    assert grandchild["probabilities"][root["profile"]] == 0.0
    error_of(again, 409, "decision_id", f"was already escalated, to {child['id']}")
    assert grandchild["profile"] not in (root["profile"], child["profile"])


def test_any_worker_escalates_any_decision(tmp_path):
    """Two workers on one port, every request on its own connection: an escalation that reaches
    the worker that did not issue the decision is forwarded to the issuer."""
    logs = tmp_path / "logs"
    port, proc = serve(tmp_path, workers=2, log_dir=logs)
    try:
        seen, deadline = set(), time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(call(port, "/healthz")[1]["replica"])
        with cf.ThreadPoolExecutor(8) as ex:
            roots = list(ex.map(lambda i: decide(port), range(60)))
            children = list(ex.map(lambda d: call(port, "/v1/escalate", {"decision_id": d["id"]}), roots))
            again = list(ex.map(lambda d: call(port, "/v1/escalate", {"decision_id": d["id"]}), roots))
        assert len({d["id"].rpartition("-")[0] for d in roots}) == 2  # both workers issued decisions
        assert [s for s, _ in children] == [200] * 60
        for root, (_, child) in zip(roots, children):
            assert child["parent_id"] == root["id"] and child["profile"] != root["profile"]
            assert child["id"].rpartition("-")[0] == root["id"].rpartition("-")[0]  # issued by the issuer
        assert {(s, body["error"]["code"]) for s, body in again} == {(409, "escalation_refused")}
        deadline = time.monotonic() + 10  # the workers' own counters are published every 0.5 s
        while time.monotonic() < deadline:
            text = call(port, "/metrics")[1]
            forwarded = metric(text, "banditroute_escalations_forwarded_total")
            if forwarded and forwarded == metric(text, "banditroute_escalations_received_forwarded_total"):
                break
            time.sleep(0.2)
        assert 0 < forwarded == metric(text, "banditroute_escalations_received_forwarded_total") <= 120
        assert metric(text, "banditroute_escalations_total") == 60  # counted once, by the issuer
    finally:
        stop_service(proc)
    rows = br.scan_table(logs, "decisions").filter(pl.col("parent_id").is_not_null()).collect()
    assert sorted(rows.get_column("parent_id")) == sorted(d["id"] for d in roots)
    assert (rows.get_column("parent_id").str.replace(r"-\d+$", "") == rows.get_column("writer")).all()


def test_an_escalation_the_log_refuses_is_not_acknowledged(tmpfs, tmp_path):  # noqa: F811 - the fixture
    """A full disk (a real tmpfs): the escalation gets 503, its child is neither acknowledged nor
    logged nor counted; retried once there is space, it is issued."""
    logs = tmpfs / "logs"
    port, proc = serve(tmp_path, log_dir=logs)
    refused, issued = None, []
    try:
        roots = [decide(port) for _ in range(10)]
        filler = fill(tmpfs)
        for root in roots:  # while full: refused (or, if a line still fits, acknowledged)
            status, body = call(port, "/v1/escalate", {"decision_id": root["id"]})
            if status == 200:
                issued.append(body)
                continue
            err = error_of((status, body), 503, "log_dir", "not acknowledged")
            assert err["code"] == "log_unavailable"
            refused = root
            break
        assert refused is not None, "the disk was not full enough to refuse an escalation"
        text = call(port, "/metrics")[1]
        assert metric(text, "banditroute_escalations_total") == len(issued)
        filler.unlink()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            retry = call(port, "/v1/escalate", {"decision_id": refused["id"]})
            if retry[0] != 503:
                break
            time.sleep(0.1)
    finally:
        stop_service(proc)
    children = br.scan_table(logs, "decisions").filter(pl.col("parent_id").is_not_null()).collect()
    logged = set(children.get_column("parent_id"))
    assert {c["parent_id"] for c in issued} <= logged
    assert retry[0] == 200 and retry[1]["parent_id"] == refused["id"], retry
    assert logged == {c["parent_id"] for c in issued} | {refused["id"]}


# -- failed calls, cooldown and the routes file's sections -----------------------------------------
def test_failed_calls_reach_the_log_the_beliefs_the_metrics_and_the_cooldown(tmp_path):
    logs = tmp_path / "logs"
    port, proc = serve(tmp_path, log_dir=logs)
    target, failed = None, []
    try:
        for _ in range(200):  # three failed calls in a row on one profile
            d = decide(port)
            target = target or d["profile"]
            if d["profile"] != target:
                continue
            assert target not in d["excluded"]  # fewer than three failures so far
            status, body = call(port, "/v1/outcome", {"decision_id": d["id"], "error": "rate_limited",
                                                      "latency_ms": 30000})
            assert (status, body["status"]) == (200, "applied")
            failed.append(d["id"])
            if len(failed) == 3:
                break
        assert len(failed) == 3
        cooled = decide(port)
        assert cooled["probabilities"][target] == 0.0 and cooled["profile"] != target
        assert cooled["excluded"][target].startswith(
            "cooldown: 3 failed calls in a row (last: rate_limited); excluded for cooldown.seconds 30, until ")
        assert_exact(cooled)
        # a duplicate is neither logged nor counted
        assert call(port, "/v1/outcome", {"decision_id": failed[0], "error": "timeout"})[1]["status"] == "duplicate"
        assert call(port, "/v1/outcome", {"decision_id": cooled["id"], "quality": 1.0, "cost_usd": 0.5})[1][
            "status"] == "applied"
        text = call(port, "/metrics")[1]
        assert metric(text, "banditroute_failed_calls_total", profile=target, error="rate_limited") == 3
        assert metric(text, "banditroute_failed_calls_total") == 3
        beliefs = {(r["profile"], r["task_type"]): r for r in call(port, "/v1/beliefs")[1]["beliefs"]}
        mine = beliefs[(target, "chat")]
        assert mine["failed_calls"] == 3 and mine["availability"] == pytest.approx(1 / 5)
        assert mine["n"] == 3 and mine["beta"] == 4.0  # error_quality = 0: each failure teaches quality 0
        assert mine["latency_n"] == 3 and mine["latency_mean"] > 900  # the reported latencies are learned
        paid = beliefs[(cooled["profile"], "chat")]
        assert paid["cost_n"] == 1 and paid["cost_mean"] > 0.012  # [cost_learning] prior_weight 2
    finally:
        stop_service(proc)
    outcomes = br.scan_table(logs, "outcomes").collect()
    errors = outcomes.filter(pl.col("error").is_not_null())
    assert sorted(errors.get_column("decision_id")) == sorted(failed)
    assert set(errors.get_column("error")) == {"rate_limited"} and errors.get_column("quality").null_count() == 3

    # [onboarding]: a profile the log never saw starts capped
    port, proc = serve(tmp_path, routes=ROUTES + '[[profiles]]\nname = "xl"\ncost_usd = 0.001\n', log_dir=logs)
    try:
        onboarding = {r["profile"] for r in call(port, "/v1/beliefs")[1]["beliefs"] if r["onboarding"]}
        assert onboarding == {"xl"}
        d = decide(port)
        assert 0 < d["probabilities"]["xl"] <= 0.1 + 1e-12
    finally:
        stop_service(proc)

