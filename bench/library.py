"""Library decisions per second, our backends against their peers.

Local: one thread calling each limiter in a loop over 10,000 keys for a fixed time. Redis: 64 concurrent
asyncio callers over 10,000 keys against one redis-server, beside the reference points of our script
called through redis-py alone (one call at a time, or pipelined) and through `redis-benchmark`. Limits
are so high that every decision is allowed: the allowed path writes, so it is the one that costs the most.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, NamedTuple

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import pyrate_limiter
import redis.asyncio
import token_bucket
from pyrate_limiter.buckets.redis_bucket import LuaScript

from tornado_rate_limiter.limiter import LocalBackend, Policy, RedisBackend
from tornado_rate_limiter.limiter.algorithms import AnyPolicy
from tornado_rate_limiter.limiter.redis import TOKEN_BUCKET_SCRIPT, TOKEN_BUCKET_SHA

FixedWindow, MovingWindow = limits.strategies.FixedWindowRateLimiter, limits.strategies.MovingWindowRateLimiter
AsyncMovingWindow = limits.aio.strategies.MovingWindowRateLimiter
AsyncSlidingWindow = limits.aio.strategies.SlidingWindowCounterRateLimiter

Row = dict[str, Any]
Batch = Callable[[Sequence[str]], int]  # decides once for each key; returns how many were allowed
AsyncBatch = Callable[[Sequence[str]], Awaitable[int]]
RedisPeer = Callable[[str], AbstractAsyncContextManager[AsyncBatch]]

KEYS = [f"ip:10.0.{i >> 8}.{i & 255}" for i in range(10_000)]
HIGH = 10**9  # capacity, and refill per second: nothing is ever denied
CALLERS = 64
REPEATS = 3  # each measurement is this many runs of a third of its time; the best one is reported
PIPELINE = 64
# RedisBackend's own default (50 ms) is for serving; under a saturating benchmark a queued call could
# pass it and be counted as an error rather than a decision.
REDIS_TIMEOUT = 1.0
# Our script's arguments for one allowed decision: capacity, refill, cost, now ("" = Redis's clock), slack.
SCRIPT_ARGS = (repr(float(HIGH)), repr(float(HIGH)), "1.0", "", "1000")


Run = tuple[int, int, float]  # decisions, allowed, seconds


def measured(row_id: str, label: str, runs: list[Run]) -> Row:
    """The best of the runs: on a shared machine the slower ones measure the neighbours as well."""
    rates = [decisions / seconds for decisions, _, seconds in runs]
    decisions, allowed = sum(run[0] for run in runs), sum(run[1] for run in runs)
    return {
        "id": row_id,
        "label": label,
        "decisions_per_s": max(rates),
        "runs_per_s": rates,
        "allowed_share": allowed / decisions if decisions else 0.0,
    }


def failed(row_id: str, label: str, exc: BaseException) -> Row:
    return {"id": row_id, "label": label, "error": f"{type(exc).__name__}: {exc}"}


# --- local: one thread ---------------------------------------------------------------------------------
# Each factory builds one limiter for ``capacity`` tokens refilled at ``rate`` per second (or its nearest
# equivalent: a window of ``capacity`` hits per ``capacity / rate`` seconds) and returns a Batch over it.
# bench/memory.py builds the same limiters, so both sections measure the same calls.
LocalFactory = Callable[[float, float], Batch]


def ours_sync(capacity: float, rate: float) -> Batch:
    return local_batch(Policy(capacity, rate, name="bench"))


def local_batch(policy: AnyPolicy) -> Batch:
    """LocalBackend.acquire_now under ``policy``, once per key."""
    # Room for bench/memory.py's million keys: the bound is per shard, and shards fill unevenly.
    acquire = LocalBackend(max_keys=4_000_000).acquire_now

    def batch(keys: Sequence[str]) -> int:
        allowed = 0
        for key in keys:
            allowed += acquire(key, policy).allowed
        return allowed

    return batch


def ours_async(capacity: float, rate: float) -> AsyncBatch:
    backend, policy = LocalBackend(), Policy(capacity, rate, name="bench")
    acquire = backend.acquire

    async def batch(keys: Sequence[str]) -> int:
        allowed = 0
        for key in keys:
            allowed += (await acquire(key, policy)).allowed
        return allowed

    return batch


def dict_of_tuples(capacity: float, rate: float) -> Batch:
    """The cheapest token bucket one could write: no lock, no expiry, no bound on the keys."""
    buckets: dict[str, tuple[float, float]] = {}
    clock = time.time

    def batch(keys: Sequence[str]) -> int:
        allowed = 0
        for key in keys:
            now = clock()
            tokens, stamp = buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - stamp) * rate)
            if tokens >= 1:
                buckets[key] = (tokens - 1, now)
                allowed += 1
        return allowed

    return batch


def token_bucket_package(capacity: float, rate: float) -> Batch:
    consume = token_bucket.Limiter(rate, int(capacity), token_bucket.MemoryStorage()).consume

    def batch(keys: Sequence[str]) -> int:
        allowed = 0
        for key in keys:
            allowed += consume(key)
        return allowed

    return batch


def window_seconds(capacity: float, rate: float) -> int:
    """The window of a window-based peer: as long as the bucket takes to refill from empty."""
    return max(1, round(capacity / rate))


def limits_memory(strategy: type[limits.strategies.RateLimiter]) -> LocalFactory:
    def make(capacity: float, rate: float) -> Batch:
        hit = strategy(limits.storage.MemoryStorage()).hit
        item = limits.RateLimitItemPerSecond(int(capacity), window_seconds(capacity, rate))

        def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += hit(item, key)
            return allowed

        return batch

    return make


class PerKeyBuckets(pyrate_limiter.BucketFactory):
    """pyrate-limiter limits a bucket, not a key: this routes each key to a bucket of its own, made on
    first use. No background leak task: a benchmark lasts a few seconds, far less than its interval."""

    def __init__(self, make_bucket: Callable[[str], pyrate_limiter.AbstractBucket], now: Callable[[], int]) -> None:
        self.buckets: dict[str, pyrate_limiter.AbstractBucket] = {}
        self.make_bucket = make_bucket
        self.now = now

    def wrap_item(self, name: str, weight: int = 1) -> pyrate_limiter.RateItem:
        if name not in self.buckets:
            self.buckets[name] = self.make_bucket(name)
        return pyrate_limiter.RateItem(name, self.now(), weight=weight)

    def get(self, item: pyrate_limiter.RateItem) -> pyrate_limiter.AbstractBucket:
        return self.buckets[item.name]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def pyrate_rates(capacity: float, rate: float) -> list[pyrate_limiter.Rate]:
    return [pyrate_limiter.Rate(int(capacity), window_seconds(capacity, rate) * 1000)]


def pyrate_memory(token_bucket_state: bool) -> LocalFactory:
    """pyrate-limiter in memory: the default sliding-log InMemoryBucket, or its TokenBucket (GCRA) state."""

    def make(capacity: float, rate: float) -> Batch:
        def make_bucket(_key: str) -> pyrate_limiter.AbstractBucket:
            rates = pyrate_rates(capacity, rate)
            if token_bucket_state:
                return pyrate_limiter.StateBucket(rates, algorithm=pyrate_limiter.TokenBucket())
            return pyrate_limiter.InMemoryBucket(rates)

        try_acquire = pyrate_limiter.Limiter(PerKeyBuckets(make_bucket, monotonic_ms)).try_acquire

        def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += try_acquire(key, blocking=False) is True
            return allowed

        return batch

    return make


LOCAL: list[tuple[str, str, LocalFactory]] = [
    ("ours_acquire_now", "ours: LocalBackend.acquire_now (sync)", ours_sync),
    ("dict_of_tuples", "baseline: dict of (tokens, stamp) tuples", dict_of_tuples),
    ("token_bucket", "token-bucket: Limiter + MemoryStorage, consume", token_bucket_package),
    ("limits_fixed", "limits: FixedWindowRateLimiter, MemoryStorage", limits_memory(FixedWindow)),
    ("limits_moving", "limits: MovingWindowRateLimiter, MemoryStorage", limits_memory(MovingWindow)),
    ("pyrate_memory", "pyrate-limiter: InMemoryBucket per key (sliding log), try_acquire", pyrate_memory(False)),
    ("pyrate_memory_gcra", "pyrate-limiter: StateBucket TokenBucket per key, try_acquire", pyrate_memory(True)),
]
ASYNC_LOCAL = ("ours_acquire_async", "ours: await LocalBackend.acquire", ours_async)


def time_batches(batch: Batch, seconds: float) -> list[Run]:
    """Run ``batch`` over all the keys, REPEATS times for a share of ``seconds`` each."""
    batch(KEYS)  # warm-up: every key exists from now on, as in a steady state
    runs = []
    for _ in range(REPEATS):
        decisions = allowed = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / REPEATS:
            allowed += batch(KEYS)
            decisions += len(KEYS)
        runs.append((decisions, allowed, elapsed))
    return runs


async def time_async_batches(batch: AsyncBatch, seconds: float) -> list[Run]:
    await batch(KEYS)
    runs = []
    for _ in range(REPEATS):
        decisions = allowed = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / REPEATS:
            allowed += await batch(KEYS)
            decisions += len(KEYS)
        runs.append((decisions, allowed, elapsed))
    return runs


def attempt(row_id: str, label: str, run: Callable[[], list[Run]]) -> Row:
    """One row: measured, or the error that stopped it (one broken peer must not stop the run)."""
    try:
        return measured(row_id, label, run())
    except Exception as exc:
        return failed(row_id, label, exc)


def time_local(make: LocalFactory, seconds: float) -> list[Run]:
    return time_batches(make(HIGH, HIGH), seconds)


def time_local_async(make: Callable[[float, float], AsyncBatch], seconds: float) -> list[Run]:
    return asyncio.run(time_async_batches(make(HIGH, HIGH), seconds))


def run_local(seconds: float) -> list[Row]:
    rows = [attempt(row_id, label, partial(time_local, make, seconds)) for row_id, label, make in LOCAL]
    row_id, label, make_async = ASYNC_LOCAL
    rows.insert(1, attempt(row_id, label, partial(time_local_async, make_async, seconds)))  # after its sync twin
    return rows


# --- Redis: 64 concurrent callers ----------------------------------------------------------------------


async def time_callers(batch: AsyncBatch, callers: int, size: int, seconds: float) -> list[Run]:
    """``callers`` tasks, each deciding ``size`` keys per call, REPEATS times for a share of ``seconds``."""
    chunks = [KEYS[i : i + size] for i in range(0, len(KEYS), size)]

    async def caller(index: int, deadline: float) -> tuple[int, int]:
        decisions = allowed = 0
        while time.perf_counter() < deadline:
            chunk = chunks[index % len(chunks)]
            allowed += await batch(chunk)
            decisions += len(chunk)
            index += callers
        return decisions, allowed

    async def run(duration: float) -> Run:
        started = time.perf_counter()
        counts = await asyncio.gather(*(caller(i, started + duration) for i in range(callers)))
        return sum(c[0] for c in counts), sum(c[1] for c in counts), time.perf_counter() - started

    await run(min(0.5, seconds / 4))  # warm-up: connections open, scripts loaded, keys exist
    return [await run(seconds / REPEATS) for _ in range(REPEATS)]


def ours_redis_deciding(decide: Callable[[RedisBackend, str], Awaitable[bool]]) -> RedisPeer:
    """A RedisBackend of its own per run, asked ``decide(backend, key)`` once per key."""

    @asynccontextmanager
    async def peer(url: str) -> AsyncIterator[AsyncBatch]:
        backend = RedisBackend.from_url(url, timeout=REDIS_TIMEOUT)

        async def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += await decide(backend, key)
            return allowed

        try:
            yield batch
        finally:
            await backend.close()

    return peer


def ours_redis_with(policy: AnyPolicy) -> RedisPeer:
    """RedisBackend.acquire under ``policy``, once per key."""

    async def decide(backend: RedisBackend, key: str) -> bool:
        return (await backend.acquire(key, policy)).allowed

    return ours_redis_deciding(decide)


ours_redis = ours_redis_with(Policy(HIGH, HIGH, name="bench"))


@asynccontextmanager
async def raw_evalsha(url: str) -> AsyncIterator[AsyncBatch]:
    """redis-py alone: one EVALSHA of our script per decision, nothing parsed but the allowed flag."""
    client = redis.asyncio.Redis.from_url(url)
    await client.script_load(TOKEN_BUCKET_SCRIPT)

    async def batch(keys: Sequence[str]) -> int:
        allowed = 0
        for key in keys:
            reply = await client.evalsha(TOKEN_BUCKET_SHA, 1, f"rl:raw:{key}", *SCRIPT_ARGS)
            allowed += reply[0] == 1
        return allowed

    try:
        yield batch
    finally:
        await client.aclose()


@asynccontextmanager
async def raw_pipelined(url: str) -> AsyncIterator[AsyncBatch]:
    """The same EVALSHA, sent ``PIPELINE`` at a time in one non-transactional pipeline."""
    client = redis.asyncio.Redis.from_url(url)
    await client.script_load(TOKEN_BUCKET_SCRIPT)

    async def batch(keys: Sequence[str]) -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.evalsha(TOKEN_BUCKET_SHA, 1, f"rl:pipe:{key}", *SCRIPT_ARGS)
        return sum(reply[0] == 1 for reply in await pipe.execute())

    try:
        yield batch
    finally:
        await client.aclose()


def limits_redis(
    strategy: type[limits.aio.strategies.RateLimiter], item: limits.RateLimitItem | None = None
) -> RedisPeer:
    """``strategy`` on redis.asyncio, hitting ``item`` (default: HIGH per second) once per key."""

    @asynccontextmanager
    async def peer(url: str) -> AsyncIterator[AsyncBatch]:
        # implementation="redispy": limits on redis.asyncio (its default would be coredis).
        storage = limits.aio.storage.RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy")
        hit = strategy(storage).hit
        limit = item or limits.RateLimitItemPerSecond(HIGH)

        async def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += await hit(limit, key)
            return allowed

        try:
            yield batch
        finally:
            client = getattr(storage.bridge, "storage", None)  # limits has no close(); its client does
            if client is not None:
                await client.aclose()

    return peer


def pyrate_redis(token_bucket_state: bool) -> RedisPeer:
    """pyrate-limiter on redis.asyncio, one bucket (one Redis key) per key: the sorted-set RedisBucket
    (sliding log, its default), or a StateBucket with TokenBucket (GCRA) in a RedisStateStore."""

    @asynccontextmanager
    async def peer(url: str) -> AsyncIterator[AsyncBatch]:
        client = redis.asyncio.Redis.from_url(url)
        script_hash = await client.script_load(LuaScript.PUT_ITEM)

        def make_bucket(key: str) -> pyrate_limiter.AbstractBucket:
            rates = pyrate_rates(HIGH, HIGH)
            if token_bucket_state:
                store = pyrate_limiter.RedisStateStore(client, f"pyrate:gcra:{key}")
                return pyrate_limiter.StateBucket(rates, algorithm=pyrate_limiter.TokenBucket(), store=store)
            return pyrate_limiter.RedisBucket(rates, client, f"pyrate:log:{key}", script_hash)

        limiter = pyrate_limiter.Limiter(PerKeyBuckets(make_bucket, wall_ms))

        async def batch(keys: Sequence[str]) -> int:
            allowed = 0
            for key in keys:
                allowed += await limiter.try_acquire_async(key, blocking=False)
            return allowed

        try:
            yield batch
        finally:
            await client.aclose()

    return peer


class RedisRow(NamedTuple):
    id: str
    label: str
    peer: RedisPeer
    callers: int = CALLERS
    keys_per_call: int = 1


REDIS = [
    RedisRow("ours_redis", f"ours: RedisBackend.acquire (timeout={REDIS_TIMEOUT})", ours_redis),
    RedisRow("raw_evalsha", "baseline: redis-py EVALSHA of our script, 1 per call", raw_evalsha),
    RedisRow("raw_pipelined", f"baseline: redis-py EVALSHA, {PIPELINE} per pipeline", raw_pipelined, 1, PIPELINE),
    # Two pipelines in flight overlap one's round trip with the other's Python work: the ceiling for a
    # client that batches and keeps more than one batch under way.
    RedisRow(
        "raw_pipelined_2",
        f"baseline: redis-py EVALSHA, {PIPELINE} per pipeline, 2 in flight",
        raw_pipelined,
        2,
        PIPELINE,
    ),
    RedisRow("limits_moving_redis", "limits: async MovingWindowRateLimiter", limits_redis(AsyncMovingWindow)),
    RedisRow("limits_sliding_redis", "limits: async SlidingWindowCounterRateLimiter", limits_redis(AsyncSlidingWindow)),
    RedisRow(
        "pyrate_redis", "pyrate-limiter: RedisBucket per key (sorted set), try_acquire_async", pyrate_redis(False)
    ),
    RedisRow(
        "pyrate_redis_gcra",
        "pyrate-limiter: StateBucket TokenBucket, RedisStateStore, try_acquire_async",
        pyrate_redis(True),
    ),
]


def time_peer(row: RedisRow, url: str, seconds: float) -> list[Run]:
    async def run() -> list[Run]:
        async with row.peer(url) as batch:
            return await time_callers(batch, row.callers, row.keys_per_call, seconds)

    return asyncio.run(run())


def redis_benchmark(port: int, pipeline: int, seconds: float, connections: int = CALLERS) -> float:
    """Redis's own client (C, no parsing of our reply): EVALSHA of our script over 10,000 keys, requests/s.

    redis-benchmark counts requests, not time: a short run sizes the real one to last about ``seconds``.
    """
    executable = shutil.which("redis-benchmark")
    if executable is None:
        message = "redis-benchmark is not installed (it comes with redis-server / redis-tools)"
        raise RuntimeError(message)

    def run(requests: int) -> float:
        command = [executable, "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-P", str(pipeline)]
        command += ["-n", str(requests), "-r", str(len(KEYS)), "--csv"]
        command += ["EVALSHA", TOKEN_BUCKET_SHA, "1", "rl:rb:__rand_int__", *SCRIPT_ARGS]
        output = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 4 + 30, check=True).stdout
        # --csv: a header line, then "EVALSHA ...","<requests per second>",...
        return float(output.strip().splitlines()[-1].split('","')[1])

    probe = run(50_000)  # well under a second at the rates Redis serves this script
    return run(max(50_000, int(probe * seconds)))


def run_redis(url: str, port: int, seconds: float, flush: Callable[[], object]) -> list[Row]:
    """Every Redis row against the one server at ``url``; ``flush`` empties it between rows."""
    rows: list[Row] = []
    for row in REDIS:
        flush()
        rows.append(attempt(row.id, row.label, partial(time_peer, row, url, seconds)))
    for pipeline in (1, PIPELINE):
        flush()
        row_id, label = f"redis_benchmark_p{pipeline}", f"redis-benchmark: EVALSHA of our script, -P {pipeline}"
        try:
            rows.append({"id": row_id, "label": label, "decisions_per_s": redis_benchmark(port, pipeline, seconds)})
        except Exception as exc:
            rows.append(failed(row_id, label, exc))
    # What RedisBackend's 64 callers keep in flight: 64 calls on one connection.
    flush()
    row_id, label = "redis_benchmark_c1_p64", f"redis-benchmark: EVALSHA of our script, -c 1 -P {CALLERS}"
    try:
        rate = redis_benchmark(port, CALLERS, seconds, connections=1)
        rows.append({"id": row_id, "label": label, "decisions_per_s": rate})
    except Exception as exc:
        rows.append(failed(row_id, label, exc))
    return rows
