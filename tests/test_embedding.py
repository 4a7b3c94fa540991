"""The library path: RateLimitedHandler subclasses in a plain tornado.web.Application of the user's own,
one setting (``rate_limit``) to add, a clear error without it, and one backend protocol."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest
import tornado.web
from tornado.httpclient import HTTPResponse

from tests.redis_process import RedisProcess
from tornado_rate_limiter import (
    LocalBackend,
    Policy,
    RateLimitConfig,
    RateLimitedHandler,
    RedisBackend,
    Settings,
    make_app,
    make_rate_limit_config,
)
from tornado_rate_limiter.limiter import Backend

Fetch = Callable[..., Awaitable[HTTPResponse]]


class SearchHandler(RateLimitedHandler):
    def get(self) -> None:
        self.write({"query": self.get_argument("q", "")})


class TestPlainApplication:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        config = RateLimitConfig(policies={"ip": Policy(2, 0.001, name="search")})
        return tornado.web.Application([(r"/search", SearchHandler)], rate_limit=config)

    @pytest.mark.gen_test
    async def test_the_handler_is_limited_with_one_setting(self, fetch: Fetch) -> None:
        """A plain Application with rate_limit=RateLimitConfig(...): 2 tokens, then a 429 with its headers."""
        first = await fetch("/search?q=a")
        assert first.code == 200 and json.loads(first.body) == {"query": "a"}
        assert first.headers["RateLimit-Policy"] == '"search";q=2;w=2000'
        assert (await fetch("/search")).code == 200
        denied = await fetch("/search")
        assert denied.code == 429 and json.loads(denied.body)["violated-policies"] == ["search"]


class TestWithoutTheSetting:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        return tornado.web.Application([(r"/search", SearchHandler)])

    @pytest.mark.gen_test
    async def test_the_first_request_fails_with_a_message_naming_what_to_add(
        self, fetch: Fetch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No rate_limit setting: a 500 problem body (no stack trace) and a log naming the setting to add."""
        with caplog.at_level(logging.ERROR, logger="tornado.application"):
            response = await fetch("/search")
        assert response.code == 500 and json.loads(response.body)["status"] == 500
        assert b"Traceback" not in response.body
        assert "RateLimitNotConfigured" in caplog.text
        assert "SearchHandler needs a RateLimitConfig" in caplog.text
        assert "tornado.web.Application(routes, rate_limit=RateLimitConfig(...))" in caplog.text
        assert "KeyError" not in caplog.text


class TestConfigFromSettings:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        settings = Settings(ip_capacity=3, ip_refill_rate=0.01)
        return tornado.web.Application([(r"/search", SearchHandler)], rate_limit=make_rate_limit_config(settings))

    @pytest.mark.gen_test
    async def test_the_policies_are_the_settings(self, fetch: Fetch) -> None:
        """make_rate_limit_config(settings) gives the service's ip policy from the settings."""
        response = await fetch("/search")
        assert response.headers["RateLimit-Policy"] == '"ip";q=3;w=300'


class TestMakeApp:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        return make_app(Settings(), routes=[(r"/search", SearchHandler)])

    @pytest.mark.gen_test
    @pytest.mark.parametrize(
        ("path", "status"), [("/api/echo", 404), ("/api/whoami", 404), ("/health", 200), ("/search", 200)]
    )
    async def test_demo_routes_only_when_asked(self, fetch: Fetch, path: str, status: int) -> None:
        """make_app mounts /health, /metrics and the user's routes; the demo routes need demo_routes=True."""
        assert (await fetch(path)).code == status


class TestBackendProtocol:
    @pytest.mark.parametrize("kind", ["local", "redis"])
    def test_both_backends_connect_decide_and_close_alike(self, kind: str, redis_server: RedisProcess) -> None:
        """The same code runs on either backend: Backend protocol, connect, acquire and async with."""

        async def scenario() -> tuple[bool, float]:
            backend = LocalBackend() if kind == "local" else RedisBackend.from_url(redis_server.url, timeout=2.0)
            assert isinstance(backend, Backend)
            async with backend:
                await backend.connect()
                decision = await backend.acquire(f"protocol-{kind}", Policy(5, 1.0, name="protocol"))
            return decision.allowed, decision.remaining

        allowed, remaining = asyncio.run(scenario())
        assert allowed and remaining == 4.0


class FormHandler(RateLimitedHandler):
    async def prepare(self) -> None:
        await super().prepare()
        self.started = True

    def post(self) -> None:
        self.write({"a": self.get_body_argument("a"), "size": len(self.request.body)})


class NoSuperPrepareHandler(RateLimitedHandler):
    def prepare(self) -> None:  # forgets super().prepare(): not limited, but its body must not be lost
        pass

    def post(self) -> None:
        self.write({"body": self.request.body.decode()})


class TestBodies:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        routes = [(r"/form", FormHandler), (r"/raw", NoSuperPrepareHandler)]
        return tornado.web.Application(routes, rate_limit=RateLimitConfig())

    @pytest.mark.gen_test
    async def test_an_allowed_request_gets_its_body_and_form_arguments(self, fetch: Fetch) -> None:
        """The body a limited handler streams is whole in self.request.body, its form arguments parsed."""
        response = await fetch("/form", method="POST", body="a=1&b=" + "x" * 10_000)
        assert response.code == 200 and json.loads(response.body) == {"a": "1", "size": 10_006}

    @pytest.mark.gen_test
    async def test_a_subclass_whose_prepare_skips_super_still_gets_its_body(self, fetch: Fetch) -> None:
        """The body is gathered whatever prepare() does: a subclass's own prepare cannot lose it."""
        response = await fetch("/raw", method="POST", body="hello")
        assert response.code == 200 and json.loads(response.body) == {"body": "hello"}


class StreamingHandler(RateLimitedHandler):
    def data_received(self, chunk: bytes) -> None:  # streams the body itself: nothing is gathered
        pass

    def post(self) -> None:
        self.write({"reached": True})


class TestBodiesAsTornadoChecksThem:
    @pytest.fixture
    def app(self) -> tornado.web.Application:
        routes = [(r"/form", FormHandler), (r"/stream", StreamingHandler)]
        return tornado.web.Application(routes, rate_limit=RateLimitConfig(), xsrf_cookies=True)

    @pytest.mark.gen_test
    async def test_a_form_with_its_xsrf_token_in_the_body_passes(self, fetch: Fetch) -> None:
        """xsrf_cookies: the _xsrf field of a streamed form is checked once the body is in, and passes."""
        headers = {"Cookie": "_xsrf=2|abcdabcd|0123456789abcdef0123456789abcdef|1700000000"}
        token = "2|abcdabcd|0123456789abcdef0123456789abcdef|1700000000"
        response = await fetch("/form", method="POST", body=f"a=1&_xsrf={token}", headers=headers)
        assert response.code == 200, response.body

    @pytest.mark.gen_test
    async def test_a_form_with_a_wrong_xsrf_token_is_refused(self, fetch: Fetch) -> None:
        """A wrong _xsrf field in the body: 403, and the method never runs."""
        headers = {"Cookie": "_xsrf=2|abcdabcd|0123456789abcdef0123456789abcdef|1700000000"}
        response = await fetch(
            "/form",
            method="POST",
            body="a=1&_xsrf=2|abcdabcd|ffffffffffffffffffffffffffffffff|1700000000",
            headers=headers,
        )
        assert response.code == 403 and b'"a"' not in response.body

    @pytest.mark.gen_test
    async def test_a_subclass_streaming_its_body_keeps_tornados_xsrf_check(self, fetch: Fetch) -> None:
        """A subclass with its own data_received gathers no body, so the check cannot wait for one: a form
        without a token is refused before prepare(), as Tornado does (it once reached the method)."""
        response = await fetch("/stream", method="POST", body="a=1")
        assert response.code == 403 and b"reached" not in response.body

    @pytest.mark.gen_test
    async def test_a_malformed_body_gets_400_and_no_error_in_the_log(
        self, fetch: Fetch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A form body in an unsupported encoding: 400 (as Tornado answers it), no traceback logged."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": "br",
            "X-XSRFToken": "2|abcdabcd|0123456789abcdef0123456789abcdef|1700000000",
            "Cookie": "_xsrf=2|abcdabcd|0123456789abcdef0123456789abcdef|1700000000",
        }
        with caplog.at_level(logging.WARNING):
            response = await fetch("/form", method="POST", body="a=1", headers=headers)
        assert response.code == 400
        assert "Traceback" not in caplog.text and "Exception in callback" not in caplog.text
