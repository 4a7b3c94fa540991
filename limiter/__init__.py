"""tornado_rate_limiter.limiter: the framework-free core of the rate limiter (no tornado import here).

policy = TokenBucket(capacity=100, refill_rate=10.0, name="ip")  # or FixedWindow(limit=1000, window=3600)
decision = await RedisBackend.from_url("redis://localhost:6379/0").acquire("ip:203.0.113.7", policy)
"""

from __future__ import annotations

from tornado_rate_limiter.limiter.algorithms import FixedWindow, SlidingWindow, TokenBucket
from tornado_rate_limiter.limiter.backend import Backend
from tornado_rate_limiter.limiter.breaker import BreakerConfig, BreakerState, CircuitBreaker
from tornado_rate_limiter.limiter.bucket import Decision, Policy
from tornado_rate_limiter.limiter.errors import BackendError, CircuitOpenError, RateLimiterError
from tornado_rate_limiter.limiter.limiter import RateLimiter
from tornado_rate_limiter.limiter.local import LocalBackend
from tornado_rate_limiter.limiter.metrics import LimiterMetrics
from tornado_rate_limiter.limiter.policies import PolicyFileError, PolicySet, PolicyStore, Route, load_policy_file
from tornado_rate_limiter.limiter.redis import RedisBackend
from tornado_rate_limiter.limiter.verdict import Charge, Verdict

__all__ = [
    "Backend",
    "BackendError",
    "BreakerConfig",
    "BreakerState",
    "Charge",
    "CircuitBreaker",
    "CircuitOpenError",
    "Decision",
    "FixedWindow",
    "LimiterMetrics",
    "LocalBackend",
    "Policy",
    "PolicyFileError",
    "PolicySet",
    "PolicyStore",
    "RateLimiter",
    "RateLimiterError",
    "RedisBackend",
    "Route",
    "SlidingWindow",
    "TokenBucket",
    "Verdict",
    "load_policy_file",
]
