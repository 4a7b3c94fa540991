"""RateLimitedHandler under a policy file's configuration, on both backends: several limits per request,
tiers, routes and costs, shadow policies, exemptions, their headers and their metrics."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from prometheus_client import generate_latest
from tornado.httpclient import HTTPResponse

from tests.conftest import JWT_SECRET
from tests.test_auth import bearer, token
from tornado_rate_limiter.app.service import ServiceApplication, make_app
from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.handlers import SETTINGS_KEY, Identity, RateLimitConfig, RateLimitedHandler
from tornado_rate_limiter.limiter import Policy, RateLimiter
from tornado_rate_limiter.limiter.policies import parse_policies
from tornado_rate_limiter.limiter.policies.store import PolicyStore

Fetch = Callable[..., Awaitable[HTTPResponse]]

# burst would allow 4, daily allows 3: daily denies first, with burst untouched. trial is a shadow policy
# that would deny from the third request on.
POLICY_FILE = """
[policies.burst]
capacity = 4
refill_rate = 0.001

[policies.daily]
algorithm = "fixed_window"
limit = 3
window = 86400

[policies.trial]
algorithm = "sliding_window"
limit = 2
window = 3600
mode = "shadow"

[policies.pro-burst]
capacity = 10
refill_rate = 0.001

[policies.search]
capacity = 10
refill_rate = 0.001

[identities.ip]
policies = ["burst", "daily", "trial"]

[identities.user]
tier_claim = "tier"
default_tier = "free"
[identities.user.tiers]
free = ["burst", "daily", "trial"]
pro = ["pro-burst"]
internal = []

[[routes]]
path = "^/api/echo/search"
methods = ["POST"]
cost = 5
policies = { ip = ["search"], user = ["search"] }

[[routes]]
path = "^/api/echo/double"
cost = 2

[[routes]]
path = "^/api/echo/trial-only"
policies = { ip = ["trial"] }

[exempt]
networks = ["10.0.0.0/8", "2001:db8:42::/48"]
users = ["ops-bot"]
"""


class InCodeHandler(RateLimitedHandler):
    """A handler that names its policy in code: the configuration's lists do not apply to it."""

    rate_limit_policy = Policy(2, 0.001, name="in-code")

    def get(self) -> None:
        self.write("ok")


@pytest.fixture
def service_settings() -> Settings:
    return Settings(jwt_secret=JWT_SECRET, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.fixture
def app(service_settings: Settings, service_limiter: RateLimiter) -> ServiceApplication:
    policies = parse_policies(POLICY_FILE.encode(), "limits.toml")
    routes = [(r"/in-code", InCodeHandler)]
    return make_app(service_settings, routes, limiter=service_limiter, policies=policies, demo_routes=True)


def client(address: str) -> dict[str, str]:
    """Headers of a request from ``address``, as the trusted proxy in front (127.0.0.1) forwards it."""
    return {"X-Forwarded-For": address}


def fresh_address() -> str:
    return f"203.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def scraped(app: ServiceApplication) -> str:
    return generate_latest(app.settings[SETTINGS_KEY].limiter.metrics.registry).decode()


def problem(response: HTTPResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.body)
    return body


class TestRouteCase:
    @pytest.fixture
    def service_settings(self) -> Settings:
        return Settings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),), route_case="insensitive")

    @pytest.mark.gen_test
    async def test_insensitive_routes_match_letters_of_either_case(self, fetch: Fetch) -> None:
        """RATE_LIMIT_ROUTE_CASE=insensitive: POST /api/echo/SEARCH is the search route (cost 5)."""
        response = await fetch("/api/echo/SEARCH", method="POST", body="", headers=client(fresh_address()))
        assert response.headers["RateLimit-Policy"] == '"search";q=10;w=10000'


class TestSeveralLimits:
    @pytest.mark.gen_test
    async def test_headers_list_every_enforced_policy_and_the_x_fields_the_fewest_remaining(self, fetch: Fetch) -> None:
        """RateLimit-Policy and RateLimit list burst and daily (not the shadow trial); X-RateLimit-*
        describe daily, which has fewer left."""
        response = await fetch("/api/echo", headers=client(fresh_address()))
        assert response.code == 200
        assert response.headers["RateLimit-Policy"] == '"burst";q=4;w=4000, "daily";q=3;w=86400'
        assert response.headers["RateLimit"].startswith('"burst";r=3;t=1000, "daily";r=2;t=')
        assert (response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]) == ("3", "2")
        assert "trial" not in str(response.headers)

    @pytest.mark.gen_test
    async def test_a_denying_limit_charges_none(self, fetch: Fetch, app: ServiceApplication) -> None:
        """daily allows 3: the 4th and 5th requests are denied by daily alone, and burst (which would still
        admit one) stays at 1 left: a denied request charged nothing."""
        address = fresh_address()
        answers = [await fetch("/api/echo", headers=client(address)) for _ in range(5)]
        assert [response.code for response in answers] == [200, 200, 200, 429, 429]
        for denied in answers[3:]:
            assert problem(denied)["violated-policies"] == ["daily"]
            assert denied.headers["RateLimit"].startswith('"burst";r=1;')
            assert denied.headers["X-RateLimit-Limit"] == "3"  # the denier's, though burst has more left
            assert int(denied.headers["Retry-After"]) == problem(denied)["retry_after"] > 0
        metrics = scraped(app)
        assert 'rate_limit_policy_decisions_total{outcome="blocked",policy="daily"} 2.0' in metrics
        assert 'rate_limit_policy_decisions_total{outcome="allowed",policy="burst"} 5.0' in metrics
        assert 'rate_limit_blocked_total{identity="ip"} 2.0' in metrics

    @pytest.mark.gen_test
    async def test_every_enforced_denier_is_named_and_retry_after_is_the_longest(self, fetch: Fetch) -> None:
        """After a cost-2 and a cost-1 request, burst has 1 left and daily none: a cost-2 request is denied
        by both, named in order, and Retry-After is the longer wait (burst's 1000 s for one more token, or
        daily's window end, whichever is later)."""
        address = fresh_address()
        assert (await fetch("/api/echo/double", headers=client(address))).code == 200
        assert (await fetch("/api/echo", headers=client(address))).code == 200
        denied = await fetch("/api/echo/double", headers=client(address))
        assert problem(denied)["violated-policies"] == ["burst", "daily"]
        until_the_window_ends = 86400 - time.time() % 86400
        longest = max(1000, until_the_window_ends)
        assert abs(int(denied.headers["Retry-After"]) - longest) <= 2
        assert problem(denied)["detail"].startswith("Rate limits 'burst', 'daily' exceeded")


class TestShadow:
    @pytest.mark.gen_test
    async def test_a_shadow_denial_changes_nothing_and_is_counted_and_logged(
        self, fetch: Fetch, app: ServiceApplication, caplog: pytest.LogCaptureFixture
    ) -> None:
        """trial (shadow, 2 an hour) would deny the third request: it is still allowed, no header names
        trial, and rate_limit_shadow_blocked_total{policy="trial"} counts it, with a log line."""
        address = fresh_address()
        with caplog.at_level(logging.INFO, logger="tornado_rate_limiter.limiter"):
            answers = [await fetch("/api/echo", headers=client(address)) for _ in range(3)]
        assert [response.code for response in answers] == [200, 200, 200]
        assert all("trial" not in str(response.headers) for response in answers)
        metrics = scraped(app)
        assert 'rate_limit_shadow_blocked_total{policy="trial"} 1.0' in metrics
        assert 'rate_limit_policy_decisions_total{outcome="shadow_blocked",policy="trial"} 1.0' in metrics
        assert "shadow policy 'trial' would have denied ip:" in caplog.text

    @pytest.mark.gen_test
    async def test_shadow_policies_alone_never_deny_nor_set_headers(
        self, fetch: Fetch, app: ServiceApplication
    ) -> None:
        """A route limited by the shadow trial only: every request passes, with no rate-limit header."""
        address = fresh_address()
        answers = [await fetch("/api/echo/trial-only", headers=client(address)) for _ in range(4)]
        assert [response.code for response in answers] == [200] * 4
        assert all("RateLimit" not in response.headers for response in answers)
        assert 'rate_limit_shadow_blocked_total{policy="trial"} 2.0' in scraped(app)


class TestTiersAndRoutes:
    @pytest.mark.gen_test
    async def test_the_tier_comes_from_the_claim(self, fetch: Fetch) -> None:
        """tier=pro gets pro-burst; an unknown or absent tier gets free's list; internal is not limited."""
        user = uuid.uuid4().hex[:8]
        pro = await fetch("/api/echo", headers=bearer(token(sub=f"p{user}", tier="pro")))
        assert pro.headers["RateLimit-Policy"] == '"pro-burst";q=10;w=10000'
        for tier in ("gold", None):
            free = await fetch("/api/echo", headers=bearer(token(sub=f"f{user}{tier}", tier=tier)))
            assert free.headers["RateLimit-Policy"].startswith('"burst";q=4;w=4000, "daily"')
        internal = await fetch("/api/echo", headers=bearer(token(sub=f"i{user}", tier="internal")))
        assert internal.code == 200 and "RateLimit" not in internal.headers

    @pytest.mark.gen_test
    async def test_a_route_has_its_cost_and_its_policies(self, fetch: Fetch) -> None:
        """POST /api/echo/search costs 5 of search's 10: two pass, the third is denied by search alone;
        GET on the same path matches no route and uses the address's policies."""
        address = fresh_address()
        posts = [await fetch("/api/echo/search", method="POST", body="", headers=client(address)) for _ in range(3)]
        assert [response.code for response in posts] == [200, 200, 429]
        assert posts[0].headers["RateLimit-Policy"] == '"search";q=10;w=10000'
        assert posts[0].headers["X-RateLimit-Remaining"] == "5"
        assert problem(posts[2])["violated-policies"] == ["search"]
        get = await fetch("/api/echo/search", headers=client(address))
        assert get.code == 200 and get.headers["RateLimit-Policy"].startswith('"burst"')

    @pytest.mark.gen_test
    async def test_a_route_spelt_otherwise_is_still_that_route(self, fetch: Fetch) -> None:
        """The application's /api/echo/(.*) handler serves /api/echo/%73earch and /api/echo/search;v=1 as
        the search: routes match the normalized path, so both are charged as the search route."""
        address = fresh_address()
        spellings = ["/api/echo/%73earch", "/api/echo/s%65arch", "/api/echo/sea%72ch;v=1"]
        posts = [await fetch(path, method="POST", body="", headers=client(address)) for path in spellings]
        assert [response.code for response in posts] == [200, 200, 429]
        assert {response.headers["RateLimit-Policy"] for response in posts} == {'"search";q=10;w=10000'}

    @pytest.mark.gen_test
    async def test_a_path_that_tornado_routes_otherwise_is_a_400(self, fetch: Fetch) -> None:
        """Tornado routes /api/echo/x/../search as written (its handler gets ``x/../search``), the route table
        on the normalized /api/echo/search: another route each way, so it is refused, never the cheaper."""
        response = await fetch("/api/echo/x/../search", method="POST", body="", headers=client(fresh_address()))
        assert response.code == 400 and "is another route as" in problem(response)["detail"]

    @pytest.mark.gen_test
    async def test_routes_are_case_sensitive_by_default(self, fetch: Fetch) -> None:
        """POST /api/echo/SEARCH is not the search route unless RATE_LIMIT_ROUTE_CASE=insensitive."""
        response = await fetch("/api/echo/SEARCH", method="POST", body="", headers=client(fresh_address()))
        assert response.headers["RateLimit-Policy"].startswith('"burst"')

    @pytest.mark.gen_test
    async def test_a_malformed_percent_encoding_is_a_400(self, fetch: Fetch) -> None:
        """A path whose percent-encoding is malformed cannot be matched to a route: 400 with a problem body
        naming it, never the handler."""
        response = await fetch("/api/echo/se%zzarch", method="POST", body="x", headers=client(fresh_address()))
        assert response.code == 400 and problem(response)["detail"].startswith("malformed percent-encoding '%zz'")
        assert response.headers["Content-Type"] == "application/problem+json"

    @pytest.mark.gen_test
    async def test_a_handler_naming_its_policy_in_code_keeps_it(self, fetch: Fetch) -> None:
        """InCodeHandler's own policy applies (2, then 429), not the configuration's lists."""
        address = fresh_address()
        answers = [await fetch("/in-code", headers=client(address)) for _ in range(3)]
        assert [response.code for response in answers] == [200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == '"in-code";q=2;w=2000'


class TestExemptions:
    @pytest.mark.gen_test
    async def test_exempt_networks_and_users_are_never_limited_and_are_counted(
        self, fetch: Fetch, app: ServiceApplication
    ) -> None:
        """Clients in 10.0.0.0/8 and 2001:db8:42::/48, and the user ops-bot, pass every time with no
        rate-limit header; rate_limit_exempt_total counts them. A neighbour outside is limited."""
        exempt = [client("10.9.8.7"), client("2001:db8:42:1::5"), bearer(token(sub="ops-bot"))]
        for headers in exempt:
            answers = [await fetch("/api/echo", headers=headers) for _ in range(5)]
            assert [response.code for response in answers] == [200] * 5
            assert all("RateLimit" not in response.headers for response in answers)
        assert "rate_limit_exempt_total 15.0" in scraped(app)
        outside = [await fetch("/api/echo", headers=client("11.0.0.1")) for _ in range(4)]
        assert outside[-1].code == 429

    @pytest.mark.gen_test
    async def test_a_user_from_an_exempt_network_is_exempt(self, fetch: Fetch) -> None:
        """The network is about the request's address, whoever is counted: a user behind the office
        network is not limited either."""
        headers = {**client("10.1.1.1"), **bearer(token(sub=f"u{uuid.uuid4().hex[:8]}"))}
        answers = [await fetch("/api/echo", headers=headers) for _ in range(5)]
        assert [response.code for response in answers] == [200] * 5


class TestReloadInProcess:
    @pytest.fixture
    def policy_path(self, tmp_path: Path) -> Path:
        path = tmp_path / "limits.toml"
        path.write_text(POLICY_FILE)
        return path

    @pytest.fixture
    def app(self, service_settings: Settings, service_limiter: RateLimiter, policy_path: Path) -> ServiceApplication:
        store = PolicyStore(policy_path)
        return make_app(service_settings, limiter=service_limiter, policies=store, demo_routes=True)

    @pytest.mark.gen_test
    async def test_a_reload_applies_from_the_next_request_and_a_kept_policy_keeps_its_state(
        self, fetch: Fetch, app: ServiceApplication, policy_path: Path
    ) -> None:
        """After 2 requests, the file drops daily and raises burst's capacity to 6: the next request sees
        burst alone, and burst's bucket kept the 2 tokens it had (r=1 after this one), not a full new one."""
        address = fresh_address()
        for _ in range(2):
            await fetch("/api/echo", headers=client(address))
        policy_path.write_text(
            POLICY_FILE.replace("capacity = 4", "capacity = 6").replace(
                '"burst", "daily", "trial"]\n\n[identities.user]', '"burst"]\n\n[identities.user]'
            )
        )
        store = app.settings[SETTINGS_KEY].policy_source
        assert store.reload() == "ok"
        response = await fetch("/api/echo", headers=client(address))
        assert response.headers["RateLimit-Policy"] == '"burst";q=6;w=6000'
        assert response.headers["RateLimit"].startswith('"burst";r=1;')
        metrics = scraped(app)
        assert 'rate_limit_config_reloads_total{result="ok"} 1.0' in metrics
        assert f'rate_limit_config_info{{sha256="{store.current.sha256}"}} 1.0' in metrics


class ApiKeyHandler(RateLimitedHandler):
    """Counts requests by an API key, a kind of identity of the application's own."""

    def rate_limit_identity(self) -> Identity:
        return Identity("apikey", self.request.headers.get("X-Api-Key", "none"))

    def get(self) -> None:
        self.write("ok")


class TestPoliciesByKindInCode:
    @pytest.fixture
    def app(self, service_limiter: RateLimiter) -> tornado.web.Application:
        # Both policies keep the default name: their keys (apikey:..., ip:...) never meet.
        config = RateLimitConfig(limiter=service_limiter, policies={"apikey": Policy(2, 0.001), "ip": Policy(9, 1)})
        return tornado.web.Application([(r"/keyed", ApiKeyHandler)], rate_limit=config)

    @pytest.mark.gen_test
    async def test_a_kind_of_the_applications_own_gets_its_policy(self, fetch: Fetch) -> None:
        """policies={"apikey": ...}: requests counted by API key are limited by it (2, then 429)."""
        key = {"X-Api-Key": uuid.uuid4().hex}
        answers = [await fetch("/keyed", headers=key) for _ in range(3)]
        assert [response.code for response in answers] == [200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == '"default";q=2;w=2000'
