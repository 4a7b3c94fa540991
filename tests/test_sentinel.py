"""Redis Sentinel through redis+sentinel://: decisions follow a forced failover under load."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.load import Load, Sample
from tests.redis_topologies import SentinelSetup
from tests.service_process import ServiceProcess
from tornado_rate_limiter.limiter import Decision, FixedWindow, LocalBackend, Policy, RedisBackend, SlidingWindow
from tornado_rate_limiter.limiter.algorithms import AnyPolicy

pytestmark = pytest.mark.process  # real service processes or Redis topologies: slow


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    """A master, its replica and a sentinel, all redis-server processes on free ports."""
    setup = SentinelSetup().start()
    yield setup
    setup.stop()


def test_the_backend_finds_the_master_through_the_sentinel(sentinel_setup: SentinelSetup) -> None:
    """redis+sentinel://host:port/mymaster decides on the master the sentinel names, for every algorithm
    as the local backend decides."""
    policies: list[AnyPolicy] = [
        Policy(2, 1.0, name="sentinel"),
        FixedWindow(2, 60, name="sentinel-fixed"),
        SlidingWindow(2, 60, name="sentinel-sliding"),
    ]
    calls = [policy for policy in policies for _ in range(3)]

    async def scenario() -> list[Decision]:
        backend = RedisBackend.from_url(sentinel_setup.url, timeout=2.0)
        decisions = [await backend.acquire("ip:203.0.113.7", policy, now=1_764_000_000.0) for policy in calls]
        await backend.close()
        return decisions

    local = LocalBackend()
    assert asyncio.run(scenario()) == [local.acquire_now("ip:203.0.113.7", p, now=1_764_000_000.0) for p in calls]
    assert sentinel_setup.master.client().dbsize() == 3


def test_url_query_parameters_reach_the_master_connection(sentinel_setup: SentinelSetup) -> None:
    """redis-py's URL parameters work in the sentinel form: ?client_name names our connection."""

    async def scenario() -> str:
        backend = RedisBackend.from_url(sentinel_setup.url + "?client_name=rate-limiter", timeout=2.0)
        await backend.acquire("k", Policy(3, 1.0, name="sentinel"))
        listing = sentinel_setup.master.client().execute_command("CLIENT", "LIST")
        await backend.close()
        return str(listing)

    assert "name=rate-limiter" in asyncio.run(scenario())


def test_decisions_follow_a_failover_under_load(sentinel_setup: SentinelSetup) -> None:
    """SENTINEL FAILOVER under 16 concurrent clients: zero 5xx, and Redis (the new master) decides again."""
    env = {
        "REDIS_URL": sentinel_setup.url,
        "RATE_LIMIT_CAPACITY": "1000000000",
        "RATE_LIMIT_REFILL_RATE": "1000000000",
        "RATE_LIMIT_BREAKER_COOLDOWN": "1",
        "RATE_LIMIT_BREAKER_MAX_COOLDOWN": "1",
    }
    service = ServiceProcess(env).start()
    moments: dict[str, float] = {}

    async def scenario() -> list[Sample]:
        load = Load(service.port, clients=16)
        load.start()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(sentinel_setup.failover)
        moments["failed_over"] = time.monotonic()
        await asyncio.sleep(4.0)
        return await load.stop()

    try:
        samples = asyncio.run(scenario())
        health = urllib.request.urlopen(service.url + "/health", timeout=5).read()
    finally:
        service.stop()
    assert not [s for s in samples if s.status == 0 or s.status >= 500]
    settled = [s for s in samples if s.started > moments["failed_over"] + 2.5]
    assert settled and not any(s.degraded for s in settled)
    new_master = sentinel_setup.replica if sentinel_setup.master_port() == sentinel_setup.replica.port else None
    assert new_master is not None and new_master.client().info("replication")["role"] == "master"
    assert b'"degraded": false' in health
    degraded = sum(s.degraded for s in samples)
    print(f"\nFAILOVER: responses={len(samples)} degraded={degraded} slowest={max(s.latency for s in samples):.3f}s")
