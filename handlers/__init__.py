"""Tornado integration: the rate-limited handler base class, client identity, and the service's routes."""

from __future__ import annotations

from tornado_rate_limiter.handlers.client_ip import ClientAddressResolver
from tornado_rate_limiter.handlers.identity import Identity
from tornado_rate_limiter.handlers.ratelimited import (
    APP_POLICIES,
    SETTINGS_KEY,
    InvalidToken,
    RateLimitConfig,
    RateLimitedHandler,
    RateLimitNotConfigured,
    default_policies,
)

__all__ = [
    "APP_POLICIES",
    "SETTINGS_KEY",
    "ClientAddressResolver",
    "Identity",
    "InvalidToken",
    "RateLimitConfig",
    "RateLimitNotConfigured",
    "RateLimitedHandler",
    "default_policies",
]
