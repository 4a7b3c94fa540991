"""Our three algorithms against the peers' nearest ones, on one Redis: decisions per second, bytes per key
and exactness (what each admits in a fixed scenario against what its own definition allows); and a
request with three limits (a policy file's burst, daily and hourly) against one with one.

Throughput as in bench/library.py: 64 concurrent asyncio callers over 10,000 keys, limits so high that
every decision is allowed. Exactness runs in real time (the peers read their own clocks): every limiter
gets the same requests at the same moments, and each one's admitted count is set beside its definition
applied to the moments the requests were sent.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any, NamedTuple

import limits
import limits.aio.storage
import limits.aio.strategies
import redis.asyncio
from throttled.asyncio import Throttled
from throttled.asyncio import store as throttled_store
from throttled.asyncio.rate_limiter import Quota, per_duration

from bench.library import (
    CALLERS,
    HIGH,
    REDIS_TIMEOUT,
    AsyncBatch,
    RedisPeer,
    Row,
    attempt,
    limits_redis,
    local_batch,
    ours_redis_deciding,
    ours_redis_with,
    time_batches,
    time_callers,
)
from tornado_rate_limiter.limiter import (
    Charge,
    FixedWindow,
    LocalBackend,
    RedisBackend,
    SlidingWindow,
    TokenBucket,
    bucket,
)
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, fixed_window, sliding_window
from tornado_rate_limiter.limiter.algorithms.window import WindowState

HOUR = 3600
# Every decision allowed: a token bucket of 1e9 refilled at 1e9/s, windows of 1e9 per hour.
OURS: dict[str, AnyPolicy] = {
    "token_bucket": TokenBucket(HIGH, HIGH, name="bench"),
    "fixed_window": FixedWindow(HIGH, HOUR, name="bench-fixed"),
    "sliding_window": SlidingWindow(HIGH, HOUR, name="bench-sliding"),
}
# For bytes per key: shapes under which no key is fresh again (so none expires) during the run.
KEPT: dict[str, AnyPolicy] = {
    "token_bucket": TokenBucket(10, 0.001, name="mem"),
    "fixed_window": FixedWindow(10, HOUR, name="mem-fixed"),
    "sliding_window": SlidingWindow(10, HOUR, name="mem-sliding"),
}


# --- throughput ---------------------------------------------------------------------------------------


def throttled_redis(using: str, quota: Quota) -> RedisPeer:
    @asynccontextmanager
    async def peer(url: str) -> AsyncIterator[AsyncBatch]:
        limiter = Throttled(using=using, quota=quota, store=throttled_store.RedisStore(server=url, options={}))

        async def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += not (await limiter.limit(key, cost=1)).limited
            return allowed

        yield batch

    return peer


_LIMITS_HIGH = limits.RateLimitItemPerHour(HIGH)
_THROTTLED_HIGH = per_duration(timedelta(hours=1), limit=HIGH, burst=HIGH)


class Peer(NamedTuple):
    id: str
    label: str
    peer: RedisPeer


REDIS_ROWS = [
    *(
        Peer(f"ours_{name}", f"ours: {name} (RedisBackend.acquire)", ours_redis_with(policy))
        for name, policy in OURS.items()
    ),
    Peer(
        "limits_fixed",
        "limits: async FixedWindowRateLimiter",
        limits_redis(limits.aio.strategies.FixedWindowRateLimiter, _LIMITS_HIGH),
    ),
    Peer(
        "limits_sliding",
        "limits: async SlidingWindowCounterRateLimiter",
        limits_redis(limits.aio.strategies.SlidingWindowCounterRateLimiter, _LIMITS_HIGH),
    ),
    Peer(
        "limits_moving",
        "limits: async MovingWindowRateLimiter",
        limits_redis(limits.aio.strategies.MovingWindowRateLimiter, _LIMITS_HIGH),
    ),
    *(
        Peer(f"throttled_{using}", f"throttled-py: asyncio {using}", throttled_redis(using, _THROTTLED_HIGH))
        for using in ("token_bucket", "gcra", "sliding_window", "fixed_window")
    ),
]


def time_peer(peer: RedisPeer, url: str, seconds: float) -> list[tuple[int, int, float]]:
    async def run() -> list[tuple[int, int, float]]:
        async with peer(url) as batch:
            return await time_callers(batch, CALLERS, 1, seconds)

    return asyncio.run(run())


def time_local(policy: AnyPolicy, seconds: float) -> list[tuple[int, int, float]]:
    return time_batches(local_batch(policy), seconds)


# --- several limits per request ------------------------------------------------------------------------

THREE_LIMITS = (OURS["token_bucket"], OURS["fixed_window"], OURS["sliding_window"])
SEVERAL_ROWS = (
    ("one_limit", "one limit: RedisBackend.acquire (token bucket)", None),
    ("one_limit_all", "one limit: RedisBackend.acquire_all", THREE_LIMITS[:1]),
    ("three_limits", "three limits: acquire_all (token bucket, fixed window, sliding window)", THREE_LIMITS),
)
SCRIPT_CALLS_SAMPLE = 2000  # requests whose script calls are counted in Redis's commandstats


def several_limits_peer(policies: Sequence[AnyPolicy] | None) -> RedisPeer:
    """A request per key: ``acquire`` of the token bucket (None), or ``acquire_all`` of ``policies``."""
    if policies is None:
        return ours_redis_with(OURS["token_bucket"])

    async def decide(backend: RedisBackend, key: str) -> bool:
        return (await backend.acquire_all([Charge(key, policy) for policy in policies])).allowed

    return ours_redis_deciding(decide)


async def script_calls_per_request(url: str, peer: RedisPeer) -> tuple[float, float]:
    """EVALSHA and EVAL calls Redis counted (INFO commandstats), and the microseconds Redis spent in them,
    per request, over a sample of requests made by 64 concurrent callers."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.config_resetstat()
        async with peer(url) as batch:
            share = SCRIPT_CALLS_SAMPLE // CALLERS
            keys = [f"ip:10.9.{i >> 8}.{i & 255}" for i in range(share * CALLERS)]
            await asyncio.gather(*(batch(keys[i * share : (i + 1) * share]) for i in range(CALLERS)))
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    scripts = [stats.get(f"cmdstat_{name}", {}) for name in ("evalsha", "eval")]
    requests = share * CALLERS
    return sum(float(s.get("calls", 0)) for s in scripts) / requests, sum(
        float(s.get("usec", 0)) for s in scripts
    ) / requests


def run_several_limits(url: str, seconds: float, flush: Callable[[], object]) -> list[Row]:
    rows = []
    for row_id, label, policies in SEVERAL_ROWS:
        flush()
        peer = several_limits_peer(policies)
        row = attempt(row_id, label, partial(time_peer, peer, url, seconds))
        if "error" not in row:
            flush()
            calls, redis_us = asyncio.run(script_calls_per_request(url, peer))
            row["script_calls_per_request"], row["redis_us_per_request"] = calls, redis_us
        rows.append(row)
    return rows


# --- bytes per key --------------------------------------------------------------------------------------


def local_bytes_per_key(policy: AnyPolicy, keys: int) -> float:
    """tracemalloc's traced memory after minus before one decision on each of ``keys`` new keys."""
    backend = LocalBackend(max_keys=keys * 2)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(keys):
        backend.acquire_now(f"ip:10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", policy)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(backend) == keys
    return (after - before) / keys


async def redis_bytes_per_key(url: str, policy: AnyPolicy, keys: int) -> float:
    """``INFO memory`` used_memory after minus before one decision on each of ``keys`` new keys."""
    backend = RedisBackend.from_url(url, timeout=REDIS_TIMEOUT)
    client = redis.asyncio.Redis.from_url(url)
    try:
        before = (await client.info("memory"))["used_memory"]
        names = (f"ip:10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(keys))

        async def caller() -> None:
            for name in names:  # one generator shared: each key once
                await backend.acquire(name, policy)

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        assert await client.dbsize() == keys
        after = (await client.info("memory"))["used_memory"]
        return float(after - before) / keys
    finally:
        await backend.close()
        await client.aclose()


# --- exactness ------------------------------------------------------------------------------------------
# Each definition: the number of requests it admits, sent at ``times`` (seconds), one unit each.
Definition = Callable[[Sequence[float]], int]


def token_bucket_admits(capacity: float, rate: float) -> Definition:
    def admits(times: Sequence[float]) -> int:
        policy, state, count = TokenBucket(capacity, rate), None, 0
        for now in times:
            allowed, state = bucket.take(state, now, policy, 1.0)
            count += allowed
        return count

    return admits


def window_admits(model: Any, kind: type, limit: float, window: float, anchored: bool = False) -> Definition:
    """The window model over the times; ``anchored``: windows start at the first request, not at the epoch."""

    def admits(times: Sequence[float]) -> int:
        policy, count = kind(limit, window), 0
        state: WindowState | None = None
        origin = times[0] if anchored and times else 0.0
        for now in times:
            allowed, state = model.take(state, now - origin, policy, 1.0)
            count += allowed
        return count

    return admits


def expiring_counter_admits(limit: int, window: float) -> Definition:
    """A counter that lives ``window`` seconds from the hit that created it (limits' fixed window: INCR,
    and EXPIRE on creation): at most ``limit`` per life; the first hit after it expired starts another."""

    def admits(times: Sequence[float]) -> int:
        count, ends, used = 0, -math.inf, 0
        for now in times:
            if now >= ends:
                ends, used = now + window, 0
            used += 1  # limits counts denied hits too: INCR comes before the comparison
            count += used <= limit
        return count

    return admits


def log_admits(limit: int, window: float) -> Definition:
    """A sliding log: at most ``limit`` admitted in any ``window`` seconds."""

    def admits(times: Sequence[float]) -> int:
        admitted: list[float] = []
        for now in times:
            if sum(1 for then in admitted if then > now - window) < limit:
                admitted.append(now)
        return len(admitted)

    return admits


Decide = Callable[[str], Awaitable[bool]]


class Scenario(NamedTuple):
    name: str
    description: str
    capacity: int  # a burst of ``capacity``, or ``capacity`` per ``period`` seconds
    period: float


SCENARIOS = [
    Scenario("steady", "rate 0.5/s, burst 1 (windows: 1 per 2 s); one request every 1.5 s for 60 s", 1, 2.0),
    Scenario(
        "edges", "10 per minute; bursts of 10 at 0.5 s before and after a minute's edge, 10 more at +30 s", 10, 60.0
    ),
]


def contenders(
    scenario: Scenario, backend: RedisBackend, url: str
) -> list[tuple[str, str, Definition, Callable[[], Any]]]:
    """(row id, label, its own definition, a factory of its decide(key) coroutine function)."""
    capacity, period = scenario.capacity, scenario.period
    rate = capacity / period

    def ours(policy: AnyPolicy) -> Callable[[], Any]:
        async def decide(key: str) -> bool:
            return (await backend.acquire(key, policy)).allowed

        return lambda: decide

    def from_limits(strategy: type[limits.aio.strategies.RateLimiter]) -> Callable[[], Any]:
        storage = limits.aio.storage.RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy")
        hit, item = strategy(storage).hit, limits.RateLimitItemPerSecond(capacity, int(period))
        return lambda: partial(hit, item)

    def from_throttled(using: str) -> Callable[[], Any]:
        quota = per_duration(timedelta(seconds=period), limit=capacity, burst=capacity)
        limiter = Throttled(using=using, quota=quota, store=throttled_store.RedisStore(server=url, options={}))

        async def decide(key: str) -> bool:
            return not (await limiter.limit(key, cost=1)).limited

        return lambda: decide

    bucket_def = token_bucket_admits(capacity, rate)
    fixed_def = window_admits(fixed_window, FixedWindow, capacity, period)
    sliding_def = window_admits(sliding_window, SlidingWindow, capacity, period)
    return [
        ("ours_token_bucket", "ours: token bucket", bucket_def, ours(TokenBucket(capacity, rate, name="x-bucket"))),
        ("ours_fixed_window", "ours: fixed window", fixed_def, ours(FixedWindow(capacity, period, name="x-fixed"))),
        (
            "ours_sliding_window",
            "ours: sliding window",
            sliding_def,
            ours(SlidingWindow(capacity, period, name="x-sliding")),
        ),
        (
            "limits_fixed",
            "limits: fixed window (a counter expiring a window after its first hit)",
            expiring_counter_admits(capacity, period),
            from_limits(limits.aio.strategies.FixedWindowRateLimiter),
        ),
        (
            "limits_sliding",
            "limits: sliding window counter (starts at the first hit)",
            window_admits(sliding_window, SlidingWindow, capacity, period, anchored=True),
            from_limits(limits.aio.strategies.SlidingWindowCounterRateLimiter),
        ),
        (
            "limits_moving",
            "limits: moving window (a log)",
            log_admits(capacity, period),
            from_limits(limits.aio.strategies.MovingWindowRateLimiter),
        ),
        ("throttled_token_bucket", "throttled-py: token bucket", bucket_def, from_throttled("token_bucket")),
        ("throttled_gcra", "throttled-py: GCRA (a token bucket)", bucket_def, from_throttled("gcra")),
        (
            "throttled_sliding_window",
            "throttled-py: sliding window counter",
            sliding_def,
            from_throttled("sliding_window"),
        ),
        ("throttled_fixed_window", "throttled-py: fixed window", fixed_def, from_throttled("fixed_window")),
    ]


def send_times(scenario: Scenario, start: float) -> list[float]:
    """When each request of ``scenario`` is due, on the wall clock, from ``start``."""
    if scenario.name == "steady":
        return [start + 1.5 * step for step in range(41)]
    edge = math.ceil((start + 1.0) / 60) * 60  # the next minute's edge at least a second away
    return [edge - 0.5] * 10 + [edge + 0.5] * 10 + [edge + 30] * 10


async def run_scenario(scenario: Scenario, url: str) -> list[Row]:
    backend = RedisBackend.from_url(url, timeout=REDIS_TIMEOUT)
    rivals = [
        (row_id, label, definition, make()) for row_id, label, definition, make in contenders(scenario, backend, url)
    ]
    admitted = dict.fromkeys((row_id for row_id, *_ in rivals), 0)
    sent: list[float] = []
    try:
        for due in send_times(scenario, time.time()):
            await asyncio.sleep(max(0.0, due - time.time()))
            sent.append(time.time())
            decisions = await asyncio.gather(
                *(decide(f"exact:{scenario.name}:{row_id}") for row_id, _, _, decide in rivals)
            )
            for (row_id, *_), allowed in zip(rivals, decisions, strict=True):
                admitted[row_id] += bool(allowed)
    finally:
        await backend.close()
    return [
        {
            "id": row_id,
            "label": label,
            "admitted": admitted[row_id],
            "definition": definition(sent),
            "requests": len(sent),
        }
        for row_id, label, definition, _ in rivals
    ]


async def run_exactness(url: str) -> dict[str, Any]:
    rows = await asyncio.gather(*(run_scenario(scenario, url) for scenario in SCENARIOS))
    return {
        scenario.name: {"description": scenario.description, "rows": result}
        for scenario, result in zip(SCENARIOS, rows, strict=True)
    }


def run_algorithms(url: str, seconds: float, keys: int, exactness: bool, flush: Callable[[], object]) -> dict[str, Any]:
    """Every measurement of this section against the one server at ``url``; ``flush`` empties it."""
    redis_rows = []
    for row in REDIS_ROWS:
        flush()
        redis_rows.append(attempt(row.id, row.label, partial(time_peer, row.peer, url, seconds)))
    local_rows = [
        attempt(f"ours_{name}", f"ours: {name} (LocalBackend.acquire_now)", partial(time_local, policy, seconds))
        for name, policy in OURS.items()
    ]
    memory = []
    for name, policy in KEPT.items():
        flush()
        memory.append(
            {
                "id": f"ours_{name}",
                "label": f"ours: {name}",
                "keys": keys,
                "redis_bytes_per_key": asyncio.run(redis_bytes_per_key(url, policy, keys)),
                "local_bytes_per_key": local_bytes_per_key(policy, keys),
            }
        )
    flush()
    result: dict[str, Any] = {
        "algorithms_redis": redis_rows,
        "algorithms_local": local_rows,
        "algorithms_memory": memory,
        "several_limits": run_several_limits(url, seconds, flush),
    }
    if exactness:
        result["algorithms_exactness"] = asyncio.run(run_exactness(url))
    return result
