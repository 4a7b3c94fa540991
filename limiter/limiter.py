"""RateLimiter: the one object a handler talks to: primary backend through a circuit breaker, fallback,
failure strategy, metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.breaker import BreakerState, CircuitBreaker, Permit
from tornado_rate_limiter.limiter.bucket import Decision
from tornado_rate_limiter.limiter.errors import BackendError, CircuitOpenError
from tornado_rate_limiter.limiter.local import LocalBackend
from tornado_rate_limiter.limiter.metrics import ALLOWED, BLOCKED, SHADOW_BLOCKED, LimiterMetrics
from tornado_rate_limiter.limiter.redis import RedisBackend
from tornado_rate_limiter.limiter.verdict import Charge, Verdict, check_charges

T = TypeVar("T")

log = logging.getLogger("tornado_rate_limiter.limiter")

FAIL_OPEN = "open"
FAIL_CLOSED = "closed"
# The same backend error is logged at most once per this many seconds: an outage must not flood the log.
_ERROR_LOG_INTERVAL = 5.0
_OUTAGE, _BUG = "outage", "bug"  # the kinds of Redis error, each logged at that rate
# One process of a million: a smaller share scales no real limit and makes rates too small to compute.
MIN_FALLBACK_SHARE = 1e-6
# A fail-closed denial while the breaker has not opened yet (no cool-down to report) says to retry in 1 s.
_MIN_CLOSED_RETRY_AFTER = 1.0
# Fallback policies kept at most (scaled once per policy; reloads that change parameters make new ones).
_MAX_SCALED_POLICIES = 1024


class RateLimiter:
    """Decides with ``primary`` while ``breaker`` lets it; otherwise answers by ``failure_strategy``:

    ``"open"`` (default): ``fallback`` (a LocalBackend) decides with the policy scaled by
    ``fallback_share`` (1/N for N processes keeps the fleet near the global limit), marked degraded.
    ``"closed"``: the request is denied until the breaker's cool-down ends, marked degraded.
    """

    def __init__(
        self,
        primary: LocalBackend | RedisBackend,
        *,
        fallback: LocalBackend | None = None,
        failure_strategy: str = FAIL_OPEN,
        fallback_share: float = 1.0,
        breaker: CircuitBreaker | None = None,
        metrics: LimiterMetrics | None = None,
    ) -> None:
        if failure_strategy not in (FAIL_OPEN, FAIL_CLOSED):
            message = f"failure_strategy must be {FAIL_OPEN!r} or {FAIL_CLOSED!r}, got {failure_strategy!r}"
            raise ValueError(message)
        if not MIN_FALLBACK_SHARE <= fallback_share <= 1:
            message = f"fallback_share must be in [{MIN_FALLBACK_SHARE:g}, 1], got {fallback_share!r}"
            raise ValueError(message)
        self.primary = primary
        self.fallback = fallback if fallback is not None else LocalBackend()
        self.failure_strategy = failure_strategy
        self.fallback_share = fallback_share
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.metrics = metrics if metrics is not None else LimiterMetrics()
        self.metrics.watch_breaker(self.breaker)
        if isinstance(primary, RedisBackend):
            self.metrics.watch_denial_cache(primary.over_limit)
            self.metrics.redis_timeout.set(primary.timeout)
        self._scaled_policies: dict[AnyPolicy, AnyPolicy] = {}
        self._last_error_logged: dict[str, float] = {}  # by kind: an outage's lines never hide a bug's
        self._primary_failing = False
        self._probe: asyncio.Task[None] | None = None
        self._warned_eviction = False
        self._shadow_log = _ShadowDenialLog()

    @property
    def backend_name(self) -> str:
        """``redis`` or ``local``: what decides while all is well."""
        return "redis" if isinstance(self.primary, RedisBackend) else "local"

    def health(self) -> dict[str, object]:
        """What /health shows: the primary backend, the breaker state, whether decisions are degraded."""
        state = self.breaker.state
        degraded = state is not BreakerState.CLOSED or self._primary_failing
        health: dict[str, object] = {"backend": self.backend_name, "breaker": str(state), "degraded": degraded}
        if isinstance(self.primary, RedisBackend):  # None until Redis has been reached and asked
            health["redis_evicts_keys"] = self.primary.evicts_keys
        return health

    async def acquire(self, key: str, policy: AnyPolicy, cost: float = 1, *, identity_kind: str = "ip") -> Decision:
        """Decide for ``key``; never raises for a backend failure (bad arguments still raise ValueError)."""
        decision = self.acquire_now(key, policy, cost, identity_kind=identity_kind)
        if decision is not None:
            return decision
        return await self.ask_primary(key, policy, cost, identity_kind=identity_kind)

    def acquire_now(
        self, key: str, policy: AnyPolicy, cost: float = 1, *, identity_kind: str = "ip"
    ) -> Decision | None:
        """The decision of ``acquire`` when it is known without waiting: always on a local primary; on
        Redis, a denial its cache of denials holds. None: Redis must be asked, with ``ask_primary``.
        Counted as ``acquire`` counts it; a handler calls this first and awaits nothing on a local primary.
        """
        started = time.perf_counter()
        primary = self.primary
        if isinstance(primary, LocalBackend):  # never fails: no breaker, no fallback, no await
            decision = primary.acquire_now(key, policy, cost)
            # Counted here rather than by _count: on this path each call costs a few percent of the request.
            metrics = self.metrics
            metrics.count_decision(identity_kind, decision.allowed, False, time.perf_counter() - started)
            metrics.count_policy(policy.name, ALLOWED if decision.allowed else BLOCKED)
            return decision
        # Before the breaker: a denial known without Redis is as exact during an outage, and asking
        # nobody must not count as Redis answering.
        cached = primary.cached_denial(key, policy, cost)
        if cached is not None:
            self._count(identity_kind, policy.name, cached, started)
        return cached

    async def ask_primary(self, key: str, policy: AnyPolicy, cost: float = 1, *, identity_kind: str = "ip") -> Decision:
        """``acquire`` once ``acquire_now`` said the primary must be asked: through the breaker, with the
        failure strategy's answer when Redis cannot give one."""
        started = time.perf_counter()
        primary = self.primary
        if isinstance(primary, LocalBackend):
            decision = primary.acquire_now(key, policy, cost)
        else:
            decision = await self._through_breaker(
                lambda: primary.acquire_from_redis(key, policy, cost),
                lambda: self._decide_without_primary(key, policy, cost),
                policy.name,
            )
        self._count(identity_kind, policy.name, decision, started)
        return decision

    def _count(self, identity_kind: str, policy: str, decision: Decision, started: float) -> None:
        allowed = decision.allowed
        metrics = self.metrics
        metrics.count_decision(identity_kind, allowed, decision.degraded, time.perf_counter() - started)
        metrics.count_policy(policy, ALLOWED if allowed else BLOCKED)

    async def connect(self) -> bool:
        """Get the primary ready before serving (connect, load the script); False, and logged, if not now.

        Failing here is not fatal: the breaker opens at once, so /health says degraded from the first
        request and requests are answered by the failure strategy until a probe finds Redis ready.
        """
        try:
            await self.primary.connect()
        except BackendError as exc:
            self.breaker.trip()
            self._primary_failing = True
            self.metrics.errors.inc()
            log.error("%s; deciding by the fail-%s strategy until it is", exc, self.failure_strategy)
            self._last_error_logged[_OUTAGE] = time.monotonic()
            return False
        self._note_eviction()
        return True

    def _note_eviction(self) -> None:
        """After Redis was found ready: say (gauge, /health, one warning per change) whether it may evict
        limit keys, which hands out full buckets without any error."""
        evicts = getattr(self.primary, "evicts_keys", None)
        self.metrics.redis_evicts_keys.set(-1 if evicts is None else int(evicts))
        if evicts and not self._warned_eviction:
            log.warning(
                "Redis may evict limit keys (maxmemory-policy %s): an evicted bucket is full again, so limits "
                "leak under memory pressure; use noeviction on a Redis of its own",
                getattr(self.primary, "eviction_policy", "?"),
            )
        self._warned_eviction = bool(evicts)

    async def _through_breaker(
        self,
        ask_redis: Callable[[], Awaitable[T]],
        without_redis: Callable[[], Awaitable[T]],
        what: str | Sequence[Charge],
    ) -> T:
        """Ask Redis while the breaker lets us, else (or when Redis fails) answer ``without_redis``;
        ``what`` (a policy's name, or the charges) names the call in a log line, made only for one."""
        try:
            permit = self.breaker.before_call()
        except CircuitOpenError:
            return await without_redis()
        if permit.probe:  # the probe runs on its own: this request is not made to wait for it
            self._probe = asyncio.create_task(self._run_probe(permit))
            self._probe.add_done_callback(lambda task: self._probe_ended(permit, task))
            return await without_redis()
        try:
            answer = await ask_redis()
        except BackendError as exc:
            self.breaker.on_failure(permit)
            self._primary_failing = True
            self.metrics.errors.inc()
            self._log_error(_OUTAGE, f"Redis failed, deciding by the fail-{self.failure_strategy} strategy: {exc}")
            return await without_redis()
        except Exception:  # not an outage but a bug (WRONGTYPE, a call the client refuses): loud, yet the
            # client is still answered (the cost was checked before, so this is never the caller's mistake)
            self.breaker.on_cancel(permit)
            self.metrics.errors.inc()
            names = repr(what) if isinstance(what, str) else ", ".join(repr(charge.policy.name) for charge in what)
            self._log_error(_BUG, f"Redis rejected the call for {names} (a bug, not an outage)", traceback=True)
            return await without_redis()
        except BaseException:  # cancelled (the client went away): nothing about Redis
            self.breaker.on_cancel(permit)
            raise
        self.breaker.on_success(permit)
        self._primary_failing = False
        return answer

    async def acquire_all(self, charges: Sequence[Charge], *, identity_kind: str = "ip") -> Verdict:
        """Several limits of one request, all or nothing (limiter/verdict.py), through the breaker and the
        failure strategy as ``acquire``; counted as one decision. Never raises for a backend failure."""
        verdict = self.acquire_all_now(charges, identity_kind=identity_kind)
        if verdict is not None:
            return verdict
        started = time.perf_counter()
        primary = self.primary
        assert isinstance(primary, RedisBackend)  # a local primary always decides now
        costs = check_charges(charges)  # a caller's mistake is a ValueError, never an outage
        verdict = await self._through_breaker(
            lambda: primary.acquire_all_checked(charges, costs),
            lambda: self._decide_all_without_primary(charges),
            charges,
        )
        self._count_all(identity_kind, charges, verdict, started)
        return verdict

    def acquire_all_now(self, charges: Sequence[Charge], *, identity_kind: str = "ip") -> Verdict | None:
        """The verdict of ``acquire_all`` when it is known without waiting (a local primary); None on Redis."""
        primary = self.primary
        if not isinstance(primary, LocalBackend):
            return None
        started = time.perf_counter()
        verdict = primary.acquire_all_now(charges)
        self._count_all(identity_kind, charges, verdict, started)
        return verdict

    def _count_all(self, identity_kind: str, charges: Sequence[Charge], verdict: Verdict, started: float) -> None:
        self.metrics.count_decision(identity_kind, verdict.allowed, verdict.degraded, time.perf_counter() - started)
        unknown = verdict.degraded and self.failure_strategy == FAIL_CLOSED  # no limit was asked
        for charge, decision in zip(charges, verdict.decisions, strict=True):
            if unknown and not charge.enforced:
                continue  # a shadow limit's "denial" here says nothing about what it would have done
            if decision.allowed:
                self.metrics.count_policy(charge.policy.name, ALLOWED)
            elif charge.enforced:
                self.metrics.count_policy(charge.policy.name, BLOCKED)
            else:
                self.metrics.count_policy(charge.policy.name, SHADOW_BLOCKED)
                self._shadow_log.denied(charge.policy.name, charge.key)

    async def _decide_all_without_primary(self, charges: Sequence[Charge]) -> Verdict:
        if self.failure_strategy == FAIL_CLOSED:  # every enforced limit denies; shadow ones change nothing
            denials = [await self._decide_without_primary(c.key, c.policy, c.cost) for c in charges]
            admitted = not any(charge.enforced for charge in charges)
            return Verdict(admitted, tuple(denials), (False,) * len(charges), degraded=True)
        scaled = [c._replace(policy=self._fallback_policy(c.policy, float(c.cost))) for c in charges]
        verdict = self.fallback.acquire_all_now(scaled)
        decisions = tuple(decision._replace(degraded=True) for decision in verdict.decisions)
        return verdict._replace(decisions=decisions, degraded=True)

    async def _run_probe(self, permit: Permit) -> None:
        """The half-open probe: is Redis ready again (connected, script loaded) within the connect timeout?"""
        assert isinstance(self.primary, RedisBackend)  # a local primary never fails, so never probes
        try:
            await self.primary.connect()
        except BackendError as exc:
            self.breaker.on_failure(permit)
            self.metrics.errors.inc()
            self._log_error(_OUTAGE, f"Redis is still failing: {exc}")
        else:
            self.breaker.on_success(permit)
            self._primary_failing = False
            self._note_eviction()

    def _probe_ended(self, permit: Permit, task: asyncio.Task[None]) -> None:
        """A probe cancelled (even before it started) or broken by a bug gives its turn to the next request."""
        if task.cancelled():
            self.breaker.on_cancel(permit)
        elif (error := task.exception()) is not None:
            self.breaker.on_cancel(permit)
            log.error("the Redis probe failed with a bug", exc_info=error)

    async def _decide_without_primary(self, key: str, policy: AnyPolicy, cost: float) -> Decision:
        if self.failure_strategy == FAIL_CLOSED:
            retry_after = max(self.breaker.remaining_cooldown(), _MIN_CLOSED_RETRY_AFTER)
            algorithm = algorithm_for(policy)
            return Decision(False, 0.0, retry_after, algorithm.period(policy), algorithm.quota(policy), degraded=True)
        decision = await self.fallback.acquire(key, self._fallback_policy(policy, cost), cost)
        return decision._replace(degraded=True)

    def _fallback_policy(self, policy: AnyPolicy, cost: float) -> AnyPolicy:
        """``policy`` with its quota scaled by the fallback share (never below one request's cost)."""
        if self.fallback_share == 1:
            return policy
        algorithm = algorithm_for(policy)
        scaled = self._scaled_policies.get(policy)
        if scaled is None:
            share = self.fallback_share
            try:
                scaled = algorithm.scaled(policy, share)
            except ValueError:  # a rate already near the smallest a Policy takes: scaling it goes below
                log.warning("policy %r cannot be scaled by the fallback share %g: used whole", policy.name, share)
                scaled = policy
            if len(self._scaled_policies) >= _MAX_SCALED_POLICIES:
                self._scaled_policies.clear()
            self._scaled_policies[policy] = scaled
        admitting: AnyPolicy = algorithm.admitting(scaled, cost)
        return admitting

    def _log_error(self, kind: str, message: str, traceback: bool = False) -> None:
        """Log at most one Redis error of ``kind`` every few seconds: an outage or a hot bad key must not
        flood the log, and neither may hide the other."""
        now = time.monotonic()
        if now - self._last_error_logged.get(kind, -_ERROR_LOG_INTERVAL) >= _ERROR_LOG_INTERVAL:
            self._last_error_logged[kind] = now
            log.error(message, exc_info=traceback)

    async def close(self) -> None:
        """Stop a probe under way and release the backends' connections."""
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
        await self.primary.close()
        await self.fallback.close()

    async def __aenter__(self) -> RateLimiter:
        """``async with RateLimiter(...) as limiter``: connected on the way in (a failure is logged, not
        raised, as in ``connect()``), closed on the way out."""
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


class _ShadowDenialLog:
    """One log line per shadow policy every few seconds, saying how many requests it would have denied
    since the last line: a shadow limit tried on real traffic may deny thousands a second."""

    def __init__(self) -> None:
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def denied(self, policy: str, key: str) -> None:
        now = time.monotonic()
        count = self._unlogged.get(policy, 0) + 1
        if now - self._last_logged.get(policy, -_ERROR_LOG_INTERVAL) < _ERROR_LOG_INTERVAL:
            self._unlogged[policy] = count
            return
        self._last_logged[policy], self._unlogged[policy] = now, 0
        log.info("shadow policy %r would have denied %s (%d request(s) since the last such line)", policy, key, count)
