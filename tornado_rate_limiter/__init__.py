"""tornado-rate-limiter: a distributed rate limiter for Tornado, kept in Redis, with a local fallback.

The one import namespace of the distribution. Its subpackages are the repository's top-level folders
(linked here): ``.limiter`` (the framework-free core), ``.handlers`` (Tornado glue), ``.app`` (the
service) and ``.lua`` (the scripts). The names below are the public API; the Tornado ones load on first
use, so ``import tornado_rate_limiter.limiter`` never imports tornado.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tornado_rate_limiter.limiter import (
    BackendError,
    BreakerConfig,
    Charge,
    CircuitBreaker,
    Decision,
    FixedWindow,
    LimiterMetrics,
    LocalBackend,
    Policy,
    PolicyFileError,
    PolicySet,
    PolicyStore,
    RateLimiter,
    RateLimiterError,
    RedisBackend,
    Route,
    SlidingWindow,
    TokenBucket,
    Verdict,
    load_policy_file,
)

if TYPE_CHECKING:
    from tornado_rate_limiter.app import Settings, SettingsError, make_app, make_rate_limit_config
    from tornado_rate_limiter.handlers import (
        APP_POLICIES,
        Identity,
        RateLimitConfig,
        RateLimitedHandler,
        RateLimitNotConfigured,
    )

__version__ = "0.2.0"

# Public names that need tornado, and the subpackage each comes from.
_LAZY = {
    "APP_POLICIES": "handlers",
    "Identity": "handlers",
    "RateLimitConfig": "handlers",
    "RateLimitedHandler": "handlers",
    "RateLimitNotConfigured": "handlers",
    "Settings": "app",
    "SettingsError": "app",
    "make_app": "app",
    "make_rate_limit_config": "app",
}

__all__ = [
    "APP_POLICIES",
    "BackendError",
    "BreakerConfig",
    "Charge",
    "CircuitBreaker",
    "Decision",
    "FixedWindow",
    "Identity",
    "LimiterMetrics",
    "LocalBackend",
    "Policy",
    "PolicyFileError",
    "PolicySet",
    "PolicyStore",
    "RateLimitConfig",
    "RateLimitNotConfigured",
    "RateLimitedHandler",
    "RateLimiter",
    "RateLimiterError",
    "RedisBackend",
    "Route",
    "Settings",
    "SettingsError",
    "SlidingWindow",
    "TokenBucket",
    "Verdict",
    "__version__",
    "load_policy_file",
    "make_app",
    "make_rate_limit_config",
]


def __getattr__(name: str) -> Any:
    """Load a Tornado-side public name from its subpackage on first use (PEP 562)."""
    if name not in _LAZY:
        message = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(message)
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
