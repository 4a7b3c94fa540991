"""Prometheus collectors for the limiter, on a registry the caller owns (no global state in tests).

Labels carry the identity kind (``ip`` or ``user``) and policy names, which come from the configuration,
never a key, an address or a user id.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tornado_rate_limiter.limiter.breaker import BreakerState, CircuitBreaker

log = logging.getLogger("tornado_rate_limiter.limiter")

IDENTITY_KINDS = ("ip", "user")
# Decisions take ~0.1 ms in memory and ~0.2-2 ms on a nearby Redis; a timeout shows at the top.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BREAKER_STATE_CODES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# What one policy found for a request: it allowed, it denied (enforced), it would have denied (shadow).
ALLOWED, BLOCKED, SHADOW_BLOCKED = "allowed", "blocked", "shadow_blocked"


class LimiterMetrics:
    """The counters and the latency histogram of one limiter."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.errors = Counter("rate_limit_errors", "Errors from the primary backend (Redis).", registry=self.registry)
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
        self.redis_timeout = Gauge(
            "rate_limit_redis_timeout_seconds",
            "The deadline of one decision on Redis (RATE_LIMIT_REDIS_TIMEOUT); 0 on the local backend. An "
            "alert compares the decision p99 with it.",
            registry=self.registry,
        )
        self.exempt = Counter(
            "rate_limit_exempt", "Requests not limited: from an exempt network or user.", registry=self.registry
        )
        # Decisions are counted in plain ints, read at scrape by _DecisionCollector: a prometheus_client
        # Counter takes a lock per increment and a Histogram two, which cost more than the decision.
        # Zeros for every kind are exported from the start, so rates and alerts have a series.
        self.decisions: dict[tuple[str, bool], int] = {
            (kind, allowed): 0 for kind in IDENTITY_KINDS for allowed in (True, False)
        }
        self.policy_outcomes: dict[tuple[str, str], int] = {}
        self.degraded_decisions = 0
        self.latency_counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.latency_sum = 0.0
        self.registry.register(_DecisionCollector(self))
        self._configuration: _ConfigurationCollector | None = None
        self._denial_cache = _DenialCacheCollector()
        self.registry.register(self._denial_cache)

    def count_policy(self, policy: str, outcome: str) -> None:
        """Record what ``policy`` found for one request (ALLOWED, BLOCKED or SHADOW_BLOCKED)."""
        outcomes = self.policy_outcomes
        key = (policy, outcome)
        if key in outcomes:
            outcomes[key] += 1
        else:
            outcomes[key] = 1

    def watch_configuration(self, source: ConfigurationSource) -> None:
        """Export the configuration's reloads and current hash, read from ``source`` at each scrape (the
        last source given: one limiter serves one configuration)."""
        if self._configuration is None:
            self._configuration = _ConfigurationCollector(source)
            self.registry.register(self._configuration)
        elif self._configuration.source is not source:
            log.warning(
                "one limiter serves two configurations: its metrics report the last one given (give each "
                "application a RateLimiter of its own to see both)"
            )
        self._configuration.source = source

    def watch_denial_cache(self, cache: DenialCache) -> None:
        """Export ``cache``'s hits and size, read at each scrape (zeros until one is given: the local
        backend has none)."""
        self._denial_cache.cache = cache

    def watch_breaker(self, breaker: CircuitBreaker) -> None:
        """Report ``breaker``'s state, read at each scrape."""
        self.breaker_state.set_function(lambda: BREAKER_STATE_CODES[breaker.state])

    def count_decision(self, identity_kind: str, allowed: bool, degraded: bool, seconds: float) -> None:
        """Record one decision."""
        decisions = self.decisions
        key = (identity_kind, allowed)
        if key in decisions:
            decisions[key] += 1
        else:  # a kind of the user's own
            key = ("other", allowed)
            decisions[key] = decisions.get(key, 0) + 1
        if degraded:
            self.degraded_decisions += 1
        self.latency_counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # buckets count values <= their bound
        self.latency_sum += seconds


class _DecisionCollector(Collector):
    """The decision counters and the latency histogram of a LimiterMetrics, read from its ints at scrape."""

    def __init__(self, metrics: LimiterMetrics) -> None:
        self.metrics = metrics
        self.created = time.time()

    def collect(self) -> Iterator[Metric]:
        metrics, created = self.metrics, self.created
        allowed = CounterMetricFamily("rate_limit_allowed", "Requests the limiter allowed.", labels=["identity"])
        blocked = CounterMetricFamily(
            "rate_limit_blocked", "Requests the limiter denied (answered 429).", labels=["identity"]
        )
        for (kind, was_allowed), count in list(metrics.decisions.items()):
            (allowed if was_allowed else blocked).add_metric([kind], count, created=created)
        yield allowed
        yield blocked
        yield CounterMetricFamily(
            "rate_limit_degraded",
            "Decisions made without the primary backend (Redis).",
            value=metrics.degraded_decisions,
            created=created,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*_LATENCY_BUCKETS, math.inf), list(metrics.latency_counts), strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "rate_limit_decision_seconds",
            "Time to reach a decision, fallback included.",
            buckets=buckets,
            sum_value=metrics.latency_sum,
        )
        decisions = CounterMetricFamily(
            "rate_limit_policy_decisions",
            "What each policy found for a request: allowed, blocked (enforced, it denied) or shadow_blocked "
            "(a shadow policy that would have denied).",
            labels=["policy", "outcome"],
        )
        shadow = CounterMetricFamily(
            "rate_limit_shadow_blocked",
            "Requests a shadow policy would have denied (it never changes the answer).",
            labels=["policy"],
        )
        for (policy, outcome), count in list(metrics.policy_outcomes.items()):
            decisions.add_metric([policy, outcome], count, created=created)
            if outcome == SHADOW_BLOCKED:
                shadow.add_metric([policy], count, created=created)
        yield decisions
        yield shadow


class ConfigurationSource(Protocol):
    """What the configuration metrics read: the current configuration's hash and the reloads by result
    (a PolicyStore; a configuration built in code has no reloads)."""

    @property
    def sha256(self) -> str: ...

    @property
    def reloads(self) -> Mapping[str, int]: ...


class _ConfigurationCollector(Collector):
    """``rate_limit_config_reloads_total{result}`` and ``rate_limit_config_info{sha256}``, read at scrape."""

    def __init__(self, source: ConfigurationSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "rate_limit_config_reloads",
            "Reloads of the policy file by result: ok (a new configuration applies) or error (the file is not "
            "valid or not readable: the configuration before stays).",
            labels=["result"],
        )
        for result in ("ok", "error"):
            reloads.add_metric([result], self.source.reloads.get(result, 0))
        yield reloads
        info = GaugeMetricFamily(
            "rate_limit_config_info",
            "1, labelled with the sha256 of the policy file in force (empty without a file).",
            labels=["sha256"],
        )
        info.add_metric([self.source.sha256], 1)
        yield info


class DenialCache(Protocol):
    """What the denial-cache metrics read (an OverLimitCache)."""

    hits: int

    def __len__(self) -> int: ...


class _DenialCacheCollector(Collector):
    """``rate_limit_denial_cache_hits_total`` and ``rate_limit_denial_cache_keys``, read at scrape."""

    def __init__(self) -> None:
        self.cache: DenialCache | None = None

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield CounterMetricFamily(
            "rate_limit_denial_cache_hits",
            "Denials answered from the denials Redis gave before (the key is known to be over its limit), "
            "without a round trip.",
            value=cache.hits if cache is not None else 0,
        )
        yield GaugeMetricFamily(
            "rate_limit_denial_cache_keys",
            "Keys remembered as over their limit (bounded; the least recently denied is forgotten first).",
            value=len(cache) if cache is not None else 0,
        )
