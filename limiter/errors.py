"""The limiter's exceptions: one place, so callers know what they may catch."""

from __future__ import annotations


class RateLimiterError(Exception):
    """Base class of every error the limiter raises on purpose."""


class BackendError(RateLimiterError):
    """A storage backend could not answer (Redis down, slow, or refusing to serve)."""
