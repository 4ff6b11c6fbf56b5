"""docs/llm_client.py (the "use it with a real LLM client" example) against a local OpenAI-compatible
stub server: a real HTTP server on 127.0.0.1 in a thread, the example's own urllib client, no mocks.

The stub's models: "tiny-model" answers arithmetic right with probability 0.3 and writes parseable
code with 0.9; "big-model" 0.95 on both (and costs 100x more per token); "flaky-model" 0.5 on
both and answers HTTP 429 on every third call; for the failure test, "down-model" answers HTTP 500,
"slow-model" too late and "sure-model" always right. Every call must carry "Authorization: Bearer
test-key" (401 otherwise), and the model must exist (404 otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

import banditroute as br

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "llm_client.py"
KEY = "test-key"
TOKENS = {"prompt_tokens": 200, "completion_tokens": 100, "total_tokens": 300}
# model -> (P(right) on math, P(right) on code, a 429 on every k-th call or 0); "down-model" answers
# HTTP 500, "slow-model" answers after SLOW_S (past the client's timeout in the failure test)
BEHAVIOUR = {"tiny-model": (0.3, 0.9, 0), "big-model": (0.95, 0.95, 0), "flaky-model": (0.5, 0.5, 3),
             "sure-model": (1.0, 1.0, 0), "slow-model": (1.0, 1.0, 0), "down-model": (1.0, 1.0, 0)}
SLOW_S = 1.5
# profile -> --model spec: $/1k tokens and prior latency; a request is 300 tokens, so (cost weight 10)
# reward small: math 0.3, code 0.9; large: 0.95 - 0.3 = 0.65 on both; flaky: 0.5 - 0.03 = 0.47
MODELS = {"small": "tiny-model:0.001:300", "large": "big-model:0.1:900", "flaky": "flaky-model:0.01:500"}


def load_example():
    spec = importlib.util.spec_from_file_location("llm_client_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


llm = load_example()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and left: expected
        pass


class Stub:
    """An OpenAI-compatible /v1/chat/completions with per-model behaviour; counts what it saw."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls, self.served = Counter(), Counter()  # per model: calls, and answers by kind
        self.auth = Counter()  # Authorization headers seen
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = stub.answer(self.path, self.headers.get("Authorization"), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def answer(self, path: str, auth: str | None, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.auth[auth] += 1
            if path != "/v1/chat/completions":
                return 404, {"error": {"message": f"no route {path}"}}
            if auth != f"Bearer {KEY}":
                return 401, {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}
            model = body["model"]
            if model not in BEHAVIOUR:
                return 404, {"error": {"message": f"The model `{model}` does not exist"}}
            self.calls[model] += 1
            if model == "down-model":
                return 500, {"error": {"message": "The server had an error while processing your request."}}
            p_math, p_code, every = BEHAVIOUR[model]
            if every and self.calls[model] % every == 0:
                self.served[model, "429"] += 1
                return 429, {"error": {"message": "Rate limit reached", "type": "requests"}}
            prompt = body["messages"][-1]["content"]
            sum_ = re.search(r"(\d+) \+ (\d+)", prompt)
            right = self.rng.random() < (p_math if sum_ else p_code)
            self.served[model, "right" if right else "wrong"] += 1
        if model == "slow-model":
            time.sleep(SLOW_S)
        if sum_:
            a, b = int(sum_[1]), int(sum_[2])
            text = f"{a} + {b} = {a + b + (0 if right else 1)}"
        else:
            code = "def inc(x):\n    return x + 1" if right else "def inc(x)\n    return x +"
            text = f"Here it is:\n```python\n{code}\n```"
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "usage": TOKENS,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]}


@pytest.fixture
def stub():
    s = Stub()
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def make_requests(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            a, b = rng.randrange(100), rng.randrange(100)
            out.append({"prompt": f"What is {a} + {b}? End with the number.", "task_type": "math", "expected": a + b})
        else:
            out.append({"prompt": "Write a python function inc(x) returning x + 1.", "task_type": "code"})
    return out


def client_for(stub: Stub, key: str = KEY):
    models = dict(llm.parse_model(f"{name}={spec}") for name, spec in MODELS.items())
    return llm.Client(stub.base_url, key, models, timeout_s=10.0)


N_REQUESTS = 600
THIRD = N_REQUESTS // 3
BEST = {"math": "large", "code": "small"}  # highest reward per task type (see MODELS)


def test_route_one_learns_and_logs_every_call(stub, tmp_path):
    client = client_for(stub)
    requests = make_requests(N_REQUESTS, seed=0)
    router = llm.make_router(client.models, ["code", "math"], tmp_path, seed=0)
    with router:
        routed = [llm.route_one(router, client, request) for request in requests]
        beliefs = {(b["profile"], b["task_type"]): b for b in router.beliefs().iter_rows(named=True)}

    # Learning: the share of first choices that go to the best profile for their task type rises from
    # the first third to the last by more than 2 standard errors of the difference (binomial, from the
    # counts: a router that did not learn would pass with probability ~2%), and ends well above the
    # 1/3 of chance. Swept over stub/router/request seeds 0-19: a rise of 2.7-11.9 standard errors
    # (median 6.4), the last third's share 0.905-0.99. This seed: 0.86 -> 0.98, 4.5 standard errors.
    best = [r.steps[0][0].profile == BEST[q["task_type"]] for q, r in zip(requests, routed)]
    first, last = sum(best[:THIRD]) / THIRD, sum(best[-THIRD:]) / THIRD
    se = ((first * (1 - first) + last * (1 - last)) / THIRD) ** 0.5
    assert last - first > 2 * se, (first, last, se)
    assert last >= 0.8, (first, last)
    large, small = beliefs["large", "math"], beliefs["small", "math"]
    assert large["ci_low"] > small["ci_high"] and 0.85 < large["mean"] <= 1.0, (large, small)
    assert 0.75 < beliefs["small", "code"]["mean"] < 1.0 and beliefs["flaky", "math"]["failed_calls"] > 0
    assert sum(r.verified for r in routed) / N_REQUESTS > 0.9

    decisions = br.scan_table(tmp_path, "decisions").collect()
    outcomes = br.scan_table(tmp_path, "outcomes").collect()
    steps = [step for r in routed for step in r.steps]
    # Every decision made exactly one call and has exactly one outcome; the server saw each
    # profile's model name exactly as often as the router chose that profile, always with the key.
    assert decisions.height == len(steps) == sum(stub.calls.values())
    assert sorted(decisions["decision_id"]) == sorted(d.id for d, _ in steps)
    assert outcomes["decision_id"].value_counts()["count"].max() == 1
    assert set(outcomes["decision_id"]) == set(decisions["decision_id"])
    chosen = Counter(decisions["profile"])
    assert dict(stub.calls) == {client.models[p].name: n for p, n in chosen.items()}
    assert set(stub.calls) == {"tiny-model", "big-model", "flaky-model"}
    assert dict(stub.auth) == {f"Bearer {KEY}": len(steps)}

    # Escalation children: a logged parent, never a profile the chain tried (probability 0), at most 2
    # below the root, the reason in the logged exclusion; a decision is escalated at most once.
    def depth(row: dict) -> int:
        return 0 if row["parent_id"] is None else 1 + depth(rows[row["parent_id"]])

    rows = {d["decision_id"]: d for d in decisions.iter_rows(named=True)}
    outcome_of = {o["decision_id"]: o for o in outcomes.iter_rows(named=True)}
    children = [d for d in rows.values() if d["parent_id"] is not None]
    assert len(children) == sum(len(r.steps) - 1 for r in routed) > 50
    assert len({d["parent_id"] for d in children}) == len(children)
    for child in children:
        chain, up = [], child
        while up["parent_id"] is not None:
            up = rows[up["parent_id"]]
            chain.append(up["profile"])
        assert child["profile"] not in chain and len(chain) <= 2
        reason = "provider_error" if outcome_of[child["parent_id"]]["error"] else "verifier_failed"
        assert json.loads(child["excluded"])[rows[child["parent_id"]]["profile"]] == (
            f"already tried in this escalation chain ({reason})")
        probabilities = dict(zip(child["profiles"], child["probabilities"]))
        assert child["propensity"] == probabilities[child["profile"]] > 0
        assert all(probabilities[tried] == 0 for tried in chain)

    # Failed calls: every 429 the server sent is an outcome with error "rate_limited", no quality, on
    # the flaky profile, and was escalated (reason provider_error) unless the chain was used up.
    errors = outcomes.filter(pl.col("error").is_not_null())
    assert errors.height == stub.served["flaky-model", "429"] > 10
    assert set(errors["error"]) == {"rate_limited"} and errors["quality"].null_count() == errors.height
    assert {rows[i]["profile"] for i in errors["decision_id"]} == {"flaky"}
    escalated = {d["parent_id"] for d in children}
    assert all(i in escalated or depth(rows[i]) == 2 for i in errors["decision_id"])
    answered = outcomes.filter(pl.col("error").is_null())
    assert set(answered["quality"]) == {0.0, 1.0}
    prices = {name: model.usd_per_1k for name, model in client.models.items()}
    for o in answered.iter_rows(named=True):  # cost from the response's usage: 300 tokens at the price
        assert o["cost_usd"] == pytest.approx(0.3 * prices[rows[o["decision_id"]]["profile"]])
        assert o["latency_ms"] > 0


def run_script(stub: Stub, tmp_path: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in make_requests(10, seed=1)))
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("OPENAI_API_KEY", None)
    models = [f"--model={name}={spec}" for name, spec in MODELS.items()]
    return subprocess.run([sys.executable, str(SCRIPT), "--base-url", stub.base_url, "--api-key", key, *models,
                           "--prompts", str(prompts), "--log-dir", str(tmp_path / "logs"), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


LINE = re.compile(r"request +(\d+) \[(math|code)\] (.+) \| escalations=(\d) \| (verified|rejected|no answer)")
STEP = re.compile(r"(small|large|flaky) p=(\d\.\d{3}) (verified|rejected|rate_limited)")


def test_script_runs_and_ope_reads_its_log(stub, tmp_path):
    done = run_script(stub, tmp_path, "--requests", "60", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = [LINE.fullmatch(line) for line in done.stdout.splitlines() if line.startswith("request ")]
    assert len(lines) == 60 and all(lines) and [int(m[1]) for m in lines] == list(range(1, 61))
    steps = [STEP.fullmatch(step) for m in lines for step in m[3].split(" -> ")]
    assert all(steps) and all(int(m[4]) == len(m[3].split(" -> ")) - 1 for m in lines)
    assert "\nbeliefs: " in done.stdout and "banditroute promote --logs" in done.stdout

    # The printed profiles and propensities are the logged ones, in order.
    log = tmp_path / "logs"
    decisions = br.scan_table(log, "decisions").sort("seq").collect()
    logged = decisions.select("profile", "propensity").rows()
    assert [(s[1], s[2]) for s in steps] == [(profile, f"{p:.3f}") for profile, p in logged]
    assert sum(stub.calls.values()) == decisions.height

    # python -m ope reads the log: IPS of the logged policy is the first choices' mean reward (every
    # importance weight is 1), on as many rounds as there were requests.
    evaluated = subprocess.run([sys.executable, "-m", "ope", str(log), "--policy", "logged=logging",
                                "--policy", "large=always:large", "--estimators", "ips", "--json", "-"],
                               capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert evaluated.returncode == 0, evaluated.stderr
    table = {row["policy"]: row for row in json.loads(evaluated.stdout)}
    roots = decisions.filter(pl.col("parent_id").is_null())["decision_id"]
    rewards = br.scan_table(log, "outcomes").filter(pl.col("decision_id").is_in(roots.implode())).collect()
    assert table["logged"]["n"] == table["large"]["n"] == 60 == rewards.height
    assert table["logged"]["value"] == pytest.approx(rewards["reward"].mean(), abs=1e-12)
    assert table["logged"]["mean_weight"] == pytest.approx(1.0)
    assert f"{decisions.height - 60} escalated decision(s)" in evaluated.stderr


def test_wrong_api_key_is_a_clear_error(stub, tmp_path):
    done = run_script(stub, tmp_path, key="sk-wrong")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "HTTP 401" in done.stderr and "Incorrect API key" in done.stderr and "--api-key" in done.stderr
    assert "request " not in done.stdout and stub.auth == {"Bearer sk-wrong": 1}


def test_unreachable_server_is_a_clear_error(tmp_path):
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    done = subprocess.run([sys.executable, str(SCRIPT), "--base-url", f"http://127.0.0.1:{port}/v1",
                           "--model", "small=a", "--model", "large=b", "--log-dir", str(tmp_path / "logs")],
                          input='{"prompt": "hi"}\n', capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot reach http://127.0.0.1:{port}/v1" in done.stderr


def test_parse_model_and_verify():
    assert llm.parse_model("small=gpt-4o-mini:0.0004:800") == ("small", llm.Model("gpt-4o-mini", 0.0004, 800.0))
    assert llm.parse_model("local=llama3.1:8b") == ("local", llm.Model("llama3.1:8b"))
    assert llm.parse_model("local=llama3.1:8b:0:1500") == ("local", llm.Model("llama3.1:8b", 0.0, 1500.0))
    assert llm.parse_model("q=Qwen/Qwen2.5-1.5B-Instruct:.2") == ("q", llm.Model("Qwen/Qwen2.5-1.5B-Instruct", 0.2))
    math = {"task_type": "math", "expected": 42}
    assert llm.verify(math, "17 + 25 = 42") and not llm.verify(math, "42? No: 43") and not llm.verify(math, "")
    assert llm.verify({"expected": "Paris"}, "It is paris.") and not llm.verify({"expected": "Paris"}, "Lyon")
    code = {"task_type": "code"}
    assert llm.verify(code, "Here:\n```python\ndef f(x):\n    return x\n```\nDone.")
    assert not llm.verify(code, "```python\ndef f(x)\n    return x\n```") and not llm.verify(code, "   ")
    assert llm.verify({"task_type": "chat"}, "hello") and not llm.verify({"task_type": "chat"}, " ")


def test_the_walkthrough_shows_the_scripts_loop():
    """docs/llm-client.md shows route_one as the script defines it: a drift in either fails here."""
    import inspect

    text = (ROOT / "docs" / "llm-client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    shown = [b for b in blocks if b.startswith("def route_one(")]
    assert len(shown) == 1, "llm-client.md must show route_one once, in a ```python block"
    assert shown[0].strip() == inspect.getsource(llm.route_one).strip()
    for name in ("call_model", "verify", "make_router", "main"):  # the other pieces it names exist
        assert f"`{name}" in text and callable(getattr(llm, name))


def test_failed_calls_are_recorded_then_escalated_and_cool_down(stub, tmp_path):
    """HTTP 500 -> error "server_error", a timeout -> "timeout" (with its latency), each escalated
    with reason provider_error; three failures in a row put the profile in cooldown."""
    models = {"down": llm.Model("down-model", 0.01), "slow": llm.Model("slow-model", 0.01),
              "sure": llm.Model("sure-model", 0.01)}
    client = llm.Client(stub.base_url, KEY, models, timeout_s=0.5)
    requests = make_requests(12, seed=2)
    with llm.make_router(models, ["code", "math"], tmp_path, seed=0) as router:
        routed = [llm.route_one(router, client, request) for request in requests]
    assert all(r.verified and r.steps[-1][0].profile == "sure" for r in routed)
    outcomes = {k: [s for r in routed for d, s in r.steps if d.profile == k] for k in models}
    assert set(outcomes["down"]) == {"server_error"} and set(outcomes["slow"]) == {"timeout"}
    assert len(outcomes["down"]) == len(outcomes["slow"]) == 3  # then in cooldown for 30 s
    assert stub.calls["down-model"] == stub.calls["slow-model"] == 3

    decisions = br.scan_table(tmp_path, "decisions").collect()
    logged = br.scan_table(tmp_path, "outcomes").collect().join(decisions, on="decision_id")
    errors = logged.filter(pl.col("error").is_not_null())
    assert errors.height == 6 and set(zip(errors["profile"], errors["error"])) == {
        ("down", "server_error"), ("slow", "timeout")}
    assert errors["quality"].null_count() == 6 and set(errors["reward"]) == {0.0}
    timeouts = errors.filter(pl.col("error") == "timeout")
    assert timeouts["latency_ms"].null_count() == 0 and timeouts["cost_usd"].to_list() == [0.0] * 3
    children = decisions.filter(pl.col("parent_id").is_not_null())
    assert all("(provider_error)" in e for e in children["excluded"])
    cooled = [json.loads(e) for e in decisions.filter(pl.col("parent_id").is_null())["excluded"][-3:]]
    assert all(e["down"].startswith("cooldown: 3 failed calls in a row (last: server_error)") for e in cooled)
    assert all(e["slow"].startswith("cooldown: 3 failed calls in a row (last: timeout)") for e in cooled)


def test_resume_continues_from_the_log(stub, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in make_requests(20, seed=4)))
    args = ["--base-url", stub.base_url, "--api-key", KEY, "--prompts", str(prompts), "--log-dir",
            str(tmp_path / "logs"), *(f"--model={name}={spec}" for name, spec in MODELS.items())]
    assert llm.main([*args, "--seed", "1"]) == 0
    outcomes = br.scan_table(tmp_path / "logs", "outcomes").collect()
    judged = outcomes["quality"].is_not_null().sum()  # what the beliefs learn (not the failed calls)
    assert 0 < judged < outcomes.height
    assert "resumed" not in capsys.readouterr().out
    assert llm.main([*args, "--seed", "2", "--resume"]) == 0
    assert f"'outcomes_applied': {judged}," in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # the log's profiles need their models
        llm.main([*args[:-3], "--model=small=tiny-model", "--resume"])
    assert stop.value.code == 2 and "give a --model for each profile of the log" in capsys.readouterr().err
