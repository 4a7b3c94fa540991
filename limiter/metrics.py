"""Prometheus collectors for the limiter, on a registry the caller owns (no global state in tests).

Labels carry the identity kind only (``ip`` or ``user``), never a key, an address or a user id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tornado_rate_limiter.limiter.breaker import BreakerState, CircuitBreaker

IDENTITY_KINDS = ("ip", "user")
# Decisions take ~0.1 ms in memory and ~0.2-2 ms on a nearby Redis; a timeout shows at the top.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BREAKER_STATE_CODES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class LimiterMetrics:
    """The counters and the latency histogram of one limiter."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.allowed = Counter(
            "rate_limit_allowed", "Requests the limiter allowed.", ["identity"], registry=self.registry
        )
        self.blocked = Counter(
            "rate_limit_blocked", "Requests the limiter denied (answered 429).", ["identity"], registry=self.registry
        )
        self.degraded = Counter(
            "rate_limit_degraded", "Decisions made without the primary backend (Redis).", registry=self.registry
        )
        self.errors = Counter("rate_limit_errors", "Errors from the primary backend (Redis).", registry=self.registry)
        self.latency = Histogram(
            "rate_limit_decision_seconds",
            "Time to reach a decision, fallback included.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "rate_limit_breaker_state",
            "The Redis circuit breaker: 0 closed, 1 half-open (probing), 2 open (not calling Redis).",
            registry=self.registry,
        )
        self.redis_evicts_keys = Gauge(
            "rate_limit_redis_evicts_keys",
            "1 when Redis may evict limit keys under memory pressure (maxmemory with an evicting policy): an "
            "evicted bucket is full again, so limits leak; 0 when it may not; -1 while not known.",
            registry=self.registry,
        )
        self.redis_evicts_keys.set(-1)
        # One child per kind, made once (labels() takes a lock and a lookup); zeros are exported from the
        # start, so rates and alerts have a series.
        self._counted = {
            (kind, allowed): (self.allowed if allowed else self.blocked).labels(kind)
            for kind in IDENTITY_KINDS
            for allowed in (True, False)
        }

    def watch_breaker(self, breaker: CircuitBreaker) -> None:
        """Report ``breaker``'s state, read at each scrape."""
        self.breaker_state.set_function(lambda: BREAKER_STATE_CODES[breaker.state])

    def count_decision(self, identity_kind: str, allowed: bool, degraded: bool, seconds: float) -> None:
        """Record one decision."""
        counter = self._counted.get((identity_kind, allowed))
        if counter is None:  # a kind of the user's own
            counter = (self.allowed if allowed else self.blocked).labels("other")
        counter.inc()
        if degraded:
            self.degraded.inc()
        self.latency.observe(seconds)
