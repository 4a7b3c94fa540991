"""A Redis that may evict limit keys hands out full buckets without an error: said at start and on each
probe, in the log, on /health and as a gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis

from tests.redis_process import RedisProcess
from tornado_rate_limiter.limiter import LimiterMetrics, Policy, RateLimiter, RedisBackend


def connected_health(server: RedisProcess) -> tuple[dict[str, object], float | None]:
    async def scenario() -> tuple[dict[str, object], float | None]:
        metrics = LimiterMetrics()
        async with RateLimiter(RedisBackend.from_url(server.url, timeout=2.0), metrics=metrics) as limiter:
            return limiter.health(), metrics.registry.get_sample_value("rate_limit_redis_evicts_keys")

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("options", "evicts"),
    [
        (("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"), True),
        (("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"), True),  # every key of ours has a TTL
        (("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"), False),
        (("--maxmemory", "4mb", "--maxmemory-policy", "volatile-ttl"), True),  # nearest to full first, still
        (("--maxmemory", "0", "--maxmemory-policy", "allkeys-lru"), False),  # no limit: nothing is evicted
    ],
)
def test_the_eviction_policy_is_read_at_start(
    options: tuple[str, ...], evicts: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """connect() reads maxmemory and its policy: /health and the gauge say whether keys may be evicted, and
    the log warns once when they may."""
    server = RedisProcess(extra_args=options).start()
    try:
        with caplog.at_level(logging.WARNING, logger="tornado_rate_limiter.limiter"):
            health, gauge = connected_health(server)
    finally:
        server.stop()
    assert health["redis_evicts_keys"] is evicts and gauge == int(evicts)
    warnings = [record for record in caplog.records if "may evict limit keys" in record.getMessage()]
    assert len(warnings) == int(evicts)


def test_config_denied_leaves_it_unknown() -> None:
    """A Redis that refuses CONFIG (as managed services do): the limiter still serves, the answer is None
    and the gauge -1."""
    server = RedisProcess(extra_args=("--rename-command", "CONFIG", "")).start()
    try:
        health, gauge = connected_health(server)
    finally:
        server.stop()
    assert health["redis_evicts_keys"] is None and gauge == -1 and health["degraded"] is False


def test_evicted_buckets_are_why_it_matters() -> None:
    """Even volatile-ttl, the mildest evicting policy, evicts a spent bucket under memory pressure (here the
    only key with a TTL, so surely the one evicted): it reads full again and admits."""
    server = RedisProcess(extra_args=("--maxmemory", "2mb", "--maxmemory-policy", "volatile-ttl")).start()

    async def scenario() -> bool:
        async with RedisBackend.from_url(server.url, timeout=2.0) as backend:
            policy = Policy(1, 1e-3, name="evicted")
            assert (await backend.acquire_from_redis("spent", policy)).allowed
            assert not (await backend.acquire_from_redis("spent", policy)).allowed
            filler = server.client()
            with contextlib.suppress(redis.exceptions.OutOfMemoryError):  # once nothing is left to evict
                for index in range(400):
                    filler.set(f"filler:{index}", "x" * 20_000)
            return (await backend.acquire_from_redis("spent", policy)).allowed

    try:
        assert asyncio.run(scenario())  # the bucket was evicted: a spent limit admits again
    finally:
        server.stop()
