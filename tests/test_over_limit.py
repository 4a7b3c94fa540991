"""The cache of denials: a key Redis found empty is denied locally, exactly as Redis would deny it."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import BackendDriver
from tests.redis_process import RedisProcess
from tests.strategies import costs, policies
from tests.test_limiter import FAST_BREAKER
from tornado_rate_limiter.limiter import BreakerState, CircuitBreaker, LimiterMetrics, Policy, RateLimiter, RedisBackend
from tornado_rate_limiter.limiter.bucket import BucketState
from tornado_rate_limiter.limiter.over_limit import OverLimitCache

T0 = 1_764_000_000.0


class TestExactness:
    @given(data=st.data(), policy=policies)
    def test_a_cached_denial_is_the_denial_redis_gives(
        self, redis_backend: BackendDriver, data: st.DataObject, policy: Policy
    ) -> None:
        """Invariant: after Redis denies a key at t0, for any later time t1 and cost the cache answers
        either nothing (and then Redis allows) or exactly the Decision Redis gives at t1."""
        backend = redis_backend.backend
        assert isinstance(backend, RedisBackend)
        key = redis_backend.fresh_key()
        redis_backend.acquire(key, policy, policy.capacity, T0)  # drained
        first_cost = data.draw(costs(policy), label="cost at t0")
        denied = redis_backend.acquire(key, policy, first_cost, T0)
        if denied.allowed:  # a cost so small that the float sum still held it: nothing to cache
            return
        state = BucketState(*map(float, redis_backend.run(backend.client.get(backend.redis_key(key, policy))).split()))
        cache = OverLimitCache()
        cache.remember(backend.redis_key(key, policy), policy, state, T0, asked_at=0.0)
        t1 = T0 + data.draw(st.floats(0.0, 3.0), label="fills later") * policy.fill_time
        cost = data.draw(costs(policy), label="cost at t1")
        cached = cache.denial(backend.redis_key(key, policy), policy, cost, redis_now=t1)
        from_redis = redis_backend.run(backend.acquire_from_redis(key, policy, cost, t1))
        if cached is None:
            assert from_redis.allowed
        else:
            assert cached == from_redis


class TestOnRedisClock:
    def test_a_drained_key_is_denied_without_a_round_trip_until_it_may_refill(self, redis_server: RedisProcess) -> None:
        """Once Redis denies, the key is denied locally (no round trip, a retry_after no longer than
        Redis's); once a token may be back, Redis is asked again and allows."""

        async def scenario() -> None:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            policy = Policy(capacity=2, refill_rate=5, name="drain")  # a token every 0.2 s
            await backend.acquire("k", policy, cost=2)
            from_redis = await backend.acquire("k", policy)
            assert not from_redis.allowed
            trips = backend.pipeline.round_trips
            cached = await backend.acquire("k", policy)
            assert backend.pipeline.round_trips == trips
            assert not cached.allowed and 0 < cached.retry_after <= from_redis.retry_after
            assert cached.remaining >= from_redis.remaining
            await asyncio.sleep(from_redis.retry_after + 0.05)
            assert (await backend.acquire("k", policy)).allowed
            assert backend.pipeline.round_trips == trips + 1
            await backend.close()

        asyncio.run(scenario())

    def test_explicit_times_are_never_cached(self, redis_server: RedisProcess) -> None:
        """A caller's own clock is not Redis's: with now given, every call goes to Redis."""

        async def scenario() -> int:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            policy = Policy(capacity=1, refill_rate=0.001, name="explicit")
            trips = backend.pipeline.round_trips
            for _ in range(5):
                await backend.acquire("k", policy, now=T0)
            await backend.close()
            return backend.pipeline.round_trips - trips

        assert asyncio.run(scenario()) == 5

    def test_a_redefined_policy_asks_redis(self) -> None:
        """A denial is only reused for the same policy: a bigger bucket under the same name asks again."""
        cache = OverLimitCache(clock=lambda: 0.0)
        small = Policy(capacity=1, refill_rate=0.001, name="p")
        cache.remember("rl:p:k", small, BucketState(0.0, T0), T0, asked_at=0.0)
        assert cache.denial("rl:p:k", Policy(capacity=1, refill_rate=0.001, name="p"), 1) is not None
        assert cache.denial("rl:p:k", Policy(capacity=5, refill_rate=0.001, name="p"), 1) is None

    def test_is_bounded(self) -> None:
        """At most max_keys denials are kept, the oldest forgotten first."""
        cache = OverLimitCache(max_keys=3, clock=lambda: 0.0)
        policy = Policy(capacity=1, refill_rate=0.001, name="p")
        for number in range(10):
            cache.remember(f"k{number}", policy, BucketState(0.0, T0), T0, asked_at=0.0)
        assert len(cache) == 3
        assert cache.denial("k9", policy, 1) is not None and cache.denial("k0", policy, 1) is None


class TestWithTheBreaker:
    def test_known_denials_hold_through_an_outage_and_do_not_count_as_redis_answering(self) -> None:
        """Redis killed: a key it had denied is still denied exactly (not degraded), other keys fall back,
        and the cached answers neither reach Redis nor keep the breaker from opening."""
        server = RedisProcess().start()

        async def scenario() -> None:
            backend = RedisBackend.from_url(server.url, timeout=0.2)
            breaker = CircuitBreaker(FAST_BREAKER, rng=random.Random(0))
            limiter = RateLimiter(backend, breaker=breaker, metrics=LimiterMetrics())
            policy = Policy(capacity=1, refill_rate=0.01, name="outage")
            await limiter.acquire("abuser", policy)
            assert not (await limiter.acquire("abuser", policy)).allowed
            server.kill()
            for _ in range(20):
                hit = await limiter.acquire("abuser", policy)
                assert not hit.allowed and not hit.degraded
                other = await limiter.acquire("someone", policy)
                assert other.degraded
            assert breaker.state is BreakerState.OPEN
            await limiter.close()

        try:
            asyncio.run(scenario())
        finally:
            server.stop()


def test_the_estimate_of_redis_time_moves_with_the_cache_clock() -> None:
    """Redis's time is estimated from the cache's (monotonic) clock: read 0.25 s and 0.5 s after the call,
    a cached denial's retry_after is shorter by exactly that time (a frozen estimate would keep it)."""
    clock = [100.0]
    cache = OverLimitCache(clock=lambda: clock[0])
    policy = Policy(capacity=1, refill_rate=1, name="p")
    cache.remember("k", policy, BucketState(0.0, T0), T0, asked_at=100.0)
    first = cache.denial("k", policy, 1)
    clock[0] += 0.25
    second = cache.denial("k", policy, 1)
    clock[0] += 0.25
    third = cache.denial("k", policy, 1)
    assert first is not None and second is not None and third is not None
    assert (first.retry_after, second.retry_after, third.retry_after) == (1.0, 0.75, 0.5)
