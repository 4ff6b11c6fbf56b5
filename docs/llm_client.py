"""Route real LLM calls with banditroute: any OpenAI-compatible server, a verifier, escalation.

For each request, ``router.decide(ctx)`` picks a profile; the model that profile maps to is called
(``POST {base_url}/chat/completions``); ``verify`` judges the answer and ``router.record`` logs the
verdict with the measured cost (the response's ``usage`` tokens times the price) and latency. A
rejected answer is escalated (``router.escalate(id, reason="verifier_failed")``) to a profile the
request has not tried; a failed call (HTTP 429, 5xx, timeout, no connection) is recorded as an
error (``router.record(id, error="rate_limited")``) and escalated with ``reason="provider_error"``.
Every decision (with its exact propensity) and every outcome go to ``--log-dir``, ready for
``python -m ope LOG_DIR`` and ``banditroute promote --logs LOG_DIR``. Walk-through: llm-client.md.

Prompts: ``--prompts FILE`` or stdin, one per line: JSON ``{"prompt": ..., "task_type": "math",
"expected": "42"}`` (``task_type`` and ``expected`` optional) or plain text. ``--requests N``
cycles through them. ``--model NAME=MODEL[:usd_per_1k[:latency_ms]]`` (repeat) maps a profile to a
model, with a blended price per 1,000 tokens and a prior latency (Ollama tags such as
``llama3.1:8b`` are kept whole). The router's prior cost of a request assumes 1,000 tokens; it
learns the real cost from ``record()``.

  OpenAI:  export OPENAI_API_KEY=sk-...
           python docs/llm_client.py --prompts prompts.jsonl \\
               --model small=gpt-4o-mini:0.0004:800 --model large=gpt-4o:0.006:2000
  vLLM:    python docs/llm_client.py --base-url http://localhost:8000/v1 --model small=Qwen/Qwen2.5-1.5B-Instruct ...
  Ollama:  python docs/llm_client.py --base-url http://localhost:11434/v1 \\
               --model small=llama3.2:1b:0 --model large=llama3.1:8b:0 --prompts prompts.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import banditroute as br


@dataclass(frozen=True)
class Model:
    name: str                   # the server's model name: "gpt-4o-mini", "llama3.1:8b"
    usd_per_1k: float = 0.0     # blended price per 1,000 tokens (prompt + completion)
    latency_ms: float = 1000.0  # prior latency of one call (the router learns the real one)


@dataclass
class Client:
    base_url: str               # "https://api.openai.com/v1", "http://localhost:11434/v1"
    api_key: str | None         # sent as "Authorization: Bearer <key>" (local servers need none)
    models: dict[str, Model]    # banditroute profile -> model
    timeout_s: float = 60.0


@dataclass
class Reply:
    text: str
    cost_usd: float | None      # None when the server reports no usage
    latency_ms: float


class ProviderError(Exception):
    """A failed call another profile may not suffer: kind is rate_limited, server_error, timeout,
    connection_error or bad_response (the ``error`` recorded for the decision)."""

    def __init__(self, kind: str, detail: str, latency_ms: float | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.latency_ms = kind, latency_ms  # latency only for a timeout: a 429's is not the model's


class RequestRejected(Exception):
    """The server refused the request for a reason no other profile fixes (bad key, unknown model)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


def call_model(client: Client, profile: str, prompt: str) -> Reply:
    model = client.models[profile]
    body = json.dumps({"model": model.name, "messages": [{"role": "user", "content": prompt}]}).encode()
    headers = {"Content-Type": "application/json"}
    if client.api_key:
        headers["Authorization"] = f"Bearer {client.api_key}"
    url = client.base_url.rstrip("/") + "/chat/completions"
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=client.timeout_s) as resp:
            data = json.loads(resp.read())
        text = data["choices"][0]["message"]["content"] or ""
    except urllib.error.HTTPError as e:
        detail = f"HTTP {e.code} from {url} for model {model.name!r}: {e.read()[:300].decode(errors='replace')}"
        if e.code == 429:
            raise ProviderError("rate_limited", detail) from None
        if e.code >= 500:
            raise ProviderError("server_error", detail) from None
        raise RequestRejected(e.code, detail) from None
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise ProviderError("timeout", f"{url}: no answer in {client.timeout_s:g} s",
                                latency_ms=(time.perf_counter() - start) * 1000) from None
        raise ProviderError("connection_error", f"{url}: {reason}") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ProviderError("bad_response", f"{url}: not a chat completion ({e!r})") from None
    latency_ms = (time.perf_counter() - start) * 1000
    usage = data.get("usage") or {}
    tokens = usage.get("total_tokens") or usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    return Reply(text, tokens / 1000 * model.usd_per_1k if usage else None, latency_ms)


def verify(request: dict, answer: str) -> bool:
    """The example's verifier (replace it with your own: tests, a schema, a judge model)."""
    expected = request.get("expected")
    if expected is not None:  # a known answer: the last number of the reply, or the text anywhere in it
        numbers = re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", ""))
        if re.fullmatch(r"-?\d+(?:\.\d+)?", str(expected).strip()):
            return bool(numbers) and float(numbers[-1]) == float(expected)
        return str(expected).strip().lower() in answer.lower()
    if request.get("task_type") == "code":  # code: the fenced python block (or the reply) must parse
        block = re.search(r"```(?:python|py)?[ \t]*\n(.*?)```", answer, re.DOTALL)
        try:
            ast.parse(block.group(1) if block else answer)
        except SyntaxError:
            return False
    return bool(answer.strip())


@dataclass
class Routed:
    answer: str | None          # the last answer received (None: every call failed)
    verified: bool
    steps: list                 # (Decision, "verified" | "rejected" | error kind), in order


def route_one(router: br.Router, client: Client, request: dict) -> Routed:
    context = {"task_type": request["task_type"], "prompt_chars": len(request["prompt"])}
    d = router.decide(context)
    answer, steps = None, []
    while True:
        try:
            reply = call_model(client, d.profile, request["prompt"])
        except ProviderError as e:  # the profile failed to answer: record that, try another
            router.record(d.id, error=e.kind, cost_usd=0.0, latency_ms=e.latency_ms)  # not billed
            steps.append((d, e.kind))
            reason = "provider_error"
        else:
            answer, ok = reply.text, verify(request, reply.text)
            router.record(d.id, quality=1.0 if ok else 0.0, cost_usd=reply.cost_usd, latency_ms=reply.latency_ms)
            steps.append((d, "verified" if ok else "rejected"))
            if ok:
                return Routed(answer, True, steps)
            reason = "verifier_failed"
        try:
            d = router.escalate(d.id, reason=reason)  # never a profile this request already tried
        except (br.EscalationError, br.NoFeasibleProfileError):  # max_escalations reached, or none left
            return Routed(answer, False, steps)


def make_router(models: dict[str, Model], task_types: list[str], log_dir: str, *, seed: int | None = None,
                cost_weight: float = 10.0) -> br.Router:
    profiles = [br.Profile(name, cost_usd=m.usd_per_1k, latency_ms=m.latency_ms) for name, m in models.items()]
    return br.Router(profiles, task_types=task_types, log_dir=log_dir, seed=seed, max_escalations=2,
                     objective=br.Objective(quality=1.0, cost=cost_weight),  # reward = quality - w * cost_usd
                     cooldown=br.Cooldown(errors=3, seconds=30), fallback=profiles[0].name)


def parse_model(spec: str) -> tuple[str, Model]:
    """``small=gpt-4o-mini:0.0004:800`` -> ("small", Model("gpt-4o-mini", 0.0004, 800.0))."""
    name, _, rest = spec.partition("=")
    parts, numbers = rest.split(":"), []
    while len(parts) > 1 and len(numbers) < 2 and re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", parts[-1]):
        numbers.insert(0, float(parts.pop()))
    if not name or not parts[0]:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=MODEL[:usd_per_1k[:latency_ms]]")
    return name, Model(":".join(parts), *numbers)


def read_prompts(lines) -> list[dict]:
    requests = []
    for n, line in enumerate((raw.strip() for raw in lines), 1):
        request = json.loads(line) if line.startswith("{") else {"prompt": line} if line else None
        if request is not None and not isinstance(request.get("prompt"), str):
            raise ValueError(f"line {n}: no \"prompt\" string")
        requests += [{"task_type": "chat", **request}] if request else []
    return requests


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="https://api.openai.com/v1", help="the API root (default: OpenAI)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    p.add_argument("--model", type=parse_model, action="append", required=True,
                   metavar="NAME=MODEL[:usd_per_1k[:latency_ms]]", help="a profile and its model (repeat)")
    p.add_argument("--log-dir", default="llm-logs", help="where the decision log goes (default: llm-logs)")
    p.add_argument("--prompts", help="JSONL or text file (default: stdin)")
    p.add_argument("--requests", type=int, help="requests to route, cycling through the prompts (default: each once)")
    p.add_argument("--seed", type=int, help="the router's seed (reproducible draws)")
    p.add_argument("--cost-weight", type=float, default=10.0, help="reward = quality - W * cost_usd")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    p.add_argument("--resume", action="store_true", help="start from what the routers logging to --log-dir learned")
    args = p.parse_args(argv)
    if args.prompts is None and sys.stdin.isatty():
        p.error("give --prompts FILE or pipe prompts on stdin")
    try:
        with open(args.prompts) if args.prompts else sys.stdin as f:
            requests = read_prompts(f)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        p.error(f"prompts: {e}")
    if not requests:
        p.error("no prompts")
    models = dict(args.model)
    client = Client(args.base_url, args.api_key, models, args.timeout)
    answered = 0
    print("each line: the profile tried, its propensity p, the outcome; '->' is an escalation")
    with make_router(models, sorted({r["task_type"] for r in requests}), args.log_dir, seed=args.seed,
                     cost_weight=args.cost_weight) as router:
        if args.resume:  # a restart: the beliefs from the log (its task types and profiles must be this run's)
            try:
                print(f"resumed from {args.log_dir}: {router.resume()}")
            except br.BanditrouteError as e:
                p.error(f"--resume: {e}")
            if set(router.profiles) - set(models):  # the log's profiles join the router
                p.error(f"--resume: give a --model for each profile of the log: {router.profiles}")
        for i in range(args.requests or len(requests)):
            request = requests[i % len(requests)]
            try:
                routed = route_one(router, client, request)
            except RequestRejected as e:  # not the model's fault: nothing to learn, stop
                hint = "--api-key (or OPENAI_API_KEY)" if e.status in (401, 403) else "--base-url and --model"
                print(f"error: {e}\ncheck {hint}", file=sys.stderr)
                return 2
            answered += any(outcome in ("verified", "rejected") for _, outcome in routed.steps)
            if not answered and all(outcome == "connection_error" for _, outcome in routed.steps):
                print(f"error: cannot reach {args.base_url} (check --base-url)", file=sys.stderr)
                return 2
            chain = " -> ".join(f"{d.profile} p={d.propensity:.3f} {outcome}" for d, outcome in routed.steps)
            verdict = "verified" if routed.verified else "rejected" if routed.answer is not None else "no answer"
            print(f"request {i + 1:>4} [{request['task_type']}] {chain} | escalations={len(routed.steps) - 1}"
                  f" | {verdict}")
        print("\nbeliefs: quality mean [95% interval], outcomes n, learned cost per request, failed calls")
        beliefs = list(router.beliefs().iter_rows(named=True))
        for b in beliefs:
            print(f"  {b['profile']:<10} {b['task_type']:<8} {b['mean']:.2f} [{b['ci_low']:.2f}, {b['ci_high']:.2f}]"
                  f" n={b['n']:<4.0f} ${b['cost_mean']:.5f} failed={b['failed_calls']:.0f}")
    best = sorted(beliefs, key=lambda b: b["mean"] - args.cost_weight * b["cost_mean"])  # the best last
    table = ",".join(f"{task}={profile}" for task, profile in {b["task_type"]: b["profile"] for b in best}.items())
    print(f"\nlog: {args.log_dir} (every decision with its propensity, every outcome). Evaluate it offline:\n"
          f"  python -m ope {args.log_dir} --policy logged=logging"
          f" {' '.join(f'--policy {n}=always:{n}' for n in models)}\n"
          f"  banditroute promote --logs {args.log_dir} --candidate table:{table}  # best profile per task so far")
    return 0


if __name__ == "__main__":
    sys.exit(main())
