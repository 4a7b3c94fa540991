"""Tornado integration: the rate-limited handler base class, client identity, and the service's routes."""

from __future__ import annotations

from handlers.client_ip import ClientAddressResolver
from handlers.identity import Identity
from handlers.ratelimited import APP_POLICIES, SETTINGS_KEY, InvalidToken, RateLimitConfig, RateLimitedHandler

__all__ = [
    "APP_POLICIES",
    "SETTINGS_KEY",
    "ClientAddressResolver",
    "Identity",
    "InvalidToken",
    "RateLimitConfig",
    "RateLimitedHandler",
]
