"""The window algorithms on both backends, through the same API the token bucket uses: each backend decides
exactly as the model, calls of every algorithm share the auto-pipeline's round trips, and the cache of
denials, the fallback share and fail-closed work for windows as for buckets."""

from __future__ import annotations

import asyncio
import math
import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import BackendDriver
from tests.redis_process import RedisProcess
from tests.test_limiter import FAST_BREAKER
from tests.test_window_models import MODELS, limits, run, starts, window_steps, windows
from tornado_rate_limiter.limiter import (
    CircuitBreaker,
    FixedWindow,
    LimiterMetrics,
    LocalBackend,
    RateLimiter,
    RedisBackend,
    SlidingWindow,
    TokenBucket,
)
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.over_limit import OverLimitCache

T0 = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC: a multiple of 3600, so hours start at T0
WindowKind = type[FixedWindow] | type[SlidingWindow]
WINDOW_KINDS: list[WindowKind] = [FixedWindow, SlidingWindow]
KINDS_BY_MODEL: dict[str, WindowKind] = {"fixed": FixedWindow, "sliding": SlidingWindow}


@pytest.mark.parametrize("name", MODELS)
@given(data=st.data(), limit=limits, window=windows, start=starts)
def test_both_backends_decide_as_the_model(
    redis_backend: BackendDriver, name: str, data: st.DataObject, limit: float, window: float, start: float
) -> None:
    """Invariant: for any sequence of requests on one key (dyadic times and costs, the clock sometimes
    going back), LocalBackend and RedisBackend return exactly the model's Decision at every step."""
    policy = KINDS_BY_MODEL[name](limit, window, name="prop")
    local, key = LocalBackend(), redis_backend.fresh_key()
    for step in run(name, limit, window, start, data.draw(window_steps(window), label="requests")):
        assert local.acquire_now(key, policy, step.cost, step.now) == step.decision
        assert redis_backend.acquire(key, policy, step.cost, step.now) == step.decision


@pytest.mark.parametrize("kind", WINDOW_KINDS)
@given(data=st.data(), limit=limits, window=windows)
def test_a_cached_denial_is_the_denial_redis_gives(
    redis_backend: BackendDriver, kind: WindowKind, data: st.DataObject, limit: float, window: float
) -> None:
    """Invariant: after Redis denies a window key at t0, for any later t1 and cost the cache of denials
    answers either nothing (and then Redis allows) or exactly the Decision Redis gives at t1."""
    backend = redis_backend.backend
    assert isinstance(backend, RedisBackend)
    policy, key = kind(limit, window, name="prop"), redis_backend.fresh_key()
    t0 = T0 + data.draw(st.integers(0, 64), label="eighths into the window") / 8 % window
    redis_backend.acquire(key, policy, limit, t0)  # the whole quota
    cost = data.draw(st.integers(1, 80).map(lambda quarters: min(limit, quarters / 4)), label="cost at t0")
    if redis_backend.acquire(key, policy, cost, t0).allowed:
        return  # the sliding window's earlier windows weighed less than the cost: nothing to cache
    stored = redis_backend.run(backend.client.get(backend.redis_key(key, policy)))
    assert isinstance(stored, bytes)
    _, state, _ = algorithm_for(policy).parse_reply([0, *stored.split()[1:], "0"])  # after its tag
    cache = OverLimitCache()
    cache.remember(backend.redis_key(key, policy), policy, state, t0, asked_at=0.0)
    t1 = t0 + data.draw(st.integers(0, 24), label="eighths of a window later") / 8 * window
    later_cost = data.draw(st.integers(1, 80).map(lambda quarters: min(limit, quarters / 4)), label="cost at t1")
    cached = cache.denial(backend.redis_key(key, policy), policy, later_cost, redis_now=t1)
    from_redis = redis_backend.run(backend.acquire_from_redis(key, policy, later_cost, t1))
    if cached is None:
        assert from_redis.allowed
    else:
        assert cached == from_redis


class TestOnRedis:
    def test_every_algorithm_shares_one_round_trip_and_decides_as_the_model(self, redis_server: RedisProcess) -> None:
        """Calls of the three algorithms made in one loop turn go in one round trip, and each key decides
        as its model does when its calls come one at a time."""
        policies: list[AnyPolicy] = [
            TokenBucket(3, 1.0, name="mix-bucket"),
            FixedWindow(3, 60, name="mix-fixed"),
            SlidingWindow(3, 60, name="mix-sliding"),
        ]
        prefix = uuid.uuid4().hex
        calls = [(policy, f"{prefix}:{policy.name}") for policy in policies for _ in range(5)]

        async def scenario() -> tuple[int, list[bool]]:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            await backend.connect()
            before = backend.pipeline.round_trips
            decisions = await asyncio.gather(*(backend.acquire(key, policy, 1, T0) for policy, key in calls))
            trips = backend.pipeline.round_trips - before
            await backend.close()
            return trips, [decision.allowed for decision in decisions]

        trips, allowed = asyncio.run(scenario())
        assert trips == 1
        local = LocalBackend()
        assert allowed == [local.acquire_now(key, policy, 1, T0).allowed for policy, key in calls]
        assert allowed == [True, True, True, False, False] * 3

    @pytest.mark.parametrize("kind", WINDOW_KINDS)
    def test_a_crowd_on_one_key_gets_exactly_the_limit(self, redis_server: RedisProcess, kind: WindowKind) -> None:
        """64 concurrent callers on one key of limit 10 on Redis's clock: exactly 10 are allowed."""
        policy = kind(10, 86_400 * 365, name="crowd")  # a window no test run crosses the end of

        async def scenario() -> list[bool]:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            key = uuid.uuid4().hex
            decisions = await asyncio.gather(*(backend.acquire(key, policy) for _ in range(64)))
            await backend.close()
            return [decision.allowed for decision in decisions]

        assert sum(asyncio.run(scenario())) == 10

    @pytest.mark.parametrize("kind", WINDOW_KINDS)
    def test_a_denied_window_is_denied_without_a_round_trip(self, redis_server: RedisProcess, kind: WindowKind) -> None:
        """On Redis's clock, once a window key is denied the next denials need no round trip, with a
        retry_after no longer than Redis's (the window cannot free quota before then)."""

        async def scenario() -> None:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            policy, key = kind(4, 86_400 * 365, name="cached"), uuid.uuid4().hex
            assert (await backend.acquire(key, policy, cost=4)).allowed
            from_redis = await backend.acquire(key, policy)
            assert not from_redis.allowed
            trips = backend.pipeline.round_trips
            cached = await backend.acquire(key, policy)
            assert backend.pipeline.round_trips == trips
            assert not cached.allowed and cached.retry_after <= from_redis.retry_after
            await backend.close()

        asyncio.run(scenario())

    def test_a_key_another_algorithm_wrote_reads_as_fresh(self, redis_server: RedisProcess) -> None:
        """A policy whose algorithm changed under the same name (a deploy): the other algorithm's value reads
        as a fresh key, never as counts. A bucket's "999 <stamp>" once read as window 999 holding ~1.8e9,
        denying the client for years (and the cache of denials kept it)."""
        same_key = "ip:203.0.113.9"
        shapes: list[AnyPolicy] = [
            TokenBucket(1000, 1.0, name="changed"),
            FixedWindow(1000, 30 * 86_400, name="changed"),
            SlidingWindow(1000, 30 * 86_400, name="changed"),
        ]

        async def scenario() -> list[float]:
            backend = RedisBackend.from_url(redis_server.url, key_prefix=f"{uuid.uuid4().hex}:", timeout=2.0)
            remaining = []
            for before in shapes:
                for after in shapes:
                    if after is before:
                        continue
                    await backend.client.delete(backend.redis_key(same_key, before))
                    await backend.acquire(same_key, before, cost=1)
                    remaining.append((await backend.acquire(same_key, after, cost=1)).remaining)
            await backend.close()
            return remaining

        assert asyncio.run(scenario()) == [999.0] * 6


class TestWithoutRedis:
    @pytest.fixture
    def dead_redis(self) -> str:
        """The URL of a Redis that was started and killed: its port refuses connections."""
        server = RedisProcess().start()
        url = server.url
        server.stop()
        return url

    def limiter(self, url: str, **options: object) -> RateLimiter:
        breaker = CircuitBreaker(FAST_BREAKER, rng=random.Random(0))
        backend = RedisBackend.from_url(url, timeout=0.2)
        return RateLimiter(backend, breaker=breaker, metrics=LimiterMetrics(), **options)  # type: ignore[arg-type]

    @pytest.mark.parametrize("kind", WINDOW_KINDS)
    def test_the_fallback_share_scales_a_window_limit(self, dead_redis: str, kind: WindowKind) -> None:
        """Fail-open with a share of 0.25: a window of limit 20 admits 5 per process, degraded."""

        async def scenario() -> list[tuple[bool, bool]]:
            limiter = self.limiter(dead_redis, fallback_share=0.25)
            policy = kind(20, 86_400 * 365, name="share")
            decisions = [await limiter.acquire("k", policy) for _ in range(7)]
            await limiter.close()
            return [(decision.allowed, decision.degraded) for decision in decisions]

        assert asyncio.run(scenario()) == [(True, True)] * 5 + [(False, True)] * 2

    @pytest.mark.parametrize("kind", WINDOW_KINDS)
    def test_a_scaled_limit_below_the_cost_still_admits_the_cost(self, dead_redis: str, kind: WindowKind) -> None:
        """A share that scales the limit below one request's cost admits that one request, not none."""

        async def scenario() -> list[bool]:
            limiter = self.limiter(dead_redis, fallback_share=0.01)
            policy = kind(10, 86_400 * 365, name="tiny-share")
            decisions = [await limiter.acquire("k", policy, cost=2) for _ in range(2)]
            await limiter.close()
            return [decision.allowed for decision in decisions]

        assert asyncio.run(scenario()) == [True, False]

    @pytest.mark.parametrize("kind", WINDOW_KINDS)
    def test_fail_closed_names_the_window_limit(self, dead_redis: str, kind: WindowKind) -> None:
        """Fail-closed: denied and degraded, with the window's limit and its length as the reset."""

        async def scenario() -> None:
            limiter = self.limiter(dead_redis, failure_strategy="closed")
            decision = await limiter.acquire("k", kind(30, 120, name="closed"))
            assert not decision.allowed and decision.degraded
            assert (decision.limit, decision.reset_after) == (30, 120)
            assert decision.retry_after >= 1
            await limiter.close()

        asyncio.run(scenario())


def test_a_policy_name_shared_by_two_algorithms_holds_one_state_in_memory() -> None:
    """A bucket and a window both named "x" never read each other's state; as on Redis (one key per name),
    the one charged last holds the key, and the other starts it fresh (issue 25: it used to keep both)."""
    local = LocalBackend()
    bucket, window = TokenBucket(2, 1.0, name="x"), FixedWindow(2, 60, name="x")
    assert [local.acquire_now("k", bucket, 1, T0).allowed for _ in range(3)] == [True, True, False]
    assert [local.acquire_now("k", window, 1, T0).allowed for _ in range(3)] == [True, True, False]
    assert math.isclose(local.acquire_now("k", bucket, 1, T0 + 1).remaining, 1.0)
