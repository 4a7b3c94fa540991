"""Several limits on one request (limiter/verdict.py): all or nothing, on both backends exactly as the
composition of the single-limit models, in one round trip, on one server and on a Cluster."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import BackendDriver
from tests.redis_process import RedisProcess
from tests.test_limiter import FAST_BREAKER
from tests.test_window_models import limits, starts, windows
from tornado_rate_limiter.limiter import (
    BreakerState,
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
from tornado_rate_limiter.limiter.verdict import Charge, Verdict, compose

T0 = 1_764_000_000.0

rates = st.sampled_from([0.25, 0.5, 1.0, 2.0, 8.0])


@st.composite
def a_policy(draw: st.DrawFn, name: str) -> AnyPolicy:
    kind = draw(st.sampled_from(["token_bucket", "fixed_window", "sliding_window"]))
    if kind == "token_bucket":
        return TokenBucket(draw(limits), draw(rates), name=name)
    window_kind = FixedWindow if kind == "fixed_window" else SlidingWindow
    return window_kind(draw(limits), draw(windows), name=name)


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[tuple[AnyPolicy, bool]], float, list[tuple[float, int]]]:
    """1-3 limits (each enforced or shadow) on one key, a start, and requests: (seconds later, quarters)."""
    count = draw(st.integers(1, 3))
    shapes = [(draw(a_policy(f"p{i}")), draw(st.booleans()) or i == 0) for i in range(count)]
    steps = draw(st.lists(st.tuples(st.integers(-8, 40).map(lambda e: e / 8), st.integers(1, 12)), max_size=40))
    return shapes, draw(starts), steps


def charges_for(key: str, shapes: list[tuple[AnyPolicy, bool]], quarters: int) -> list[Charge]:
    """One request's charges: its cost (in quarters) capped at each limit's quota."""
    return [
        Charge(key, policy, min(quarters / 4, algorithm_for(policy).quota(policy)), enforced)
        for policy, enforced in shapes
    ]


@given(scenario=requests())
def test_both_backends_decide_as_the_composed_models(redis_backend: BackendDriver, scenario: Any) -> None:
    """Invariant: for any sequence of requests with several limits on one key, LocalBackend and
    RedisBackend give exactly the Verdict of the single-limit models composed: admitted iff every
    enforced limit allows; then every allowing limit is charged, else none (a denied request leaves every
    state as it was)."""
    shapes, start, steps = scenario
    key, local = redis_backend.fresh_key(), LocalBackend()
    backend = redis_backend.backend
    assert isinstance(backend, RedisBackend)
    states: list[Any] = [None] * len(shapes)
    now = start
    for delta, quarters in steps:
        now = max(0.0, now + delta)
        charges = charges_for(key, shapes, quarters)
        expected, states = compose(charges, states, now)
        assert local.acquire_all_now(charges, now) == expected
        assert redis_backend.run(backend.acquire_all(charges, now)) == expected


@given(policy=a_policy("solo"), start=starts, steps=st.lists(st.integers(0, 40).map(lambda e: e / 8), max_size=30))
def test_one_limit_composed_is_the_single_limit_model(policy: AnyPolicy, start: float, steps: list[float]) -> None:
    """Invariant: composing one enforced limit gives exactly the single-limit model's Decision and state."""
    algorithm = algorithm_for(policy)
    cost = min(1.0, algorithm.quota(policy))
    single: Any = None
    composed: list[Any] = [None]
    now = start
    for delta in steps:
        now += delta
        verdict, composed = compose([Charge("k", policy, cost)], composed, now)
        allowed, kept = algorithm.take(single, now, policy, cost)
        assert verdict.allowed == allowed and verdict.charged == (allowed,)
        assert verdict.decisions == (algorithm.decide(allowed, kept, now, policy, cost),)
        single = kept
        assert composed[0] == single


class TestOnRedis:
    def test_a_daily_limit_that_denies_leaves_the_burst_untouched_in_redis(self, redis_server: RedisProcess) -> None:
        """burst (token bucket) and daily (fixed window of 2): the third request is denied by daily, and
        burst's value in Redis is byte for byte what it was; a shadow limit denying changes nothing."""
        burst, daily = TokenBucket(10, 0.001, name="burst"), FixedWindow(2, 86_400, name="daily")
        shadow = SlidingWindow(1, 60, name="trial")
        key = f"ip:{uuid.uuid4().hex}"

        async def scenario() -> tuple[list[Verdict], Any, Any, int]:
            backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
            charges = [Charge(key, burst), Charge(key, daily), Charge(key, shadow, enforced=False)]
            verdicts = [await backend.acquire_all(charges, now=T0) for _ in range(2)]
            before = await backend.client.get(backend.redis_key(key, burst))
            trips = backend.pipeline.round_trips
            verdicts.append(await backend.acquire_all(charges, now=T0))
            trips = backend.pipeline.round_trips - trips
            after = await backend.client.get(backend.redis_key(key, burst))
            await backend.close()
            return verdicts, before, after, trips

        verdicts, before, after, trips = asyncio.run(scenario())
        assert [v.allowed for v in verdicts] == [True, True, False]
        assert verdicts[1].charged == (True, True, False)  # the shadow limit denied: not charged, no effect
        assert verdicts[2].charged == (False, False, False) and before == after
        assert [d.allowed for d in verdicts[2].decisions] == [True, False, False]
        assert verdicts[2].decisions[0].retry_after == 0 and verdicts[2].decisions[0].remaining == 8
        assert trips == 1

    def test_one_policy_twice_on_one_key_is_refused(self, redis_server: RedisProcess) -> None:
        """The same policy name twice for one key cannot be charged twice atomically: ValueError, named."""
        policy = TokenBucket(5, 1, name="twice")
        with pytest.raises(ValueError, match="charged twice"):
            LocalBackend().acquire_all_now([Charge("k", policy), Charge("k", policy)])


class TestThroughTheLimiter:
    """RateLimiter.acquire_all: the breaker, the failure strategies and the metrics, as for one limit."""

    @staticmethod
    def limiter(server: RedisProcess, **options: object) -> RateLimiter:
        breaker = CircuitBreaker(FAST_BREAKER, rng=random.Random(0))
        backend = RedisBackend.from_url(server.url, timeout=0.2)
        return RateLimiter(backend, breaker=breaker, metrics=LimiterMetrics(), **options)  # type: ignore[arg-type]

    CHARGES = (
        Charge("ip:k", TokenBucket(8, 0.001, name="t-burst")),
        Charge("ip:k", FixedWindow(4, 86_400 * 365, name="t-daily")),
    )

    def test_fail_open_decides_all_or_nothing_in_memory_with_the_share(self) -> None:
        """Redis killed: verdicts come from the fallback, degraded, each limit scaled by the share (daily
        4 * 0.5 = 2 requests, and the burst left untouched by the denied third); after 3 failures the
        breaker stops calling Redis; each request is one decision in the metrics."""
        server = RedisProcess().start()

        async def scenario(limiter: RateLimiter) -> list[Verdict]:
            assert not (await limiter.acquire_all(self.CHARGES)).degraded  # Redis answers
            server.kill()
            verdicts = [await limiter.acquire_all(self.CHARGES) for _ in range(4)]
            await limiter.close()
            return verdicts

        try:
            limiter = self.limiter(server, fallback_share=0.5)
            verdicts = asyncio.run(scenario(limiter))
        finally:
            server.stop()
        assert [(v.allowed, v.degraded) for v in verdicts] == [(True, True)] * 2 + [(False, True)] * 2
        assert all(d.degraded for v in verdicts for d in v.decisions)
        # 8 scaled to 4, 2 taken, none by the denied ones (and the refill of the few ms the test took)
        assert round(verdicts[2].decisions[0].remaining, 3) == 2.0
        assert limiter.breaker.state is BreakerState.OPEN
        assert limiter.metrics.registry.get_sample_value("rate_limit_errors_total") == 3
        assert limiter.metrics.registry.get_sample_value("rate_limit_degraded_total") == 4
        assert limiter.metrics.registry.get_sample_value("rate_limit_allowed_total", {"identity": "ip"}) == 3

    def test_fail_closed_denies_every_limit(self) -> None:
        """Fail-closed without Redis: the request is denied, every limit degraded, nothing charged."""
        server = RedisProcess().start()
        server.stop()

        async def scenario() -> Verdict:
            limiter = self.limiter(server, failure_strategy="closed")
            verdict = await limiter.acquire_all(self.CHARGES)
            await limiter.close()
            return verdict

        verdict = asyncio.run(scenario())
        assert not verdict.allowed and verdict.degraded and verdict.charged == (False, False)
        assert all(not d.allowed and d.degraded and d.retry_after >= 1 for d in verdict.decisions)

    def test_fail_closed_lets_shadow_limits_alone_pass_and_counts_them_as_nothing(self) -> None:
        """Fail-closed without Redis, a request with shadow limits only: admitted (shadow limits never
        deny), counted allowed, and no shadow denial is counted, since no limit was asked."""
        server = RedisProcess().start()
        server.stop()
        shadow_only = [charge._replace(enforced=False) for charge in self.CHARGES]

        async def scenario() -> tuple[Verdict, RateLimiter]:
            limiter = self.limiter(server, failure_strategy="closed")
            verdict = await limiter.acquire_all(shadow_only)
            await limiter.close()
            return verdict, limiter

        verdict, limiter = asyncio.run(scenario())
        assert verdict.allowed and verdict.degraded and verdict.charged == (False, False)
        registry = limiter.metrics.registry
        assert registry.get_sample_value("rate_limit_allowed_total", {"identity": "ip"}) == 1
        assert registry.get_sample_value("rate_limit_blocked_total", {"identity": "ip"}) == 0
        assert registry.get_sample_value("rate_limit_shadow_blocked_total", {"policy": "t-burst"}) is None
