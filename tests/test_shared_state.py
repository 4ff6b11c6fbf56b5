"""Posterior state shared through Redis: exact merging, idempotent pushes, outages, restarts.

Needs ``redis-server`` (Debian package) and ``redis`` (PyPI); each test starts its own
server on a free loopback port, with AOF persistence, in a temporary directory.
"""

import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

import banditroute as br

redis = pytest.importorskip("redis", reason="the service extra (redis) is not installed")
from banditroute.service.shared_state import SharedState, SharedStateConfig  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server on loopback with AOF (appendfsync always) in ``directory``; restartable."""

    def __init__(self, directory, port=None):
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
                                      "--save", "", "--protected-mode", "yes"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        client.close()
        return self

    def stop(self, sig="TERM"):
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.terminate if sig == "TERM" else self.proc.kill)()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server binary not found (apt-get install redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


PROFILES = [br.Profile("small", cost_usd=0.0004, latency_ms=400), br.Profile("large", cost_usd=0.012, latency_ms=2500)]
TASKS = ["chat", "code", "math"]


def replica(url, *, profiles=PROFILES, seed=0, namespace="t"):
    router = br.Router(profiles, task_types=TASKS, seed=seed)
    return router, SharedState(router, config=SharedStateConfig(url=url, namespace=namespace, interval_s=0.05,
                                                                startup_timeout_s=0.5))


def feed(router, n, rng):
    for i in range(n):
        d = router.decide({"task_type": TASKS[i % 3]})
        router.record(d.id, quality=float(rng.random() < 0.6))


def n_outcomes(router) -> float:
    return float(router.beliefs().get_column("n").sum())


@needs_redis
def test_two_replicas_count_exactly_n_plus_m(redis_server, seed):
    rng = np.random.default_rng(seed)
    (ra, sa), (rb, sb) = replica(redis_server.url, seed=1), replica(redis_server.url, seed=2)
    for _ in range(5):  # interleave outcomes and sync rounds
        feed(ra, 37, rng)
        assert sa.sync()
        feed(rb, 23, rng)
        assert sb.sync()
    assert sa.sync() and sb.sync()
    assert n_outcomes(ra) == n_outcomes(rb) == 5 * (37 + 23)
    np.testing.assert_array_equal(ra.evidence()[0], rb.evidence()[0])
    np.testing.assert_array_equal(ra.evidence()[1], rb.evidence()[1])
    for _ in range(3):  # further rounds without traffic change nothing
        assert sa.sync() and sb.sync()
    assert n_outcomes(ra) == n_outcomes(rb) == 300


@needs_redis
def test_outcomes_recorded_during_a_round_are_kept(redis_server, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    router, shared = replica(redis_server.url)
    original = shared._push

    def push_then_record():  # outcomes land between the push and the pull
        original()
        feed(router, 7, rng)

    monkeypatch.setattr(shared, "_push", push_then_record)
    feed(router, 10, rng)
    assert shared.sync()
    assert n_outcomes(router) == 17
    monkeypatch.setattr(shared, "_push", original)
    assert shared.sync()
    other, other_shared = replica(redis_server.url, seed=5)
    assert other_shared.sync()
    assert n_outcomes(other) == 17


@needs_redis
def test_a_retried_batch_is_counted_once(redis_server, seed):
    rng = np.random.default_rng(seed)
    router, shared = replica(redis_server.url)
    feed(router, 12, rng)
    with router.lock:
        alpha, beta = router.evidence()
    shared._unsent = [alpha - shared._base[0], beta - shared._base[1]]
    shared._base = [alpha, beta]
    shared._redis()
    shared._push()
    batch = shared.n_batches
    # the reply was "lost": the same batch goes again
    shared._inflight = ("replayed", alpha.copy(), beta.copy(), router.log_position)
    shared._push()
    shared._inflight = ("replayed", alpha.copy(), beta.copy(), router.log_position)
    shared._push()
    assert shared.n_batches == batch + 2
    fresh, fresh_shared = replica(redis_server.url, seed=3)
    assert fresh_shared.sync()
    assert n_outcomes(fresh) == 12 + 12  # the original push, plus "replayed" exactly once


@needs_redis
def test_new_replica_starts_from_the_shared_state(redis_server, seed):
    rng = np.random.default_rng(seed)
    router, shared = replica(redis_server.url)
    feed(router, 40, rng)
    assert shared.sync()
    newcomer, new_shared = replica(redis_server.url, seed=9)
    assert new_shared.start()
    try:
        assert n_outcomes(newcomer) == 40
        # the reliability evidence is shared (learned cost, latency and availability are not yet)
        reliability = ["profile", "task_type", "mean", "ci_low", "ci_high", "n", "alpha", "beta"]
        assert newcomer.beliefs().select(reliability).equals(router.beliefs().select(reliability))
    finally:
        new_shared.stop()


@needs_redis
def test_cells_map_by_name_not_position(redis_server, seed):
    rng = np.random.default_rng(seed)
    router, shared = replica(redis_server.url)
    feed(router, 30, rng)
    assert shared.sync()
    reordered, re_shared = replica(redis_server.url, profiles=PROFILES[::-1], seed=4)
    assert re_shared.sync()
    a = router.beliefs().sort("profile", "task_type").select("profile", "task_type", "alpha", "beta")
    b = reordered.beliefs().sort("profile", "task_type").select("profile", "task_type", "alpha", "beta")
    assert a.equals(b)


@needs_redis
def test_redis_outage_buffers_then_reconciles(redis_server, seed):
    rng = np.random.default_rng(seed)
    (ra, sa), (rb, sb) = replica(redis_server.url, seed=1), replica(redis_server.url, seed=2)
    feed(ra, 20, rng)
    feed(rb, 10, rng)
    assert sa.sync() and sb.sync() and sa.sync()
    redis_server.stop()
    feed(ra, 15, rng)
    feed(rb, 25, rng)
    assert not sa.sync() and not sb.sync()
    assert not sa.up and sa.n_failures >= 1
    assert sa.buffered_evidence == 15 and sb.buffered_evidence == 25
    assert n_outcomes(ra) == 30 + 15  # keeps deciding and learning from its last state
    ra.decide({"task_type": "chat"})
    redis_server.start()
    for _ in range(2):
        assert sa.sync() and sb.sync()
    assert n_outcomes(ra) == n_outcomes(rb) == 70
    assert sa.buffered_evidence == 0 and sb.buffered_evidence == 0


@needs_redis
def test_lost_redis_data_is_not_applied(redis_server, seed):
    rng = np.random.default_rng(seed)
    router, shared = replica(redis_server.url)
    feed(router, 10, rng)
    assert shared.sync()
    redis.Redis.from_url(redis_server.url).flushall()
    assert shared.sync()
    assert shared.n_regressions == 1
    assert n_outcomes(router) == 10


@needs_redis
@pytest.mark.parametrize("owner_commits", [False, True], ids=["writer-flushes", "owner-commits"])
def test_a_push_waits_until_its_outcomes_are_durable_in_the_log(redis_server, seed, tmp_path, monkeypatch,
                                                               owner_commits):
    """Redis never counts an outcome whose log row a crash could still lose: a replica killed
    after such a push, before the commit, would leave Redis above every log for good (no row
    for an adopter to reconcile). A library router's writer flushes itself; the service's is
    committed by its owner (the group commit), which the push waits for."""
    rng = np.random.default_rng(seed)
    logs = tmp_path / "logs"
    router = br.Router(PROFILES, task_types=TASKS, seed=seed, log_dir=str(logs))
    if owner_commits:
        log = br.LogWriter(logs, auto_flush=False, journal=True)
        router.use_log_writer(log)
    shared = SharedState(router, config=SharedStateConfig(url=redis_server.url, namespace="t", interval_s=0.05,
                                                          startup_timeout_s=0.5))
    feed(router, 10, rng)  # learned from; their rows are buffered, not yet durable
    pushed, send = [], shared._send

    def send_and_look(batch_id, writer, watermark, pairs):  # the outcomes the log holds as the push goes out
        pushed.append((sum(float(d) for d in pairs[1::2]), br.scan_table(logs, "outcomes").collect().height))
        send(batch_id, writer, watermark, pairs)

    monkeypatch.setattr(shared, "_send", send_and_look)
    try:
        if owner_commits:  # the owner's next group commit comes a while later
            committer = threading.Timer(0.5, lambda: log.commit_detached(log.detach()))
            committer.start()
        assert shared.sync()
        if owner_commits:
            committer.join()
        assert pushed == [(10.0, 10)]
    finally:
        router.close()


def test_unreachable_redis_at_startup_serves_from_the_prior():
    router, shared = replica(f"redis://127.0.0.1:{free_port()}/0")
    assert shared.start() is False
    try:
        assert not shared.up and n_outcomes(router) == 0
        router.decide({"task_type": "chat"})
    finally:
        shared.stop()


def test_config_errors_name_field_and_value():
    with pytest.raises(br.ConfigError, match="redis_url must be a redis://"):
        SharedStateConfig(url="http://127.0.0.1")
    with pytest.raises(br.ConfigError, match="redis_namespace must be"):
        SharedStateConfig(url="redis://127.0.0.1", namespace="a{b}")
