"""Input hygiene (banditroute.config.hygiene): every string is valid Unicode the log can write;
nesting depth, string length, integer size and the number of keys are bounded; each violation is
a clear error naming the field, through the library (decide, decide_batch with dicts and with a
DataFrame, record, config) and through the service (a 422); and nothing decide/record accepted
can make a later flush, scan or compaction fail (the property test at the end)."""

import datetime
import json
import math
import re
import tempfile

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import banditroute as br
from banditroute.cli.main import main as cli
from banditroute.config.hygiene import INT_MAX, INT_MIN, MAX_CONTEXT_CHARS, MAX_DEPTH, MAX_KEYS, MAX_STRING_CHARS

PROFILES = [br.Profile("small", cost_usd=0.0004, latency_ms=400), br.Profile("large", cost_usd=0.012, latency_ms=2500)]


def nest(levels: int, leaf=0):
    """``leaf`` inside ``levels`` nested lists."""
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def logged_ids(log_dir, table="decisions") -> list:
    return sorted(br.scan_table(log_dir, table).collect().get_column("decision_id").to_list())


# -- contexts through decide, probabilities and decide_batch ---------------------------------------
DEEP_FIELD = "context.x" + "[0]" * MAX_DEPTH
DEEP = (rf"^{re.escape(DEEP_FIELD)} is nested too deeply: containers nest at most 32 levels below the context, "
        r"got a list of 1 item at level 33$")
INT64 = r"must be an integer in \[-2\*\*63, 2\*\*63 - 1\] \(int64\)"
BAD_CONTEXTS = [
    pytest.param({"x": "\ud800"}, "context.x",
                 r"^context\.x must be valid Unicode text \(a lone surrogate '\\ud800' at index 0\), got '\\ud800'$",
                 id="surrogate-value"),
    pytest.param({"ok": "fine", "y": "ab\udfff"}, "context.y", r"^context\.y must be valid Unicode text \(a lone "
                 r"surrogate '\\udfff' at index 2\), got 'ab\\udfff'$", id="low-surrogate"),
    pytest.param({"\udc80": 1}, "context",
                 r"^context keys must be valid Unicode text \(a lone surrogate '\\udc80' at index 0\), got '\\udc80'$",
                 id="surrogate-key"),
    pytest.param({"a": {"b": ["ok", "x\ud800"]}}, "context.a.b[1]",
                 r"^context\.a\.b\[1\] must be valid Unicode text \(a lone surrogate '\\ud800' at index 1\)",
                 id="surrogate-nested-value"),
    pytest.param({"a": [{"k\ud800": 1}]}, "context.a[0]", r"^context\.a\[0\] keys must be valid Unicode text",
                 id="surrogate-nested-key"),
    pytest.param({"x": nest(MAX_DEPTH + 1)}, DEEP_FIELD, DEEP, id="depth-33"),
    pytest.param({"x": nest(5000)}, DEEP_FIELD, DEEP, id="depth-5000"),
    pytest.param({"x": "a" * (MAX_STRING_CHARS + 1)}, "context.x",
                 r"^context\.x must be at most 65,536 characters, got a string of 65,537 characters$", id="long-value"),
    pytest.param({"k" * (MAX_STRING_CHARS + 1): 1}, "context",
                 r"^context keys must be at most 65,536 characters, got a string of 65,537 characters$", id="long-key"),
    pytest.param({"n": INT_MAX + 1}, "context.n", rf"^context\.n {INT64}, got 9223372036854775808$", id="int64-max+1"),
    pytest.param({"n": INT_MIN - 1}, "context.n", rf"^context\.n {INT64}, got -9223372036854775809$", id="int64-min-1"),
    pytest.param({"n": 10 ** 4000}, "context.n", rf"^context\.n {INT64}, got an integer of 4,001 digits$",
                 id="int-4001-digits"),
    pytest.param({"n": -(10 ** 5000)}, "context.n", rf"^context\.n {INT64}, got an integer of more than 4,300 digits$",
                 id="int-beyond-printing"),
    pytest.param({"a": [1, {"b": 10 ** 30}]}, "context.a[1].b", rf"^context\.a\[1\]\.b {INT64}, got 10{{30}}$",
                 id="int-nested"),
    pytest.param({f"k{i}": i for i in range(MAX_KEYS + 1)}, "context",
                 r"^context must have at most 1,024 keys, got a mapping of 1,025 keys$", id="many-keys"),
    pytest.param({"a": {f"k{i}": i for i in range(MAX_KEYS + 1)}}, "context.a",
                 r"^context\.a must have at most 1,024 keys, got a mapping of 1,025 keys$", id="many-nested-keys"),
    pytest.param({f"k{i}": "x" * 60_000 for i in range(18)}, "context",
                 r"^context must be at most 1,048,576 characters as JSON, got 1,080,\d{3}$", id="context-too-long"),
]


@pytest.fixture
def router(tmp_path):
    r = br.Router(PROFILES, seed=0, log_dir=tmp_path, durability="sync")
    r.decide({"tenant": "acme"})
    return r


@pytest.mark.parametrize("context, field, message", BAD_CONTEXTS)
def test_bad_context_is_an_error_naming_the_field_on_every_path(router, context, field, message):
    position, pending = router.log_position, router.n_pending
    for call in (router.decide, router.probabilities, lambda c: router.decide_batch([{"tenant": "acme"}, c])):
        with pytest.raises(br.InvalidRequestError, match=message) as info:
            call(context)
        assert info.value.field == field
    assert (router.log_position, router.n_pending) == (position, pending)  # nothing issued, nothing logged


def test_a_context_that_contains_itself_is_too_deep(router):
    context = {"a": 1}
    context["self"] = context
    with pytest.raises(br.InvalidRequestError, match=r"^context(\.self){33} is nested too deeply"):
        router.decide(context)


def test_contexts_at_every_limit_are_accepted_and_logged_as_given(tmp_path):
    contexts = [
        {"deep": nest(MAX_DEPTH), "lo": INT_MIN, "hi": INT_MAX,
         "text": "zürich ✓ 😀 \x00 \u2028 \uffff \U0010ffff"},
        {"s": "a" * MAX_STRING_CHARS, "k" * MAX_STRING_CHARS: True},
        {f"k{i}": i for i in range(MAX_KEYS)},
        {"a": {f"k{i}": [i, float(i), None] for i in range(MAX_KEYS)}},
        {f"k{i}": "é" * 58_000 for i in range(18)},  # 1,044,xxx characters of JSON: just within
    ]
    assert len(json.dumps(contexts[-1], ensure_ascii=False, separators=(",", ":"))) <= MAX_CONTEXT_CHARS
    for journal in (False, True):
        log_dir = tmp_path / f"journal={journal}"
        router = br.Router(PROFILES, seed=0, log_dir=log_dir, log_journal=journal)
        ids = [router.decide(c).id for c in contexts]
        ids += [d.id for d in router.decide_batch(contexts)]
        router.flush()
        logged = br.scan_table(log_dir, "decisions").collect().sort("seq")
        assert logged.get_column("decision_id").to_list() == ids
        assert [json.loads(t) for t in logged.get_column("context")] == contexts * 2
        router.close()
        assert logged_ids(log_dir) == sorted(ids)


# -- the DataFrame path ----------------------------------------------------------------------------
@pytest.mark.parametrize("frame, field, message", [
    pytest.param(pl.DataFrame({"x": ["ok", "a" * (MAX_STRING_CHARS + 1)]}), "context.x",
                 r"^context\.x must be at most 65,536 characters, got a string of 65,537 characters$",
                 id="long-string"),
    pytest.param(pl.DataFrame({"x": pl.Series(["ok", "a" * (MAX_STRING_CHARS + 1)], dtype=pl.Categorical)}),
                 "context.x", r"^context\.x must be at most 65,536 characters", id="long-categorical"),
    pytest.param(pl.DataFrame({"n": pl.Series([1, 2 ** 64 - 1], dtype=pl.UInt64)}), "context.n",
                 rf"^context\.n {INT64}, got 18446744073709551615$", id="uint64"),
    pytest.param(pl.DataFrame({f"k{i}": [i] for i in range(MAX_KEYS + 1)}), "context",
                 r"^context must have at most 1,024 keys", id="many-columns"),
    pytest.param(pl.DataFrame({f"k{i}": ["x" * 60_000] for i in range(18)}), "context",
                 r"^context must be at most 1,048,576 characters as JSON", id="row-too-long"),
    pytest.param(pl.DataFrame({"day": [datetime.date(2024, 1, 1)]}), "context",
                 r"^context must be JSON-serialisable .*date", id="date-as-a-dict-would"),
    pytest.param(pl.DataFrame({"raw": [b"\xff"]}), "context", r"^context must be JSON-serialisable .*bytes",
                 id="binary-not-a-panic"),
])
def test_bad_dataframe_is_the_row_paths_error(router, frame, field, message):
    position = router.log_position
    with pytest.raises(br.InvalidRequestError, match=message) as info:
        router.decide_batch(frame)
    assert info.value.field == field and router.log_position == position


def test_polars_strings_hold_no_lone_surrogate():
    """Why the frame path has no surrogate check: Polars refuses them when the frame is built
    (if that ever changes, plan_frame must check its String columns)."""
    with pytest.raises(UnicodeEncodeError):
        pl.DataFrame({"x": ["\ud800"]})
    with pytest.raises(UnicodeEncodeError):
        pl.DataFrame({"\ud800": ["x"]})


def test_a_dataframe_at_the_limits_decides_as_its_rows_do(tmp_path):
    frame = pl.DataFrame({"s": ["a" * MAX_STRING_CHARS, "b"], "n": pl.Series([INT_MAX, 0], dtype=pl.UInt64),
                          "t": pl.Series(["x", "y"], dtype=pl.Categorical), "f": [1.5, None]})
    rows = [{k: v for k, v in r.items() if v is not None} for r in frame.iter_rows(named=True)]
    by_frame = br.Router(PROFILES, seed=3, log_dir=tmp_path).decide_batch(frame)
    by_rows = br.Router(PROFILES, seed=3).decide_batch(rows)
    assert [(d.profile, dict(d.probabilities)) for d in by_frame] == [(d.profile, dict(d.probabilities))
                                                                       for d in by_rows]


# -- outcomes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field, message", [
    ({"quality": 1.0, "cost_usd": 10 ** 4000}, "cost_usd",
     r"^cost_usd must be finite, got an integer of 4,001 digits$"),
    ({"quality": 10 ** 5000}, "quality", r"^quality must be finite, got an integer of more than 4,300 digits$"),
    ({"quality": 1.0, "latency_ms": -(10 ** 400)}, "latency_ms",
     r"^latency_ms must be finite, got an integer of 401 digits$"),
    ({"quality": 2 ** 1024}, "quality", r"^quality must be finite, got an integer of 309 digits$"),
    ({"quality": "x" * 100_000}, "quality", r"^quality must be a number, got a string of 100,000 characters$"),
])
def test_huge_outcome_numbers_are_an_outcome_error(router, kwargs, field, message):
    d = router.decide({"tenant": "acme"})
    position = router.log_position
    with pytest.raises(br.InvalidOutcomeError, match=message) as info:
        router.record(d.id, **kwargs)
    assert info.value.field == field and router.log_position == position
    assert router.record(d.id, quality=1.0) == "applied"  # still pending


# -- configuration strings --------------------------------------------------------------------------
@pytest.mark.parametrize("build, field, message", [
    (lambda: br.Profile("a", tags=["ok", "\ud800"]), "profiles[a].tags[1]",
     r"^profiles\[a\]\.tags\[1\] must be valid Unicode text \(a lone surrogate '\\ud800' at index 0\)"),
    (lambda: br.Profile("a", tags=["t" * (MAX_STRING_CHARS + 1)]), "profiles[a].tags[0]",
     r"must be at most 65,536 characters, got a string of 65,537 characters$"),
    (lambda: br.Profile("a", allow={"\ud800": ["x"]}), "profiles[a].allow",
     r"^profiles\[a\]\.allow keys must be valid Unicode text"),
    (lambda: br.Profile("a", allow={"tenant": ["acme", "x\udfff"]}), "profiles[a].allow.tenant",
     r"^profiles\[a\]\.allow\.tenant must be valid Unicode text \(a lone surrogate '\\udfff' at index 1\)"),
    (lambda: br.Profile("a", allow={"tenant": [["acme"]]}), "profiles[a].allow.tenant",
     r"must be a list of allowed values \(strings, numbers, booleans\), got \[\['acme'\]\]$"),
    (lambda: br.Profile("a\n"), "profile.name", r"^profile\.name must be a non-empty name .*, got 'a\\n'$"),
    (lambda: br.Profile("a" * 100_000), "profile.name", r"got a string of 100,000 characters$"),
    (lambda: br.Router(PROFILES, task_types=["chat", "c\ud800"]), "task_types[1]",
     r"^task_types\[1\] must be a non-empty name"),
    (lambda: br.Router(PROFILES, policy_version="v1-\ud800"), "policy_version",
     r"^policy_version must be valid Unicode text \(a lone surrogate '\\ud800' at index 3\)"),
    (lambda: br.Router(PROFILES, policy="linear", features={"tok\ud800": 1.0}), "features",
     r"^features must be valid Unicode text"),
    (lambda: br.Budget(max_cost_usd=10 ** 400), "budget.max_cost_usd",
     r"^budget\.max_cost_usd must be finite, got an integer of 401 digits$"),
    (lambda: br.Router(PROFILES, exploration=-(10 ** 5000)), "exploration",
     r"^exploration must be finite, got an integer"),
])
def test_bad_configuration_strings_and_numbers_are_a_config_error(build, field, message):
    with pytest.raises(br.ConfigError, match=message) as info:
        build()
    assert info.value.field == field


def test_routes_file_with_a_lone_surrogate_is_a_config_error(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[[profiles]]\nname = "a"\ntags = ["\\ud800"]\n')
    with pytest.raises(br.ConfigError, match=r"^routes\.toml .*is not valid TOML"):
        br.Router.from_config(path)


# -- the log stays complete around rejected inputs ----------------------------------------------------
@pytest.mark.parametrize("journal", [False, True])
def test_good_decisions_around_rejected_inputs_all_reach_the_log(tmp_path, journal):
    router = br.Router(PROFILES, seed=0, log_dir=tmp_path, log_journal=journal)
    good = [router.decide({"tenant": "acme", "i": 0}).id]
    bad = [{"x": "\ud800"}, {"\udc00": "k"}, {"x": nest(5000)}, {"n": 10 ** 4000}, {"s": "a" * 70_000},
           {f"k{i}": i for i in range(2000)}]
    for i, context in enumerate(bad, 1):
        with pytest.raises(br.InvalidRequestError):
            router.decide(context)
        with pytest.raises(br.InvalidRequestError):
            router.decide_batch([{"i": i}, context])
        good.append(router.decide({"tenant": "acme", "i": i}).id)
    with pytest.raises(br.InvalidRequestError):
        router.decide_batch(pl.DataFrame({"s": ["a" * 70_000]}))
    good += [d.id for d in router.decide_batch(pl.DataFrame({"tenant": ["acme", "globex"]}))]
    with pytest.raises(br.InvalidOutcomeError):
        router.record(good[0], quality=1.0, cost_usd=10 ** 4000)
    assert router.record(good[0], quality=1.0, cost_usd=0.001) == "applied"
    router.flush()
    assert logged_ids(tmp_path) == sorted(good)
    assert logged_ids(tmp_path, "outcomes") == [good[0]]
    router.close()
    assert cli(["compact", "--log-dir", str(tmp_path)]) == 0
    again = br.Router(PROFILES, seed=1, log_dir=tmp_path, log_journal=journal)  # a new router on the directory
    good.append(again.decide({"tenant": "acme"}).id)
    again.close()
    assert logged_ids(tmp_path) == sorted(good)
    assert br.Router(PROFILES, seed=2).replay(tmp_path) == 1


# -- the service: a 422 naming the field, never a 500 ------------------------------------------------
TOKEN = "hygiene-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A service, with the ids of the decisions it acknowledged so far (``client.good``)."""
    pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
    pytest.importorskip("httpx2", reason="starlette's TestClient needs httpx2")
    testclient = pytest.importorskip("starlette.testclient", reason="the in-process tests use starlette (dev extra)")
    from banditroute.service.app import ServiceConfig, create_app

    tmp_path = tmp_path_factory.mktemp("service")
    routes = tmp_path / "routes.toml"
    routes.write_text('[router]\nseed = 0\n[[profiles]]\nname = "small"\n[[profiles]]\nname = "large"\n')
    app = create_app(ServiceConfig(config=str(routes), log_dir=str(tmp_path / "logs"), token=TOKEN,
                                   max_body_bytes=1 << 18))  # room for a string over the limit
    with testclient.TestClient(app, raise_server_exceptions=False) as c:
        c.log_dir, c.good = tmp_path / "logs", []
        yield c


def _good_decision(client) -> str:
    r = client.post("/v1/decide", json={"context": {"tenant": "acme"}}, headers=AUTH)
    assert r.status_code == 200, r.text
    client.good.append(r.json()["id"])
    return client.good[-1]


def _decide_body(context_json: str) -> bytes:
    return ('{"context": %s}' % context_json).encode()


SERVICE_CASES = [
    pytest.param(_decide_body('{"x": "\\ud800"}'), "context.x", r"lone surrogate '\\ud800'", id="surrogate-escape"),
    pytest.param(_decide_body('{"\\udfff": 1}'), "context", r"^context keys must be valid Unicode", id="surrogate-key"),
    pytest.param(_decide_body('{"a": [{"b": "ok\\ud83d"}]}'), "context.a[0].b", r"lone surrogate",
                 id="nested-surrogate"),
    pytest.param(_decide_body('{"x": %s}' % json.dumps(nest(40))), DEEP_FIELD, r"is nested too deeply", id="depth-40"),
    pytest.param(_decide_body('{"x": %s}' % ("[" * 5000 + "]" * 5000)), "context",
                 r"^context is nested too deeply to read \(a context's values nest at most 32 levels\)$",
                 id="depth-5000"),
    pytest.param(_decide_body('{"n": %d}' % (INT_MAX + 1)), "context.n", INT64, id="int64-max+1"),
    pytest.param(_decide_body('{"n": %s}' % ("9" * 4000)), "context.n", r"got an integer of 4,000 digits$",
                 id="int-4000-digits"),
    pytest.param(_decide_body('{"n": -%s}' % ("9" * 5000)), "context",
                 r"^context holds an integer of more than 4,300 digits", id="int-5000-digits"),
    pytest.param(_decide_body('{"s": "%s"}' % ("a" * 70_000)), "context.s", r"got a string of 70,000 characters$",
                 id="long-string"),
    pytest.param(_decide_body(json.dumps({f"k{i}": i for i in range(MAX_KEYS + 1)})), "context",
                 r"must have at most 1,024 keys", id="many-keys"),
]


@pytest.mark.parametrize("body, field, message", SERVICE_CASES)
def test_bad_decide_body_gets_a_422_naming_the_field(service, body, field, message):
    _good_decision(service)
    r = service.post("/v1/decide", content=body, headers=AUTH)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["field"] == field, err
    assert re.search(message, err["message"]), err["message"]
    _good_decision(service)
    assert logged_ids(service.log_dir) == sorted(service.good)  # acknowledged: on disk; rejected: nowhere


@pytest.mark.parametrize("value, field, message", [
    ("9" * 4000, "cost_usd", r"^cost_usd must be finite, got an integer of 4,000 digits$"),
    ("9" * 5000, "cost_usd", r"^cost_usd holds an integer of more than 4,300 digits"),
    ('"\\ud800"', "cost_usd", r"^cost_usd must be a number, got '\\ud800'$"),
    ("[" * 3000 + "]" * 3000, "cost_usd", r"^cost_usd is nested too deeply to read"),
])
def test_bad_outcome_body_gets_a_422_naming_the_field(service, value, field, message):
    decision = _good_decision(service)
    body = '{"decision_id": "%s", "quality": 1.0, "cost_usd": %s}' % (decision, value)
    r = service.post("/v1/outcome", content=body.encode(), headers=AUTH)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and re.search(message, err["message"]), err
    ok = service.post("/v1/outcome", json={"decision_id": decision, "quality": 1.0, "cost_usd": 0.01}, headers=AUTH)
    assert ok.json()["status"] == "applied"  # the decision was still pending
    assert decision in logged_ids(service.log_dir, "outcomes")


# -- the property: whatever decide accepts, the log holds, readable ----------------------------------
_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # lone, even when two
_bad_text = st.tuples(st.text(max_size=3), _surrogates, st.text(max_size=3)).map("".join)


def _sometimes(bad, good, one_in: int):
    """``bad`` about once in ``one_in`` draws, else ``good`` (one_of has no weights)."""
    return st.tuples(st.integers(1, one_in), bad, good).map(lambda t: t[1] if t[0] == one_in // 2 + 1 else t[2])


_text = _sometimes(_bad_text, st.text(max_size=6), 8)
_key = _sometimes(_bad_text, st.text(max_size=6), 24)
_huge = st.sampled_from([30, -4000, 5000]).map(lambda e: 10 ** e if e > 0 else -(10 ** -e))  # (repr fails at 5000)
_near_limits = st.one_of(st.integers(INT_MAX - 1, INT_MAX + 1), st.integers(INT_MIN - 1, INT_MIN + 1))
_ints = _sometimes(st.one_of(st.integers(), _near_limits, _huge), st.integers(INT_MIN, INT_MAX), 6)
_floats = _sometimes(st.sampled_from([math.nan, math.inf, -math.inf]),
                     st.floats(allow_nan=False, allow_infinity=False), 8)
_scalars = st.one_of(st.none(), st.booleans(), _floats, _text, _ints)
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_key, inner, max_size=4)), max_leaves=10)
_edges = st.one_of(
    st.tuples(st.integers(MAX_DEPTH - 1, MAX_DEPTH + 1), _scalars).map(lambda t: nest(*t)),
    st.integers(MAX_STRING_CHARS, MAX_STRING_CHARS + 1).map(lambda n: "a" * n),
    st.integers(MAX_KEYS, MAX_KEYS + 1).map(lambda n: {f"k{i}": i for i in range(n)}),
)
_contexts = st.dictionaries(_key, _sometimes(_edges, _json, 10), max_size=5)


@pytest.mark.parametrize("journal", [False, True])
@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(contexts=st.lists(_contexts, min_size=1, max_size=6))
def test_whatever_decide_accepts_the_log_holds_readable(journal, contexts):
    with tempfile.TemporaryDirectory() as log_dir:
        router = br.Router(PROFILES, seed=0, log_dir=log_dir, log_journal=journal)
        accepted = {}
        for context in contexts:
            try:
                accepted[router.decide(context).id] = context
            except br.BanditrouteError:  # rejected with the library's error: fine; anything else fails the test
                pass
        again = list(accepted.values())
        batch = router.decide_batch(again)  # the batch path accepts the same contexts
        accepted.update({d.id: context for d, context in zip(batch, again)})
        router.flush()
        logged = br.scan_table(log_dir, "decisions").collect()
        ids = logged.get_column("decision_id").to_list()
        assert sorted(ids) == sorted(accepted) and len(set(ids)) == len(ids)
        for decision_id, text in zip(ids, logged.get_column("context")):
            assert json.loads(text) == accepted[decision_id]  # logged as given
        router.close()  # compacts the journal into Parquet parts
        assert logged_ids(log_dir) == sorted(accepted)
