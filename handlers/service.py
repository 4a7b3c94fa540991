"""The service's own routes: /health, the probes and /metrics (never limited) and the rate-limited demo API."""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tornado_rate_limiter.handlers.ratelimited import RateLimitedHandler, rate_limit_config_of


class _JSONErrors(tornado.web.RequestHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as problem details, never with a stack trace."""
        self.set_header("Content-Type", "application/problem+json")
        self.finish(json.dumps({"type": "about:blank", "title": self._reason, "status": status_code}))


class NotFoundHandler(_JSONErrors):
    """Any path the service does not serve: a 404 problem body."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class HealthHandler(_JSONErrors):
    """GET /health: 200 while the process serves, with what decides. Degraded is not down: still 200."""

    def get(self) -> None:
        config = rate_limit_config_of(self)
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok", **config.limiter.health()})


class LivenessHandler(_JSONErrors):
    """GET /livez: 200 whenever the event loop gets to answer. It asks nothing of Redis or the
    configuration: restarting a process cannot mend either, and a Redis outage must not restart every pod."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})


class ReadinessHandler(_JSONErrors):
    """GET /readyz: 200 while the process takes new requests, degraded included (fail-open still serves,
    and taking every replica out of the load balancer during a Redis outage would stop all traffic);
    503 once it drains for a shutdown (SIGTERM), so a balancer polling it stops sending any."""

    def get(self) -> None:
        config = rate_limit_config_of(self)  # the configuration is loaded: the application is built on it
        self.set_header("Cache-Control", "no-store")
        if getattr(self.application, "draining", False):
            self.set_status(503)
            self.write({"status": "draining"})
            return
        self.write({"status": "ready", "degraded": config.limiter.health()["degraded"]})


class MetricsHandler(_JSONErrors):
    """GET /metrics: the limiter's Prometheus metrics in the text exposition format."""

    def get(self) -> None:
        config = rate_limit_config_of(self)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(config.limiter.metrics.registry))


class WhoAmIHandler(RateLimitedHandler):
    """GET /api/whoami: the identity the limiter counted this request against."""

    def get(self) -> None:
        self.write({"identity": str(self.rate_limit_identity_used)})


class EchoHandler(RateLimitedHandler):
    """Any method on /api/echo: the request as the service saw it (a rate-limited playground)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def echo(self) -> None:
        arguments = {
            name: [v.decode("utf-8", "replace") for v in values]
            for name, values in self.request.query_arguments.items()
        }
        self.write(
            {
                "method": self.request.method,
                "path": self.request.path,
                "query": arguments,
                "body": self.request.body.decode("utf-8", "replace"),
            }
        )

    get = post = put = patch = delete = options = echo

    def head(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
