"""Shared fixtures. ``BR_TEST_SEED=7 pytest`` sweeps the seed of every statistical test."""

import os

import pytest

import banditroute as br


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("BR_TEST_SEED", "0"))


@pytest.fixture(scope="module")
def dask_client():
    """A Dask client of a LocalCluster(2 single-threaded worker processes), one per test module."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def profiles():
    return [br.Profile("small", cost_usd=0.0004, latency_ms=400),
            br.Profile("medium", cost_usd=0.002, latency_ms=900),
            br.Profile("large", cost_usd=0.012, latency_ms=2500)]


TASKS = ["chat", "code", "math"]


def train(router, truth: dict, n: int, rng, task_types=TASKS):
    """Feed ``n`` decisions with Bernoulli(truth[profile][task]) quality into ``router``."""
    for i in range(n):
        task = task_types[i % len(task_types)]
        d = router.decide({"task_type": task})
        router.record(d.id, quality=float(rng.random() < truth[d.profile][task]))
