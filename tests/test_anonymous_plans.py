"""The memo of anonymous requests' plans (who counts, which limits, exemption, key and cost): it must
decide as the uncached check does whatever varies between requests, on both backends."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from tornado_rate_limiter.app.service import ServiceApplication, make_app
from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.handlers import SETTINGS_KEY, Identity, RateLimitedHandler, ratelimited
from tornado_rate_limiter.limiter import RateLimiter
from tornado_rate_limiter.limiter.policies import parse_policies

Fetch = Callable[..., Awaitable[HTTPResponse]]

POLICIES = """
[policies.general]
capacity = 50
refill_rate = 0.001

[policies.search]
capacity = 20
refill_rate = 0.001

[identities.ip]
policies = ["general"]

[[routes]]
path = "^/plans/search"
cost = 5
policies = { ip = ["search"] }

[exempt]
networks = ["10.0.0.0/8"]
"""


class PlannedHandler(RateLimitedHandler):
    """Decides as RateLimitedHandler does: its requests go through the memo."""

    def get(self, *args: str) -> None:
        self.write({"identity": str(self.rate_limit_identity_used), "cost": self.rate_limit_cost()})


class OwnKeyHandler(PlannedHandler):
    """Counts requests by a header of theirs: the memo, which does not know it, must not be used."""

    def rate_limit_key(self, identity: Identity) -> str:
        return "team:" + self.request.headers.get("X-Team", "none")


class UserBeforeSuperHandler(PlannedHandler):
    """Sets current_user in its own prepare() before the check: that request is not anonymous."""

    def prepare(self) -> Awaitable[None]:
        user = self.request.headers.get("X-Test-User")
        if user:
            self.current_user = user
        return super().prepare()


class ArgumentCost(PlannedHandler):
    """Charges what the query string says: not something the memo's key holds."""

    def rate_limit_cost(self) -> float:
        return float(self.get_argument("cost", "1"))


@pytest.fixture
def service_settings() -> Settings:
    return Settings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.fixture
def app(service_settings: Settings, service_limiter: RateLimiter) -> ServiceApplication:
    routes: list[Any] = [
        (r"/plans/own-key", OwnKeyHandler),
        (r"/plans/user-first", UserBeforeSuperHandler),
        (r"/plans/cost", ArgumentCost),
        (r"/plans/(.*)", PlannedHandler),
    ]
    policies = parse_policies(POLICIES.encode(), "plans.toml")
    return make_app(service_settings, routes, limiter=service_limiter, policies=policies)


def remaining(response: HTTPResponse) -> int:
    return int(response.headers["X-RateLimit-Remaining"])


@pytest.mark.gen_test
async def test_each_route_keeps_its_own_limits_and_cost(fetch: Fetch) -> None:
    """The same client alternates between two routes: each answer names its route's policy and cost,
    whichever was planned first."""
    client = {"X-Forwarded-For": "203.0.113.10"}
    answers = []
    for path in ("/plans/search", "/plans/other", "/plans/search", "/plans/other"):
        answers.append(await fetch(path, headers=client))
    assert [response.code for response in answers] == [200] * 4
    assert [response.headers["RateLimit-Policy"].split(";")[0] for response in answers] == [
        '"search"',
        '"general"',
        '"search"',
        '"general"',
    ]
    assert [remaining(response) for response in answers] == [15, 49, 10, 48]


@pytest.mark.gen_test
async def test_clients_are_told_apart_by_the_forwarded_address(fetch: Fetch) -> None:
    """Two clients behind the trusted proxy: each counts against its own address, and an exempt one is
    never limited, however the memo was filled."""
    first, second, exempt = ({"X-Forwarded-For": address} for address in ("203.0.113.1", "203.0.113.2", "10.1.2.3"))
    assert remaining(await fetch("/plans/a", headers=first)) == 49
    assert remaining(await fetch("/plans/a", headers=first)) == 48
    answer = await fetch("/plans/a", headers=second)
    assert remaining(answer) == 49
    assert answer.body == b'{"identity": "ip:203.0.113.2", "cost": 1.0}'
    for _ in range(2):
        free = await fetch("/plans/a", headers=exempt)
        assert free.code == 200
        assert "X-RateLimit-Remaining" not in free.headers


@pytest.mark.gen_test
async def test_a_handler_with_its_own_key_or_cost_is_not_planned_for(fetch: Fetch) -> None:
    """OwnKeyHandler counts by a header and ArgumentCost charges the query's cost: from one client,
    each request gets its own key and cost, not the first request's."""
    client = {"X-Forwarded-For": "203.0.113.20"}
    assert remaining(await fetch("/plans/own-key", headers={**client, "X-Team": "red"})) == 49
    assert remaining(await fetch("/plans/own-key", headers={**client, "X-Team": "blue"})) == 49
    assert remaining(await fetch("/plans/own-key", headers={**client, "X-Team": "red"})) == 48
    assert remaining(await fetch("/plans/cost?cost=3", headers=client)) == 47
    assert remaining(await fetch("/plans/cost?cost=7", headers=client)) == 40


@pytest.mark.gen_test
async def test_a_user_set_before_the_check_is_counted_as_that_user(fetch: Fetch) -> None:
    """The same client, anonymous and then with current_user set by the subclass: the second request
    counts against the user, not the address the first one planned."""
    client = {"X-Forwarded-For": "203.0.113.30"}
    anonymous = await fetch("/plans/user-first", headers=client)
    assert b'"identity": "ip:203.0.113.30"' in anonymous.body
    as_user = await fetch("/plans/user-first", headers={**client, "X-Test-User": "carol"})
    assert b'"identity": "user:carol"' in as_user.body


@pytest.mark.gen_test
async def test_the_memo_is_bounded_whatever_the_paths(fetch: Fetch, app: ServiceApplication) -> None:
    """More distinct paths than the memo holds: it never grows past its bound."""
    limit = ratelimited._CACHED_PLANS
    ratelimited._CACHED_PLANS = 8
    try:
        for number in range(20):
            assert (await fetch(f"/plans/path-{number}", headers={"X-Forwarded-For": "203.0.113.40"})).code == 200
        plans = app.settings[SETTINGS_KEY]._plans
        assert plans is not None
        assert 0 < len(plans) <= 8
    finally:
        ratelimited._CACHED_PLANS = limit


def test_a_new_configuration_starts_a_new_memo(app: ServiceApplication) -> None:
    """Plans are kept per configuration: a reload's new PolicySet never finds the old one's plans."""
    config = app.settings[SETTINGS_KEY]
    current = config.policy_set
    plans = config.plans_for(current)
    assert config.plans_for(current) is plans
    reloaded = parse_policies(POLICIES.encode(), "plans.toml")
    assert config.plans_for(reloaded) is not plans
    assert len(config.plans_for(reloaded)) == 0
