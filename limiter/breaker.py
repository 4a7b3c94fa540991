"""CircuitBreaker: stops calling a failing dependency (Redis) and lets one probe find out when it is back.

Time comes from an injected clock and jitter from an injected random source, so tests drive both.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tornado_rate_limiter.limiter.errors import CircuitOpenError

log = logging.getLogger("tornado_rate_limiter.breaker")


class BreakerState(enum.StrEnum):  # each is its own name in /health, logs and labels
    CLOSED = "closed"  # calls go through; failures are counted
    OPEN = "open"  # no calls at all until the cool-down has passed
    HALF_OPEN = "half_open"  # one probe call at a time decides: success closes, failure reopens


@dataclass(frozen=True)
class BreakerConfig:
    """When to open and how long to stay open. Defaults are explained in the README (failure modes)."""

    consecutive_failures: int = 5  # open after this many failures in a row...
    failure_rate: float = 0.5  # ...or when at least this share of the calls in the window failed,
    window_seconds: float = 10.0  # counting the calls of the last window_seconds,
    min_calls_in_window: int = 20  # once there are this many (so two failures of three do not open it)
    cooldown: float = 2.0  # seconds without calls after opening
    max_cooldown: float = 30.0  # the cool-down doubles with each failed probe, up to this
    jitter: float = 0.2  # +-20% on each cool-down, so a fleet of processes does not probe in step
    probe_timeout: float = 5.0  # a probe with no outcome after this long no longer blocks the next probe

    def __post_init__(self) -> None:
        checks = {
            "consecutive_failures": self.consecutive_failures >= 1,
            "failure_rate": 0 < self.failure_rate <= 1,
            "window_seconds": self.window_seconds > 0,
            "min_calls_in_window": self.min_calls_in_window >= 1,
            "cooldown": self.cooldown > 0,
            "max_cooldown": self.max_cooldown >= self.cooldown,
            "jitter": 0 <= self.jitter < 1,
            "probe_timeout": self.probe_timeout > 0,
        }
        for field_name, valid in checks.items():
            if not valid:
                message = f"BreakerConfig.{field_name} is out of range: {getattr(self, field_name)!r}"
                raise ValueError(message)


@dataclass(frozen=True)
class Permit:
    """Permission for one call, to hand back with its outcome."""

    generation: int  # the breaker's state generation when granted: outcomes of older calls are stale
    probe: bool  # whether this call is a half-open probe
    probe_number: int = 0  # which probe, so a stale probe's cancel cannot free the current one's turn


class CircuitBreaker:
    """CLOSED -> OPEN on a run of failures or a high failure rate; OPEN -> HALF_OPEN after a cool-down;
    HALF_OPEN -> CLOSED when the probe succeeds, back to OPEN (with a longer cool-down) when it fails.

    Protocol: ``permit = breaker.before_call()`` (raises CircuitOpenError when refused), then
    ``breaker.on_success(permit)``, ``breaker.on_failure(permit)`` or, for a call that was cancelled and
    says nothing about the dependency, ``breaker.on_cancel(permit)``.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive_failures = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed) of recent calls while closed
        self._failed_probes = 0
        self._open_until = 0.0
        self._probe_deadline: float | None = None  # set while a probe is out
        self._probes = 0  # probes granted so far

    @property
    def state(self) -> BreakerState:
        """The state now, read without changing anything (a Prometheus scrape reads it): an OPEN breaker
        whose cool-down has passed reads as HALF_OPEN, and becomes so at the next call."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def remaining_cooldown(self) -> float:
        """Seconds until the next probe may be tried (0 unless open)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._open_until - self._clock())
        return 0.0

    def before_call(self) -> Permit:
        """Permission to call, or CircuitOpenError (with the seconds to wait) when calls are refused."""
        state = self.state
        if state is not self._state:  # the cool-down has passed: half-open from this call on
            self._move_to(state)
        if state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        now = self._clock()
        if state is BreakerState.HALF_OPEN and (self._probe_deadline is None or now >= self._probe_deadline):
            self._probe_deadline = now + self.config.probe_timeout
            self._probes += 1
            return Permit(self._generation, probe=True, probe_number=self._probes)
        raise CircuitOpenError(self.remaining_cooldown())

    def on_success(self, permit: Permit) -> None:
        """The call worked."""
        if permit.generation != self._generation:
            return  # it started before the last state change: it says nothing about now
        if self._state is BreakerState.HALF_OPEN and permit.probe:
            self._failed_probes = 0
            self._move_to(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._record(failed=False)

    def on_failure(self, permit: Permit) -> None:
        """The call failed because the dependency could not serve it."""
        if permit.generation != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN and permit.probe:
            self._failed_probes += 1
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._record(failed=True)
            if self._consecutive_failures >= self.config.consecutive_failures or self._failure_rate_exceeded():
                self._open()

    def trip(self) -> None:
        """Open now, whatever the state: the dependency is known to be failing (it failed to get ready)."""
        self._open()

    def on_cancel(self, permit: Permit) -> None:
        """The call was abandoned before an outcome: a probe gives its turn to the next caller."""
        if permit.probe and permit.probe_number == self._probes and permit.generation == self._generation:
            self._probe_deadline = None

    def _record(self, failed: bool) -> None:
        now = self._clock()
        self._window.append((now, failed))
        horizon = now - self.config.window_seconds
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _failure_rate_exceeded(self) -> bool:
        calls = len(self._window)
        if calls < self.config.min_calls_in_window:
            return False
        failures = sum(1 for _, failed in self._window if failed)
        return failures / calls >= self.config.failure_rate

    def _open(self) -> None:
        config = self.config
        cooldown = min(config.max_cooldown, config.cooldown * 2**self._failed_probes)
        cooldown *= 1 + self._rng.uniform(-config.jitter, config.jitter)
        self._open_until = self._clock() + cooldown
        self._move_to(BreakerState.OPEN)

    def _move_to(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._probe_deadline = None
        self._consecutive_failures = 0
        self._window.clear()
        if old is not new:
            if new is BreakerState.OPEN:
                log.warning("circuit breaker %s -> open for %.1f s", old, self._open_until - self._clock())
            else:
                log.info("circuit breaker %s -> %s", old, new)
            if self._on_change is not None:
                self._on_change(old, new)
