"""Shared fixtures: real redis-server processes, an event loop for Hypothesis, both backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings

from limiter import Decision, LocalBackend, Policy, RedisBackend
from tests.redis_process import RedisProcess

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

    def acquire(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
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
    backend = RedisBackend.from_url(redis_server.url, socket_timeout=2.0, connect_timeout=2.0)
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
