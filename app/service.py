"""make_app(settings): the Tornado application with its routes, its limiter and its metrics;
make_rate_limit_config(settings) for an Application of your own."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import tornado.httputil
import tornado.web
from prometheus_client import PlatformCollector, ProcessCollector

from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.handlers import SETTINGS_KEY, ClientAddressResolver, RateLimitConfig
from tornado_rate_limiter.handlers.forward_auth import CHECK_PATH, ForwardAuthHandler
from tornado_rate_limiter.handlers.service import (
    EchoHandler,
    HealthHandler,
    LivenessHandler,
    MetricsHandler,
    NotFoundHandler,
    ReadinessHandler,
    WhoAmIHandler,
)
from tornado_rate_limiter.limiter import CircuitBreaker, LimiterMetrics, LocalBackend, RateLimiter, RedisBackend
from tornado_rate_limiter.limiter.policies import PolicySet
from tornado_rate_limiter.limiter.policies.store import PolicyStore

log = logging.getLogger("tornado_rate_limiter")


def build_limiter(settings: Settings) -> RateLimiter:
    """The limiter the settings ask for; says once in the log which backend decides."""
    if settings.redis_url is None:
        log.info("REDIS_URL is not set: limits are kept in this process's memory (LocalBackend)")
        primary: LocalBackend | RedisBackend = LocalBackend()
    else:
        log.info("limits are kept in Redis (RedisBackend), failure strategy: %s", settings.failure_strategy)
        primary = RedisBackend.from_url(
            settings.redis_url, timeout=settings.redis_timeout, verify_tls=settings.redis_tls_verify
        )
    metrics = LimiterMetrics()
    # The service is the process: its CPU, memory, descriptors and start time go beside the limiter's.
    ProcessCollector(registry=metrics.registry)
    PlatformCollector(registry=metrics.registry)
    return RateLimiter(
        primary,
        failure_strategy=settings.failure_strategy,
        fallback_share=settings.fallback_share,
        breaker=CircuitBreaker(settings.breaker_config),
        metrics=metrics,
    )


def policies_of(settings: Settings) -> PolicyStore | PolicySet:
    """The policy file's store (RATE_LIMIT_CONFIG; PolicyFileError when it cannot be used), or the one
    policy per identity kind of the environment settings."""
    if settings.policy_file is not None:
        return PolicyStore(settings.policy_file)
    return PolicySet.from_kinds({"ip": settings.ip_policy, "user": settings.user_policy})


def make_rate_limit_config(
    settings: Settings, limiter: RateLimiter | None = None, policies: PolicyStore | PolicySet | None = None
) -> RateLimitConfig:
    """What the RateLimitedHandlers of an application share, as the settings ask: pass it to your own
    ``tornado.web.Application(routes, rate_limit=...)``. ``limiter`` and ``policies`` override what the
    settings build (``policies_of``)."""
    return RateLimitConfig(
        limiter=limiter if limiter is not None else build_limiter(settings),
        policies=policies if policies is not None else policies_of(settings),
        resolver=ClientAddressResolver(settings.trusted_proxies, settings.trusted_hops),
        forwarded_header=settings.forwarded_header,
        ipv6_prefix=settings.ipv6_prefix,
        jwt_secret=settings.jwt_secret,
        route_case=settings.route_case,
    )


class _CountedRequest(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, counting it in flight from its headers until it ends: its handler logs
    it, or its connection closes first, whichever comes first (a 429 answered from the head closes the
    connection after the handler has logged; it must not end twice).

    Counting starts at the headers, not at start_request: a keep-alive connection starts a request that
    never comes and is never told when the client goes away.
    """

    def __init__(
        self,
        inner: tornado.httputil.HTTPMessageDelegate,
        application: ServiceApplication,
        request_conn: tornado.httputil.HTTPConnection,
    ) -> None:
        self.inner, self.application, self.request_conn = inner, application, request_conn
        self.counted = False

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Any:
        self.application.in_flight += 1
        self.application.counted[self.request_conn] = self
        self.counted = True
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()  # the handler runs now; log_request marks its end

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()
        self.end()

    def end(self) -> None:
        """The request is over: no longer in flight (once, however many ways it ends)."""
        if self.counted:
            self.counted = False
            self.application.in_flight -= 1
            self.application.counted.pop(self.request_conn, None)


class ServiceApplication(tornado.web.Application):
    """An Application that counts requests in flight, so a shutdown can wait for them to finish."""

    in_flight = 0
    draining = False  # set on SIGTERM: /readyz answers 503 from then on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted: dict[object, _CountedRequest] = {}  # by request connection, while in flight

    def start_request(self, server_conn: object, request_conn: tornado.httputil.HTTPConnection) -> Any:
        return _CountedRequest(super().start_request(server_conn, request_conn), self, request_conn)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        counted = self.counted.get(handler.request.connection)
        if counted is not None:
            counted.end()
        access_log = self.settings.get("access_log", "all")
        if access_log == "all" or (access_log == "errors" and handler.get_status() >= 500):
            super().log_request(handler)


def make_app(
    settings: Settings,
    routes: Sequence[Any] = (),
    limiter: RateLimiter | None = None,
    *,
    policies: PolicyStore | PolicySet | None = None,
    demo_routes: bool = False,
    **tornado_settings: Any,
) -> ServiceApplication:
    """An application with /health, /livez, /readyz, /metrics, /check (the decision endpoint for proxies)
    and ``routes`` of your own, its limiter built from ``settings``.

    ``demo_routes=True`` adds the service's /api/whoami and /api/echo[/...] (the service asks for them);
    ``limiter`` and ``policies`` override what the settings build (tests pass their own);
    ``tornado_settings`` go to the Application.
    """
    service_routes: list[Any] = [
        (r"/health", HealthHandler),
        (r"/livez", LivenessHandler),
        (r"/readyz", ReadinessHandler),
        (r"/metrics", MetricsHandler),
        (rf"{CHECK_PATH}(?:/.*)?", ForwardAuthHandler, {"proxy": settings.forward_auth}),
    ]
    if demo_routes:
        service_routes += [(r"/api/whoami", WhoAmIHandler), (r"/api/echo(?:/.*)?", EchoHandler)]
    options: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "access_log": settings.access_log,
        **tornado_settings,
    }
    options[SETTINGS_KEY] = make_rate_limit_config(settings, limiter, policies)
    return ServiceApplication([*service_routes, *routes], **options)
