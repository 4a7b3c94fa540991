"""RateLimitedHandler subclasses as users write them: policies, costs, keys, their own prepare()."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from tornado.httpclient import HTTPResponse

from tests.test_auth import bearer, token
from tornado_rate_limiter.handlers import Identity, RateLimitedHandler
from tornado_rate_limiter.limiter import Policy

Fetch = Callable[..., Awaitable[HTTPResponse]]


class SyncHandler(RateLimitedHandler):
    runs: ClassVar[int] = 0

    def get(self) -> None:
        type(self).runs += 1
        self.write("sync")


class AsyncHandler(RateLimitedHandler):
    async def post(self) -> None:
        self.write("async")

    async def delete(self) -> None:
        self.set_status(204)


class ExemptHandler(RateLimitedHandler):
    rate_limit_policy = None

    def get(self) -> None:
        self.write("free")


class UsersOnlyHandler(RateLimitedHandler):
    rate_limit_policy: ClassVar[Any] = {"ip": None, "user": Policy(2, 0.01, name="users-only")}

    def get(self) -> None:
        self.write("ok")


class CostlyHandler(RateLimitedHandler):
    rate_limit_policy = Policy(10, 0.01, name="costly")

    def rate_limit_cost(self) -> float:
        return float(self.get_argument("cost", "1"))

    def get(self) -> None:
        self.write("ok")


class ApiKeyHandler(RateLimitedHandler):
    rate_limit_policy = Policy(2, 0.01, name="api-key")

    def rate_limit_identity(self) -> Identity:
        return Identity("user", self.request.headers.get("X-Api-Key", "anonymous"))

    def get(self) -> None:
        self.write({"identity": str(self.rate_limit_identity_used)})


class OwnPrepareHandler(RateLimitedHandler):
    prepared: ClassVar[int] = 0

    async def prepare(self) -> None:
        await super().prepare()
        type(self).prepared += 1

    def get(self) -> None:
        self.write("prepared")


ROUTES = [
    (r"/sync", SyncHandler),
    (r"/async", AsyncHandler),
    (r"/exempt", ExemptHandler),
    (r"/users-only", UsersOnlyHandler),
    (r"/costly", CostlyHandler),
    (r"/api-key", ApiKeyHandler),
    (r"/own-prepare", OwnPrepareHandler),
]


@pytest.fixture
def extra_routes() -> list[Any]:
    return ROUTES


class TestSubclasses:
    @pytest.mark.gen_test
    async def test_a_denied_request_never_reaches_the_handler_method(self, fetch: Fetch) -> None:
        """Sync get() runs for the 3 allowed requests and not for the 2 denied ones."""
        SyncHandler.runs = 0
        codes = [(await fetch("/sync")).code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert SyncHandler.runs == 3

    @pytest.mark.gen_test
    async def test_async_methods_and_every_http_method_are_limited(self, fetch: Fetch) -> None:
        """Async post() and delete() pass through the same check as get()."""
        first = await fetch("/async", method="POST", body="x")
        second = await fetch("/async", method="DELETE")
        assert (first.code, first.body, second.code) == (200, b"async", 204)
        assert second.headers["X-RateLimit-Remaining"] == "1"

    @pytest.mark.gen_test
    async def test_none_exempts_the_handler(self, fetch: Fetch) -> None:
        """rate_limit_policy = None: never limited, no rate-limit headers."""
        responses = [await fetch("/exempt") for _ in range(5)]
        assert {r.code for r in responses} == {200}
        assert "X-RateLimit-Limit" not in responses[-1].headers

    @pytest.mark.gen_test
    async def test_a_mapping_sets_policies_per_identity_kind(self, fetch: Fetch) -> None:
        """{"ip": None, "user": Policy(2, ...)}: anonymous clients pass freely, users get 2."""
        anonymous = [(await fetch("/users-only")).code for _ in range(5)]
        user = [(await fetch("/users-only", headers=bearer(token()))).code for _ in range(3)]
        assert anonymous == [200] * 5
        assert user == [200, 200, 429]

    @pytest.mark.gen_test
    async def test_rate_limit_cost_charges_expensive_requests_more(self, fetch: Fetch) -> None:
        """A request costing 7 leaves 3 of 10; the next one costing 4 is denied."""
        first = await fetch("/costly?cost=7")
        second = await fetch("/costly?cost=4")
        assert (first.code, first.headers["X-RateLimit-Remaining"], second.code) == (200, "3", 429)

    @pytest.mark.gen_test
    async def test_rate_limit_identity_can_be_overridden(self, fetch: Fetch) -> None:
        """Keyed by an API key header: each key has its own bucket."""
        for _ in range(2):
            await fetch("/api-key", headers={"X-Api-Key": "k1"})
        third = await fetch("/api-key", headers={"X-Api-Key": "k1"})
        other = await fetch("/api-key", headers={"X-Api-Key": "k2"})
        assert (third.code, other.code) == (429, 200)
        assert json.loads(other.body) == {"identity": "user:k2"}

    @pytest.mark.gen_test
    async def test_a_subclass_prepare_runs_after_the_check(self, fetch: Fetch) -> None:
        """A prepare() calling super().prepare() first is cut short when the request is denied."""
        OwnPrepareHandler.prepared = 0
        codes = [(await fetch("/own-prepare")).code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert OwnPrepareHandler.prepared == 3
