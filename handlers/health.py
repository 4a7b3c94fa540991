"""GET /health: whether the service is up and what it decides with. Never rate limited."""

from __future__ import annotations

import tornado.web

from limiter import LocalBackend, RedisBackend


class HealthHandler(tornado.web.RequestHandler):
    """Answers 200 with JSON while the process serves: a platform's liveness check."""

    def initialize(self, backend: LocalBackend | RedisBackend) -> None:
        self.backend = backend

    def get(self) -> None:
        kind = "redis" if isinstance(self.backend, RedisBackend) else "local"
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok", "backend": kind})
