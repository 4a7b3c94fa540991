"""The rate-limiting service: settings from the environment, the application, the process."""

from __future__ import annotations

from tornado_rate_limiter.app.service import ServiceApplication, build_limiter, make_app, make_rate_limit_config
from tornado_rate_limiter.app.settings import Settings, SettingsError

__all__ = ["ServiceApplication", "Settings", "SettingsError", "build_limiter", "make_app", "make_rate_limit_config"]
