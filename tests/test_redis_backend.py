"""What only the Redis backend does: the script's storage, TTLs, NOSCRIPT, Redis's clock, pooling."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import BackendDriver
from tests.redis_process import RedisProcess, free_port
from tornado_rate_limiter.limiter import BackendError, LocalBackend, Policy, RedisBackend
from tornado_rate_limiter.limiter.redis import TOKEN_BUCKET_SHA
from tornado_rate_limiter.limiter.redis_url import CONNECT_BACKSTOP

POLICY = Policy(capacity=5, refill_rate=0.5, name="redis")
T0 = 1_764_000_000.0


def stored(driver: BackendDriver, key: str, policy: Policy = POLICY) -> tuple[bytes | None, int]:
    """The raw value and PTTL of key's bucket in Redis."""
    assert isinstance(driver.backend, RedisBackend)
    redis_key = driver.backend.redis_key(key, policy)
    client = driver.backend.client
    return driver.run(client.get(redis_key)), driver.run(client.pttl(redis_key))


class TestStorage:
    def test_every_write_sets_a_ttl_of_time_to_full_plus_slack(self, redis_backend: BackendDriver) -> None:
        """A written bucket expires once it would be full again, plus the expiry slack (1 s)."""
        key = redis_backend.fresh_key()
        redis_backend.acquire(key, POLICY, cost=2)
        value, ttl_ms = stored(redis_backend, key)
        assert value is not None
        assert 4000 < ttl_ms <= 5000  # 2 tokens at 0.5/s = 4 s, plus 1 s of slack

    def test_a_denial_writes_nothing(self, redis_backend: BackendDriver) -> None:
        """A denied request leaves the stored bucket exactly as it was."""
        key = redis_backend.fresh_key()
        redis_backend.acquire(key, POLICY, cost=5, now=T0)
        before, _ = stored(redis_backend, key)
        assert not redis_backend.acquire(key, POLICY, cost=1, now=T0 + 1).allowed
        assert stored(redis_backend, key)[0] == before

    def test_numbers_survive_the_round_trip_exactly(self, redis_backend: BackendDriver) -> None:
        """Fractional tokens stored in Redis load back bit for bit (no 14-digit rounding)."""
        key = redis_backend.fresh_key()
        local = LocalBackend()
        policy = Policy(capacity=1, refill_rate=1 / 3, name="exact")
        for step in range(30):
            now = T0 + step * 0.123456789
            expected = asyncio.run(local.acquire(key, policy, 0.1, now))
            assert redis_backend.acquire(key, policy, 0.1, now) == expected

    def test_redis_clock_is_used_when_now_is_none(
        self, redis_backend: BackendDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With now=None the stamp comes from Redis's TIME, so a wrong app clock changes nothing."""
        monkeypatch.setattr(time, "time", lambda: 0.0)
        key = redis_backend.fresh_key()
        redis_backend.acquire(key, POLICY)
        value, _ = stored(redis_backend, key)
        assert value is not None
        redis_seconds, _ = redis_backend.run(redis_backend.backend.client.time())  # type: ignore[union-attr]
        assert abs(float(value.split()[1]) - redis_seconds) < 5

    def test_keys_carry_prefix_and_policy_name(self, redis_server: RedisProcess) -> None:
        """Keys are <prefix>{<key>}:<policy>, so one Redis can hold several limiters apart, and a client's
        keys share a Cluster slot (the braces are the hash tag)."""
        backend = RedisBackend.from_url(redis_server.url, key_prefix="app1:")
        assert backend.redis_key("ip:1.2.3.4", POLICY) == "app1:{ip:1.2.3.4}:redis"
        asyncio.run(backend.close())


class TestScriptLoading:
    def test_reloads_the_script_after_redis_forgot_it(self, redis_backend: BackendDriver) -> None:
        """After SCRIPT FLUSH (as after a restart or failover) the next decision still succeeds."""
        client = redis_backend.backend.client  # type: ignore[union-attr]
        redis_backend.acquire(redis_backend.fresh_key(), POLICY)
        redis_backend.run(client.script_flush())
        assert redis_backend.run(client.script_exists(TOKEN_BUCKET_SHA)) == [False]
        assert redis_backend.acquire(redis_backend.fresh_key(), POLICY).allowed
        assert redis_backend.run(client.script_exists(TOKEN_BUCKET_SHA)) == [True]


class TestConnections:
    def test_from_url_sets_short_timeouts_and_no_retries(self, redis_server: RedisProcess) -> None:
        """Calls time out in tens of milliseconds, and the client never retries on its own. Reads have no
        socket timeout of their own and connects only a 1 s backstop: the backend's deadline, which counts
        the event loop's time only, bounds each round trip and each connect in it."""
        backend = RedisBackend.from_url(redis_server.url)
        options = backend.client.connection_pool.connection_kwargs
        assert backend.timeout == 0.05 and options["socket_connect_timeout"] == CONNECT_BACKSTOP == 1.0
        assert options["socket_timeout"] is None
        assert options["retry"].get_retries() == 0
        asyncio.run(backend.close())

    def test_hundreds_of_concurrent_calls_share_a_bounded_pool(self, redis_server: RedisProcess) -> None:
        """500 concurrent acquire() calls all succeed through at most max_connections connections."""

        async def scenario() -> tuple[int, int, int]:
            url = redis_server.url + "?client_name=pool-test"  # tells our connections from other tests'
            backend = RedisBackend.from_url(url, max_connections=8, timeout=2.0)
            policy = Policy(capacity=1000, refill_rate=1.0, name="pool")
            decisions = await asyncio.gather(*(backend.acquire("pool", policy, now=T0) for _ in range(500)))
            clients = await backend.client.client_list()
            ours = sum(1 for client in clients if client["name"] == "pool-test")
            await backend.close()
            return sum(d.allowed for d in decisions), len(decisions), ours

        allowed, total, connections = asyncio.run(scenario())
        assert (allowed, total) == (500, 500)
        assert 1 <= connections <= 8

    def test_an_unreachable_redis_raises_backend_error_fast(self) -> None:
        """Nothing listening: acquire() raises BackendError within the connect timeout, not seconds."""

        async def scenario() -> None:
            backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
            try:
                await backend.acquire("gone", POLICY)
            finally:
                await backend.close()

        started = time.monotonic()
        with pytest.raises(BackendError, match="redis"):
            asyncio.run(scenario())
        assert time.monotonic() - started < 2
