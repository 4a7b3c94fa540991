"""RateLimiter: the one object a handler talks to: primary backend, fallback, failure strategy, metrics."""

from __future__ import annotations

import logging
import time

from limiter.bucket import Decision, Policy
from limiter.errors import BackendError
from limiter.local import LocalBackend
from limiter.metrics import LimiterMetrics
from limiter.redis import RedisBackend

log = logging.getLogger("limiter")

FAIL_OPEN = "open"
FAIL_CLOSED = "closed"
# How long a client of a fail-closed limiter is told to wait while the primary backend is failing.
_CLOSED_RETRY_AFTER = 1.0
# The same backend error is logged at most once per this many seconds: an outage must not flood the log.
_ERROR_LOG_INTERVAL = 5.0


class RateLimiter:
    """Decides with ``primary``; when it fails, answers by ``failure_strategy``.

    ``"open"`` (default): the decision comes from ``fallback`` (a LocalBackend) and is marked degraded.
    ``"closed"``: the request is denied, also marked degraded.
    """

    def __init__(
        self,
        primary: LocalBackend | RedisBackend,
        *,
        fallback: LocalBackend | None = None,
        failure_strategy: str = FAIL_OPEN,
        metrics: LimiterMetrics | None = None,
    ) -> None:
        if failure_strategy not in (FAIL_OPEN, FAIL_CLOSED):
            message = f"failure_strategy must be {FAIL_OPEN!r} or {FAIL_CLOSED!r}, got {failure_strategy!r}"
            raise ValueError(message)
        self.primary = primary
        self.fallback = fallback if fallback is not None else LocalBackend()
        self.failure_strategy = failure_strategy
        self.metrics = metrics if metrics is not None else LimiterMetrics()
        self._last_error_logged = -_ERROR_LOG_INTERVAL
        self._primary_failing = False

    @property
    def backend_name(self) -> str:
        """``redis`` or ``local``: what decides while all is well."""
        return "redis" if isinstance(self.primary, RedisBackend) else "local"

    def health(self) -> dict[str, object]:
        """What /health shows: the primary backend, and whether decisions are degraded right now."""
        return {"backend": self.backend_name, "breaker": "closed", "degraded": self._primary_failing}

    async def acquire(self, key: str, policy: Policy, cost: float = 1, *, identity_kind: str = "ip") -> Decision:
        """Decide for ``key``; never raises for a backend failure (bad arguments still raise ValueError)."""
        started = time.perf_counter()
        try:
            decision = await self.primary.acquire(key, policy, cost)
            self._primary_failing = False
        except BackendError as exc:
            self._primary_failing = True
            self.metrics.errors.inc()
            self._log_error(exc)
            decision = await self._decide_without_primary(key, policy, cost)
        self.metrics.count_decision(identity_kind, decision.allowed, decision.degraded, time.perf_counter() - started)
        return decision

    async def _decide_without_primary(self, key: str, policy: Policy, cost: float) -> Decision:
        if self.failure_strategy == FAIL_CLOSED:
            return Decision(False, 0.0, _CLOSED_RETRY_AFTER, policy.fill_time, policy.capacity, degraded=True)
        decision = await self.fallback.acquire(key, policy, cost)
        return decision._replace(degraded=True)

    def _log_error(self, exc: BackendError) -> None:
        now = time.monotonic()
        if now - self._last_error_logged >= _ERROR_LOG_INTERVAL:
            self._last_error_logged = now
            log.warning("primary backend failed, deciding by the %s strategy: %s", self.failure_strategy, exc)

    async def close(self) -> None:
        """Release the primary backend's connections."""
        if isinstance(self.primary, RedisBackend):
            await self.primary.close()
