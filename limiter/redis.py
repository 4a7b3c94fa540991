"""RedisBackend: limits kept in Redis, one atomic Lua script call per decision, for any algorithm.

Every app process sharing the Redis shares the limit and, when ``now`` is None, Redis's clock.
Decisions asked for in the same event-loop turn go to Redis as one pipeline (one round trip), and denials
are remembered (limiter/over_limit.py) so a key known to be empty is denied without one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from tornado_rate_limiter.limiter.algorithms import LUA_NUMBER, SCRIPTS, SEVERAL_SCRIPT, AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.algorithms.token_bucket import TOKEN_BUCKET
from tornado_rate_limiter.limiter.auto_pipeline import AutoPipeline
from tornado_rate_limiter.limiter.bucket import DEFAULT_EXPIRY_SLACK, Decision, validate_now
from tornado_rate_limiter.limiter.deadline import loop_time_deadline
from tornado_rate_limiter.limiter.over_limit import DEFAULT_MAX_KEYS as DEFAULT_OVER_LIMIT_KEYS
from tornado_rate_limiter.limiter.over_limit import OverLimitCache
from tornado_rate_limiter.limiter.redis_outages import (
    REDIS_FAILURES,
    raise_as_backend_error,
    redis_errors_as_backend_error,
)
from tornado_rate_limiter.limiter.redis_url import RedisClient, RedisCluster, client_from_url, uses_tls
from tornado_rate_limiter.limiter.verdict import Charge, Outcome, Verdict, check_charges, verdict_of

TOKEN_BUCKET_SCRIPT = TOKEN_BUCKET.script.text
TOKEN_BUCKET_SHA = TOKEN_BUCKET.script.sha

# Short and explicit: a rate limiter must answer fast or not at all; retries are the breaker's job.
# The deadline covers the whole call (waiting for a pooled connection, connecting, the round trip);
# 50 ms is ~50 round trips on a nearby Redis, and still short enough not to stall a request.
DEFAULT_TIMEOUT = 0.05
# Enough connections for hundreds of concurrent callers (each call holds one for one round trip);
# past that, callers queue for a free one (within the deadline) instead of failing.
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_KEY_PREFIX = "rl:"
# Getting ready (connecting, TLS, a Cluster's slot map, loading the script) may take longer than a
# decision may; it runs at start and in the breaker's probe, where no request waits for it.
DEFAULT_CONNECT_TIMEOUT = 1.0
# maxmemory policies that may evict a bucket (which then reads full): every key of ours has a TTL, so the
# volatile-* ones too (volatile-ttl evicts the buckets nearest to full first: the least harm, still some).
EVICTING_POLICIES = frozenset(
    {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"}
)


class RedisBackend:
    """Limits in Redis, each algorithm's by its script in ``lua/`` (``lua/token_bucket.lua``, ...).

    ``client`` is a ``redis.asyncio`` client; ``from_url`` builds one with short timeouts, no retries and
    a blocking pool. ``expiry_slack`` (seconds) is how long a key outlives the moment its bucket is full
    again: it covers callers whose ``now`` runs ahead of Redis's clock. ``over_limit_keys`` bounds the
    cache of denials (0 turns it off).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        expiry_slack: float = DEFAULT_EXPIRY_SLACK,
        timeout: float = DEFAULT_TIMEOUT,
        over_limit_keys: int = DEFAULT_OVER_LIMIT_KEYS,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.over_limit = OverLimitCache(over_limit_keys)
        self.pipeline = AutoPipeline(client, SCRIPTS, timeout)
        self._slack_ms = str(math.ceil(expiry_slack * 1000))
        self._tls = uses_tls(client)
        self.evicts_keys: bool | None = None  # learnt by connect(): may Redis evict limit keys?
        self.eviction_policy: str | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify_tls: bool = True,
        **backend_options: Any,
    ) -> RedisBackend:
        """Build a backend for any URL of ``limiter.redis_url``: one server, Cluster or Sentinel, TLS or not.

        ``timeout`` (seconds) bounds each decision as a whole, and each connect;
        ``verify_tls=False`` accepts a self-signed certificate on ``rediss://``.
        """
        client = client_from_url(url, timeout=timeout, max_connections=max_connections, verify_tls=verify_tls)
        return cls(client, timeout=timeout, **backend_options)

    async def close(self) -> None:
        """Stop the round trips under way, then close the client and its connections."""
        await self.pipeline.aclose()
        if isinstance(self.client, RedisCluster):
            await self.client.aclose()
        else:  # a client given its pool does not close it unless told
            await self.client.aclose(close_connection_pool=True)

    def redis_key(self, key: str, policy: AnyPolicy) -> str:
        """The Redis key holding ``key``'s state under ``policy``: ``rl:{<key>}:<policy>``, the braces making
        ``key`` the Cluster hash tag, so one identity's limits share a slot and one script call."""
        return f"{self.key_prefix}{{{key}}}:{policy.name}"

    async def acquire(self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None) -> Decision:
        """Spend ``cost`` of ``key``'s quota under ``policy`` if it has that much left.

        Raises BackendError when Redis cannot serve (down, slow past ``timeout``, read-only, out of
        memory, busy, loading); any other Redis error is a bug in the call and propagates as it is.
        """
        if now is None:
            cached = self.cached_denial(key, policy, cost)
            if cached is not None:
                return cached
        return await self.acquire_from_redis(key, policy, cost, now)

    def cached_denial(self, key: str, policy: AnyPolicy, cost: float = 1) -> Decision | None:
        """A denial Redis would surely give now, known without asking it; None when Redis must be asked."""
        cost = algorithm_for(policy).validate_cost(cost, policy)
        return self.over_limit.denial(self.redis_key(key, policy), policy, cost)

    async def acquire_from_redis(
        self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None
    ) -> Decision:
        """``acquire`` without looking in the cache of denials first (it still learns from the answer)."""
        algorithm = algorithm_for(policy)
        cost = algorithm.validate_cost(cost, policy)
        explicit_now = "" if now is None else repr(validate_now(now))
        args = (*algorithm.script_args(policy, cost), explicit_now, self._slack_ms)
        redis_key = self.redis_key(key, policy)
        asked_at = time.monotonic()
        try:  # the pipeline's own deadline (``timeout``) bounds the wait
            reply = await self.pipeline.call(algorithm.script, (redis_key,), args)
        except REDIS_FAILURES as exc:
            raise_as_backend_error(exc, f"Redis could not decide for {policy.name!r}", script=algorithm.script.text)
        allowed, state, redis_now = algorithm.parse_reply(reply)
        decision = algorithm.decide(allowed, state, redis_now, policy, cost)
        if now is None:
            if decision.allowed:
                self.over_limit.forget(redis_key)
            else:
                self.over_limit.remember(redis_key, policy, state, redis_now, asked_at)
        return decision

    async def acquire_all(self, charges: Sequence[Charge], now: float | None = None) -> Verdict:
        """Several limits of one request, all or nothing (limiter/verdict.py), in one script call: one
        round trip, also on a Cluster when the charges share a key (the hash tag). Raises as ``acquire``."""
        return await self.acquire_all_checked(charges, check_charges(charges), now)

    async def acquire_all_checked(
        self, charges: Sequence[Charge], costs: Sequence[float], now: float | None = None
    ) -> Verdict:
        """``acquire_all`` for charges already checked: ``costs`` as ``check_charges`` returned them."""
        args = ["" if now is None else repr(validate_now(now)), self._slack_ms]
        for charge, cost in zip(charges, costs, strict=True):
            algorithm = algorithm_for(charge.policy)
            args += [LUA_NUMBER[algorithm.name], *algorithm.script_args(charge.policy, cost), "01"[charge.enforced]]
        keys = tuple(self.redis_key(charge.key, charge.policy) for charge in charges)
        try:
            reply = await self.pipeline.call(SEVERAL_SCRIPT, keys, tuple(args))
        except REDIS_FAILURES as exc:
            raise_as_backend_error(exc, "Redis could not decide for several limits", script=SEVERAL_SCRIPT.text)
        _, script_now, *fields = reply
        outcomes, at = [], 0
        for charge in charges:
            algorithm = algorithm_for(charge.policy)
            width = algorithm.state_fields
            allowed, charged = fields[at], fields[at + 1]
            after = algorithm.parse_reply([allowed, *fields[at + 2 : at + 2 + width], script_now])[1]
            at += 2 + width
            before = None  # the script sends the state before only for a limit left uncharged
            if charged != 1:
                before = algorithm.parse_reply([allowed, *fields[at : at + width], script_now])[1]
                at += width
            outcomes.append(Outcome(allowed == 1, after, before))
        return verdict_of(charges, costs, outcomes, float(script_now))

    async def connect(self, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        """Make sure Redis can decide: connect (a Cluster learns its slots), load the scripts, and run
        one decision on a key of its own (so a Redis that refuses writes, OOM or READONLY, fails here).

        Runs with a deadline of its own, longer than a decision's: a TLS handshake or a Cluster's slot
        discovery may need it, and no client request waits on this. Raises BackendError, naming the cause
        (authentication failed, not a cluster, connection refused, ...), whatever keeps Redis from
        deciding: an error in the probe's own call (a value of another type at its key) too.
        """
        probe_args = ("1", "1000", "1", "", self._slack_ms)  # a 1-token bucket, full again in 1 ms
        async with redis_errors_as_backend_error(
            timeout, "Redis is not ready", script=TOKEN_BUCKET_SCRIPT, tls=self._tls, bugs_too=True
        ):
            await self.pipeline.drop_idle_connections()  # made before an outage: maybe to a server now gone
            if isinstance(self.client, RedisCluster):
                await self.client.initialize()
            await self.pipeline.load_scripts()
            await self.client.evalsha(TOKEN_BUCKET_SHA, 1, f"{self.key_prefix}probe", *probe_args)
            await self.pipeline.open()
        self.evicts_keys = await self._read_eviction(timeout)

    async def _read_eviction(self, timeout: float) -> bool | None:
        """Whether Redis may evict our keys (every one has a TTL): maxmemory set with any policy but
        ``noeviction``.
        None when Redis does not say (CONFIG renamed or denied, as on some managed services)."""
        try:
            async with loop_time_deadline(timeout):
                config = await self.client.config_get("maxmemory*")
        except REDIS_FAILURES:
            return None
        text = {_text(name): _text(value) for name, value in config.items()}
        policy, maxmemory = text.get("maxmemory-policy"), text.get("maxmemory")
        if policy is None or maxmemory is None:
            return None
        self.eviction_policy = policy
        return maxmemory != "0" and policy in EVICTING_POLICIES

    async def __aenter__(self) -> RedisBackend:
        """``async with RedisBackend.from_url(...) as backend``: closed on the way out (not connected on the
        way in: the first decision connects, or call ``connect()``)."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
