"""A distributed token-bucket rate limiter: the framework-free core (no tornado import here).

policy = Policy(capacity=100, refill_rate=10.0, name="ip")
decision = await RedisBackend.from_url("redis://localhost:6379/0").acquire("ip:203.0.113.7", policy)
"""

from __future__ import annotations

from limiter.breaker import BreakerConfig, BreakerState, CircuitBreaker
from limiter.bucket import Decision, Policy
from limiter.errors import BackendError, CircuitOpenError, RateLimiterError
from limiter.limiter import RateLimiter
from limiter.local import LocalBackend
from limiter.metrics import LimiterMetrics
from limiter.redis import RedisBackend

__all__ = [
    "BackendError",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Decision",
    "LimiterMetrics",
    "LocalBackend",
    "Policy",
    "RateLimiter",
    "RateLimiterError",
    "RedisBackend",
]
