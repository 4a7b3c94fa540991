"""RateLimiter: Redis through the breaker, the fallback, the failure strategies, against real servers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
import redis

from tests.redis_process import RedisProcess
from tornado_rate_limiter.limiter import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    LimiterMetrics,
    Policy,
    RateLimiter,
    RedisBackend,
)
from tornado_rate_limiter.limiter.redis_outages import is_unavailable

POLICY = Policy(capacity=10, refill_rate=0.01, name="lim")
FAST_BREAKER = BreakerConfig(consecutive_failures=3, cooldown=0.2, max_cooldown=0.2, jitter=0.0)


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test may kill, freeze or restart."""
    server = RedisProcess().start()
    yield server
    server.stop()


def out_of_memory(server: RedisProcess) -> redis.Redis:
    """Make ``server`` answer every write with OOM (maxmemory with noeviction); its client, to undo it."""
    control = server.client()
    control.set("ballast", "x" * 100_000)
    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", 1)
    return control


def limiter_on(server: RedisProcess, **options: object) -> RateLimiter:
    backend = RedisBackend.from_url(server.url, timeout=0.2)
    breaker = CircuitBreaker(FAST_BREAKER, rng=random.Random(0))
    return RateLimiter(backend, breaker=breaker, metrics=LimiterMetrics(), **options)  # type: ignore[arg-type]


async def closed_within(breaker: CircuitBreaker, seconds: float) -> None:
    """Wait (polling) until the breaker has closed, failing after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while breaker.state is not BreakerState.CLOSED:
        assert asyncio.get_running_loop().time() < deadline, f"breaker still {breaker.state.value}"
        await asyncio.sleep(0.01)


def count(limiter: RateLimiter, name: str, labels: dict[str, str] | None = None) -> float:
    value = limiter.metrics.registry.get_sample_value(name, labels)
    assert value is not None
    return value


class TestFailOpen:
    def test_decides_locally_when_redis_dies_and_stops_calling_it(self, own_redis: RedisProcess) -> None:
        """After kill -9: decisions are degraded local ones, and after 3 errors the breaker stops the calls."""

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            assert not (await limiter.acquire("k", POLICY)).degraded
            own_redis.kill()
            decisions = [await limiter.acquire("k", POLICY) for _ in range(10)]
            assert all(d.degraded for d in decisions)
            assert [d.allowed for d in decisions] == [True] * 10  # the local bucket is a fresh 10
            assert count(limiter, "rate_limit_errors_total") == 3  # then the breaker opened
            assert count(limiter, "rate_limit_degraded_total") == 10
            assert limiter.breaker.state is BreakerState.OPEN
            assert limiter.health() == {
                "backend": "redis",
                "breaker": "open",
                "degraded": True,
                "redis_evicts_keys": None,
            }
            assert count(limiter, "rate_limit_breaker_state") == 2
            await limiter.close()

        asyncio.run(scenario())

    def test_fallback_share_scales_the_local_limit(self, own_redis: RedisProcess) -> None:
        """With RATE_LIMIT_FALLBACK_SHARE 0.5, a process alone allows half of the burst."""

        async def scenario() -> list[bool]:
            limiter = limiter_on(own_redis, fallback_share=0.5)
            own_redis.kill()
            decisions = [await limiter.acquire("k", POLICY) for _ in range(7)]
            await limiter.close()
            return [d.allowed for d in decisions]

        assert asyncio.run(scenario()) == [True] * 5 + [False] * 2

    def test_returns_to_redis_after_a_restart_within_one_cooldown(self, own_redis: RedisProcess) -> None:
        """Redis restarted empty (no script, no keys): the probe reloads the script and closes the breaker."""

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            await limiter.acquire("k", POLICY)
            own_redis.kill()
            for _ in range(3):
                await limiter.acquire("k", POLICY)
            assert limiter.breaker.state is BreakerState.OPEN
            own_redis.start()
            await asyncio.sleep(0.25)  # one cool-down
            assert (await limiter.acquire("k", POLICY)).degraded  # answered at once; the probe runs aside
            await closed_within(limiter.breaker, 2.0)  # the probe connects and loads the script
            decision = await limiter.acquire("k", POLICY)
            assert not decision.degraded and decision.remaining == 9  # a fresh bucket in the new Redis
            await limiter.close()

        asyncio.run(scenario())


class TestFailClosed:
    def test_denies_with_the_remaining_cooldown(self, own_redis: RedisProcess) -> None:
        """Fail-closed: denied, degraded, retry_after = the breaker's cool-down (at least 1 s)."""

        async def scenario() -> None:
            limiter = limiter_on(own_redis, failure_strategy="closed")
            own_redis.kill()
            decisions = [await limiter.acquire("k", POLICY) for _ in range(5)]
            assert all(not d.allowed and d.degraded for d in decisions)
            assert all(d.retry_after >= 1.0 for d in decisions)
            assert count(limiter, "rate_limit_blocked_total", {"identity": "ip"}) == 5
            await limiter.close()

        asyncio.run(scenario())


class TestWhatCountsAsAnOutage:
    def test_a_frozen_redis_times_out_within_the_deadline(self, own_redis: RedisProcess) -> None:
        """SIGSTOP: each call gives up at the 0.2 s deadline and the breaker opens; then no waiting at all."""

        async def scenario() -> list[float]:
            limiter = limiter_on(own_redis)
            await limiter.acquire("k", POLICY)
            own_redis.freeze()
            durations = []
            for _ in range(6):
                started = asyncio.get_running_loop().time()
                assert (await limiter.acquire("k", POLICY)).degraded
                durations.append(asyncio.get_running_loop().time() - started)
            own_redis.thaw()
            await limiter.close()
            return durations

        durations = asyncio.run(scenario())
        assert all(d < 0.2 + 0.1 for d in durations[:3])  # deadline plus slack
        assert all(d < 0.01 for d in durations[3:])  # breaker open: Redis is not asked

    def test_out_of_memory_replies_are_an_outage(self, own_redis: RedisProcess) -> None:
        """maxmemory with noeviction: OOM replies count as failures and clients still get decisions."""
        out_of_memory(own_redis)

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            decisions = [await limiter.acquire(f"k{i}", POLICY) for i in range(4)]
            assert all(d.allowed and d.degraded for d in decisions)
            assert count(limiter, "rate_limit_errors_total") == 3
            assert limiter.breaker.state is BreakerState.OPEN
            await limiter.close()

        asyncio.run(scenario())

    def test_a_bug_in_the_call_is_logged_not_treated_as_an_outage(
        self, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bucket key of the wrong type (WRONGTYPE) is logged with its traceback and counted; the
        client still gets a (degraded) decision, and the breaker stays closed however often it happens."""
        own_redis.client().hset("rl:{wrong}:lim", "a", "b")

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            decisions = [await limiter.acquire("wrong", POLICY) for _ in range(5)]
            assert all(d.allowed and d.degraded for d in decisions)
            assert limiter.breaker.state is BreakerState.CLOSED
            assert count(limiter, "rate_limit_errors_total") == 5
            assert not (await limiter.acquire("fine", POLICY)).degraded
            await limiter.close()

        asyncio.run(scenario())
        assert "WRONGTYPE" in caplog.text and "Traceback" in caplog.text

    def test_a_bug_is_logged_right_after_an_outage_line(
        self, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The log throttle is per kind of error: a WRONGTYPE traceback a moment after an outage's line (an
        out-of-memory reply) is logged all the same, not dropped as a repeat within 5 s."""
        control = out_of_memory(own_redis)

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            assert (await limiter.acquire("fine", POLICY)).degraded  # the outage, logged
            control.config_set("maxmemory", 0)
            control.hset("rl:{wrong}:lim", "a", "b")
            assert (await limiter.acquire("wrong", POLICY)).degraded  # the bug, logged too
            await limiter.close()

        asyncio.run(scenario())
        assert "Redis failed" in caplog.text and "OutOfMemoryError" in caplog.text
        assert "WRONGTYPE" in caplog.text and "a bug, not an outage" in caplog.text

    def test_an_error_that_is_not_redis_own_is_a_bug_too(
        self, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception from the client that is no RedisError (redis-py's Cluster client raised one when it
        refused a pipelined EVALSHA) never reaches the handler: logged, counted, answered by the fallback."""

        async def scenario() -> None:
            limiter = limiter_on(own_redis)
            assert isinstance(limiter.primary, RedisBackend)

            def refuse(*args: object) -> object:
                raise redis.exceptions.RedisClusterException("ERROR: Calling pipelined function evalsha is blocked")

            monkeypatch.setattr(limiter.primary.pipeline, "call", refuse)
            decisions = [await limiter.acquire("k", POLICY) for _ in range(5)]
            assert all(d.allowed and d.degraded for d in decisions)
            assert limiter.breaker.state is BreakerState.CLOSED
            assert count(limiter, "rate_limit_errors_total") == 5
            await limiter.close()

        asyncio.run(scenario())
        assert "RedisClusterException" in caplog.text and "Traceback" in caplog.text

    def test_after_a_restart_no_round_trip_fails_on_a_stale_connection(self, own_redis: RedisProcess) -> None:
        """Connections pooled before Redis restarted are dropped when it is probed ready again (and when one
        fails): the crowds that follow are all decided by Redis, so the breaker that closed stays closed."""

        async def scenario() -> list[bool]:
            backend = RedisBackend.from_url(own_redis.url, timeout=0.5)
            policy = Policy(capacity=1e9, refill_rate=1e9, name="stale")
            for _ in range(3):  # several round trips in flight at once: several pooled connections
                await asyncio.gather(*(backend.acquire(f"k{i}", policy) for i in range(96)))
            own_redis.kill()
            own_redis.start()
            await backend.connect()  # what the breaker's probe does
            decided = []
            for _ in range(3):
                results = await asyncio.gather(
                    *(backend.acquire(f"k{i}", policy) for i in range(96)), return_exceptions=True
                )
                decided += [not isinstance(result, BaseException) for result in results]
            await backend.close()
            return decided

        assert all(asyncio.run(scenario()))

    @pytest.mark.parametrize(
        ("error", "outage"),
        [
            (redis.exceptions.ConnectionError("refused"), True),
            (redis.exceptions.TimeoutError("slow"), True),
            (redis.exceptions.ReadOnlyError("replica"), True),
            (redis.exceptions.BusyLoadingError("loading"), True),
            (redis.exceptions.ResponseError("BUSY Redis is busy running a script"), True),
            (redis.exceptions.ResponseError("MISCONF Errors writing to disk"), True),
            (redis.exceptions.ResponseError("ERR Error running script: attempt to compare nil"), False),
            (redis.exceptions.DataError("bad argument"), False),
            (TimeoutError(), True),
            (ConnectionResetError(), True),
            # Configured so that the script can never run: nothing a retry of the same call would change.
            (redis.exceptions.ResponseError("The user executing the script can't run this command"), True),
            (redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' command"), True),
            (redis.exceptions.ResponseError("unknown command 'EVALSHA', with args beginning with: "), True),
            (redis.exceptions.ResponseError("DB index is out of range"), True),
            (redis.exceptions.InvalidResponse('Protocol error, got "H" as reply type byte'), True),
            (redis.exceptions.RedisClusterException("Redis Cluster cannot be connected. Please provide..."), True),
            (redis.exceptions.RedisClusterException("ERROR: Calling pipelined function evalsha is blocked"), False),
        ],
    )
    def test_classification(self, error: Exception, outage: bool) -> None:
        """Replies meaning 'cannot serve now' are outages; errors of the call itself are not."""
        assert is_unavailable(error) == outage


class TestProbe:
    def test_the_probe_never_holds_a_request_and_a_cancelled_one_frees_its_turn(self, own_redis: RedisProcess) -> None:
        """Half-open with Redis frozen: the request that starts the probe is answered at once (degraded);
        the probe, cancelled while it waits, does not leave the breaker stuck: the next request probes,
        and once Redis answers the breaker closes."""
        clock = [0.0]
        breaker = CircuitBreaker(FAST_BREAKER, clock=lambda: clock[0], rng=random.Random(0))
        limiter = RateLimiter(RedisBackend.from_url(own_redis.url, timeout=2.0), breaker=breaker)

        async def scenario() -> None:
            own_redis.kill()
            for _ in range(3):
                await limiter.acquire("k", POLICY)
            own_redis.start()
            own_redis.freeze()
            clock[0] += 1.0  # past the cool-down
            started = asyncio.get_running_loop().time()
            assert (await limiter.acquire("k", POLICY)).degraded
            assert asyncio.get_running_loop().time() - started < 0.05  # not held by the probe
            probe = limiter._probe
            assert probe is not None and not probe.done()  # waiting on the frozen Redis
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            own_redis.thaw()
            assert (await limiter.acquire("k", POLICY)).degraded  # starts a new probe: the turn was freed
            await closed_within(breaker, 2.0)
            assert not (await limiter.acquire("k", POLICY)).degraded
            await limiter.close()

        asyncio.run(scenario())
