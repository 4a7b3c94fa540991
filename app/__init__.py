"""The rate-limiting service: settings from the environment, the application, the process."""

from __future__ import annotations

from app.service import ServiceApplication, build_limiter, make_app
from app.settings import Settings, SettingsError

__all__ = ["ServiceApplication", "Settings", "SettingsError", "build_limiter", "make_app"]
