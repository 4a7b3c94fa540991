"""make_app(settings): the Tornado application with its routes and its limiter."""

from __future__ import annotations

import tornado.web

from app.backend import build_backend
from app.settings import Settings
from handlers import HealthHandler
from limiter import LocalBackend, RedisBackend


def make_app(settings: Settings, backend: LocalBackend | RedisBackend | None = None) -> tornado.web.Application:
    """Build the application; ``backend`` overrides the one the settings choose (tests pass their own)."""
    backend = backend if backend is not None else build_backend(settings)
    application = tornado.web.Application([(r"/health", HealthHandler, {"backend": backend})])
    application.settings["limiter_backend"] = backend
    return application
