"""When Redis cannot answer: fail-open decides locally and says so; fail-closed denies. Never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator

import pytest
from tornado.httpclient import HTTPResponse
from tornado.ioloop import IOLoop

from tests.redis_process import free_port
from tests.test_service import metric
from tornado_rate_limiter.limiter import LimiterMetrics, RateLimiter, RedisBackend

Fetch = Callable[..., Awaitable[HTTPResponse]]


@pytest.fixture
def service_limiter(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[RateLimiter]:
    """A limiter whose Redis is a port nothing listens on (every call refused), with the strategy
    the test class names."""
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter(backend, failure_strategy=request.param, metrics=LimiterMetrics())
    yield limiter
    io_loop.run_sync(limiter.close)


@pytest.mark.parametrize("service_limiter", ["open"], indirect=True)
class TestFailOpen:
    @pytest.mark.gen_test
    async def test_local_decisions_marked_degraded_and_counted(self, fetch: Fetch) -> None:
        """Every response says X-RateLimit-Degraded: true; the local fallback still enforces the limit."""
        responses = [await fetch("/api/whoami") for _ in range(4)]
        assert [r.code for r in responses] == [200, 200, 200, 429]
        assert all(r.headers["X-RateLimit-Degraded"] == "true" for r in responses)
        text = (await fetch("/metrics")).body.decode()
        assert metric(text, "rate_limit_degraded_total") == 4
        assert metric(text, "rate_limit_errors_total") == 4
        health = json.loads((await fetch("/health")).body)
        assert (health["status"], health["degraded"]) == ("ok", True)


@pytest.mark.parametrize("service_limiter", ["closed"], indirect=True)
class TestFailClosed:
    @pytest.mark.gen_test
    async def test_requests_are_denied_with_retry_after_and_marked(self, fetch: Fetch) -> None:
        """Fail-closed: 429 with Retry-After and the degraded header, not a 5xx."""
        response = await fetch("/api/whoami")
        assert response.code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Degraded"] == "true"
