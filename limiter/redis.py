"""RedisBackend: token buckets kept in Redis, one atomic Lua script call per decision.

Every app process sharing the Redis shares the limit and, when ``now`` is None, Redis's clock.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from limiter.bucket import BucketState, Decision, Policy, decide, validate_cost, validate_now
from limiter.errors import BackendError
from lua import read_script

TOKEN_BUCKET_SCRIPT = read_script("token_bucket.lua")
TOKEN_BUCKET_SHA = hashlib.sha1(TOKEN_BUCKET_SCRIPT.encode("utf-8")).hexdigest()

# Short and explicit: a rate limiter must answer fast or not at all; retries are the breaker's job.
# 100 ms, not less: the timer also runs while our own busy event loop delays the reply.
DEFAULT_SOCKET_TIMEOUT = 0.1
DEFAULT_CONNECT_TIMEOUT = 0.1
# Enough connections for hundreds of concurrent callers (each call holds one for one round trip);
# past that, callers wait up to POOL_TIMEOUT for a free one instead of failing.
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_POOL_TIMEOUT = 1.0
DEFAULT_KEY_PREFIX = "rl:"
DEFAULT_EXPIRY_SLACK = 1.0


class RedisBackend:
    """Token buckets in Redis via ``lua/token_bucket.lua``.

    ``client`` is a ``redis.asyncio`` client; ``from_url`` builds one with short timeouts, no retries and
    a blocking pool. ``expiry_slack`` (seconds) is how long a key outlives the moment its bucket is full
    again: it covers callers whose ``now`` runs ahead of Redis's clock.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        expiry_slack: float = DEFAULT_EXPIRY_SLACK,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._slack_ms = str(math.ceil(expiry_slack * 1000))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        **backend_options: Any,
    ) -> RedisBackend:
        """Build a backend for ``redis://``, ``rediss://`` or ``unix://`` URLs."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(client, **backend_options)

    async def close(self) -> None:
        """Close the client and its connections."""
        await self.client.aclose()

    def redis_key(self, key: str, policy: Policy) -> str:
        """The Redis key holding ``key``'s bucket under ``policy``."""
        return f"{self.key_prefix}{policy.name}:{key}"

    async def acquire(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them; raises BackendError if Redis fails."""
        cost = validate_cost(cost, policy)
        explicit_now = "" if now is None else repr(validate_now(now))
        args = (repr(policy.capacity), repr(policy.refill_rate), repr(cost), explicit_now, self._slack_ms)
        try:
            reply = await self._run_script(self.redis_key(key, policy), args)
        except RedisError as exc:
            message = f"Redis could not decide for {policy.name!r}: {exc}"
            raise BackendError(message) from exc
        allowed, tokens, stamp, script_now = reply
        state = BucketState(float(tokens), float(stamp))
        return decide(bool(int(allowed)), state, float(script_now), policy, cost)

    async def _run_script(self, redis_key: str, args: tuple[str, ...]) -> list[Any]:
        """EVALSHA the script, loading it once if Redis does not know it (restart, failover, flush)."""
        try:
            return await self.client.evalsha(TOKEN_BUCKET_SHA, 1, redis_key, *args)  # type: ignore[no-any-return]
        except NoScriptError:
            await self.client.script_load(TOKEN_BUCKET_SCRIPT)
            return await self.client.evalsha(TOKEN_BUCKET_SHA, 1, redis_key, *args)  # type: ignore[no-any-return]
