"""The limiter's exceptions: one place, so callers know what they may catch."""

from __future__ import annotations


class RateLimiterError(Exception):
    """Base class of every error the limiter raises on purpose."""


class BackendError(RateLimiterError):
    """A storage backend could not answer (Redis down, slow, or refusing to serve)."""


class CircuitOpenError(RateLimiterError):
    """The circuit breaker refused a call: the dependency failed recently and is cooling down."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit open: next attempt in {retry_after:.2f} s")
        self.retry_after = retry_after  # seconds until the breaker lets a probe through
