"""Shared fixtures: real redis-server processes, an event loop for Hypothesis, both backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.ioloop import IOLoop

from tests.redis_process import RedisProcess
from tornado_rate_limiter.app import ServiceApplication, Settings, make_app
from tornado_rate_limiter.limiter import Decision, LimiterMetrics, LocalBackend, RateLimiter, RedisBackend
from tornado_rate_limiter.limiter.algorithms import AnyPolicy

T = TypeVar("T")

# Redis round trips make examples slower than pure Python ones: no per-example deadline, and the
# function-scoped fixtures are fine because every example uses keys of its own.
# HYPOTHESIS_PROFILE=thorough runs ten times the examples, for a deeper search before a release.
_HEALTH = [HealthCheck.function_scoped_fixture]
settings.register_profile("default", max_examples=300, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("thorough", max_examples=3000, deadline=None, suppress_health_check=_HEALTH)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server of this test session's own, on a free port."""
    server = RedisProcess().start()
    yield server
    server.stop()


class BackendDriver:
    """Calls a backend's async API from synchronous (Hypothesis) test code, on a loop of its own."""

    def __init__(self, name: str, backend: LocalBackend | RedisBackend, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.backend = backend
        self.loop = loop

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def acquire(self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None) -> Decision:
        return self.run(self.backend.acquire(key, policy, cost, now))

    @staticmethod
    def fresh_key() -> str:
        """A key no earlier example touched."""
        return f"test:{uuid.uuid4().hex}"


def make_driver(name: str, redis_server: RedisProcess) -> BackendDriver:
    loop = asyncio.new_event_loop()
    if name == "local":
        return BackendDriver(name, LocalBackend(), loop)
    # Generous timeouts: these tests are about decisions, and a GC pause must not fail them.
    backend = RedisBackend.from_url(redis_server.url, timeout=2.0)
    return BackendDriver(name, backend, loop)


def close_driver(driver: BackendDriver) -> None:
    if isinstance(driver.backend, RedisBackend):
        driver.run(driver.backend.close())
    driver.loop.close()


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, redis_server: RedisProcess) -> Iterator[BackendDriver]:
    """Each backend in turn, driven synchronously: every behaviour test runs against both."""
    driver = make_driver(request.param, redis_server)
    yield driver
    close_driver(driver)


@pytest.fixture
def redis_backend(redis_server: RedisProcess) -> Iterator[BackendDriver]:
    """The Redis backend alone, on the session's redis-server."""
    driver = make_driver("redis", redis_server)
    yield driver
    close_driver(driver)


# --- the service, through pytest-tornado's `app`, `http_client` and `gen_test` -------------------------

JWT_SECRET = "test-secret-that-is-at-least-32-bytes-long"


@pytest.fixture
def service_settings() -> Settings:
    """Small limits so tests reach them; override this fixture in a test class for other settings."""
    return Settings(ip_capacity=3, ip_refill_rate=0.01, user_capacity=5, user_refill_rate=0.01, jwt_secret=JWT_SECRET)


@pytest.fixture(params=["local", "redis"])
def service_limiter(
    request: pytest.FixtureRequest, redis_server: RedisProcess, io_loop: IOLoop
) -> Iterator[RateLimiter]:
    """The service's limiter on each backend in turn; Redis keys get a prefix of this test's own."""
    if request.param == "local":
        primary: LocalBackend | RedisBackend = LocalBackend()
    else:
        prefix = f"t{uuid.uuid4().hex[:12]}:"
        primary = RedisBackend.from_url(redis_server.url, key_prefix=prefix, timeout=2.0)
    limiter = RateLimiter(primary, metrics=LimiterMetrics())
    yield limiter
    io_loop.run_sync(limiter.close)


@pytest.fixture
def extra_routes() -> list[Any]:
    """Routes added to the service under test; override to mount handlers of a test's own."""
    return []


@pytest.fixture
def app(service_settings: Settings, service_limiter: RateLimiter, extra_routes: list[Any]) -> ServiceApplication:
    """The real application (pytest-tornado serves it and points `http_client` at it)."""
    return make_app(service_settings, routes=extra_routes, limiter=service_limiter, demo_routes=True)


@pytest.fixture
def fetch(
    app: ServiceApplication, http_client: AsyncHTTPClient, base_url: str
) -> Callable[..., Awaitable[HTTPResponse]]:
    """`await fetch(path, **options)`: a request to the service that returns error responses too.

    It names `app` so that pytest sees the parametrized limiter behind it (pytest-tornado asks for `app`
    only at run time).
    """

    def request(path: str, **options: Any) -> Awaitable[HTTPResponse]:
        return http_client.fetch(base_url + path, raise_error=False, **options)

    return request
