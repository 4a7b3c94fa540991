"""/check, the decision endpoint for proxies, on both backends: the requests nginx auth_request,
Traefik ForwardAuth and Envoy ext_authz (HTTP) send, as each documents them, get the limiter's answer
for the original request under the policy file: routes, costs, tiers, clients through trusted proxies."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tornado.httpclient import HTTPResponse

from tests.conftest import JWT_SECRET
from tests.test_auth import token
from tornado_rate_limiter.app.service import ServiceApplication, make_app
from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.limiter import RateLimiter
from tornado_rate_limiter.limiter.policies import parse_policies

Fetch = Callable[..., Awaitable[HTTPResponse]]

POLICIES = b"""
[policies.burst]
capacity = 3
refill_rate = 0.001

[policies.search]
capacity = 10
refill_rate = 0.001

[policies.pro]
capacity = 100
refill_rate = 0.001

[identities.ip]
policies = ["burst"]

[identities.user]
tier_claim = "tier"
default_tier = "free"
[identities.user.tiers]
free = ["burst"]
pro = ["pro"]

[[routes]]
path = "^/api/search"
methods = ["POST"]
cost = 5
policies = { ip = ["search"], user = ["search"] }
"""


PROXY = (ipaddress.ip_network("127.0.0.1/32"),)  # the proxy in front is the service's peer, 127.0.0.1


@pytest.fixture
def forward_auth() -> str:
    """RATE_LIMIT_FORWARD_AUTH: the proxy asking (a class overrides it)."""
    return "nginx"


@pytest.fixture
def trusted_proxies() -> tuple[ipaddress.IPv4Network, ...]:
    """RATE_LIMIT_TRUSTED_PROXIES: the test client's address, so its headers are a proxy's."""
    return PROXY


@pytest.fixture
def app(
    service_limiter: RateLimiter, forward_auth: str, trusted_proxies: tuple[ipaddress.IPv4Network, ...]
) -> ServiceApplication:
    settings = Settings(jwt_secret=JWT_SECRET, trusted_proxies=trusted_proxies, forward_auth=forward_auth)
    return make_app(settings, limiter=service_limiter, policies=parse_policies(POLICIES, "limits.toml"))


def client_address() -> str:
    return f"198.51.100.{uuid.uuid4().int % 254 + 1}"


def nginx(address: str, method: str = "GET", uri: str = "/api/items", **more: str) -> dict[str, str]:
    """What deploy/nginx's auth_request location sends: the original method and URI, and the client
    address appended to X-Forwarded-For ($proxy_add_x_forwarded_for)."""
    return {"X-Original-Method": method, "X-Original-URI": uri, "X-Forwarded-For": address, **more}


class TestNginx:
    @pytest.mark.gen_test
    async def test_allowed_then_denied_with_the_headers(self, fetch: Fetch) -> None:
        """3 tokens: three 200s with the rate-limit headers and no body, then a 429 with Retry-After,
        the headers and the problem body."""
        address = client_address()
        answers = [await fetch("/check", headers=nginx(address)) for _ in range(4)]
        assert [response.code for response in answers] == [200, 200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == '"burst";q=3;w=3000'
        assert answers[2].headers["X-RateLimit-Remaining"] == "0" and answers[0].body == b""
        denied = answers[3]
        assert int(denied.headers["Retry-After"]) >= 1 and denied.headers["RateLimit"].startswith('"burst";r=0;')
        assert json.loads(denied.body)["violated-policies"] == ["burst"]

    @pytest.mark.gen_test
    async def test_the_proxy_chooses_a_deny_status_it_can_map(self, fetch: Fetch) -> None:
        """X-RateLimit-Deny-Status: 403 (nginx's auth_request denies on 401 and 403 only): the denial is a
        403 with the same headers; a status it may not ask for (500) leaves 429."""
        address = client_address()
        for _ in range(3):
            await fetch("/check", headers=nginx(address))
        denied = await fetch("/check", headers=nginx(address, **{"X-RateLimit-Deny-Status": "403"}))
        assert denied.code == 403 and int(denied.headers["Retry-After"]) >= 1 and "RateLimit" in denied.headers
        refused = await fetch("/check", headers=nginx(address, **{"X-RateLimit-Deny-Status": "500"}))
        assert refused.code == 429

    @pytest.mark.gen_test
    async def test_clients_are_told_apart_and_a_forged_address_changes_nothing(self, fetch: Fetch) -> None:
        """Two clients behind the proxy have a limit each; a client that sends its own X-Forwarded-For
        (nginx appends the real address after it) is still counted as itself."""
        first, second = client_address(), client_address()
        for _ in range(3):
            await fetch("/check", headers=nginx(first))
        assert (await fetch("/check", headers=nginx(second))).code == 200
        forged = await fetch("/check", headers=nginx(f"{second}, {first}"))  # "I am second", says first
        assert forged.code == 429

    @pytest.mark.gen_test
    async def test_the_route_table_applies_to_the_original_request(self, fetch: Fetch) -> None:
        """POST /api/search?q=x costs 5 of search's 10; GET on it is not that route."""
        address = client_address()
        posts = [await fetch("/check", headers=nginx(address, "POST", "/api/search?q=x")) for _ in range(3)]
        assert [response.code for response in posts] == [200, 200, 429]
        assert posts[0].headers["RateLimit-Policy"] == '"search";q=10;w=10000'
        assert (await fetch("/check", headers=nginx(address, "GET", "/api/search"))).headers[
            "RateLimit-Policy"
        ] == '"burst";q=3;w=3000'

    @pytest.mark.gen_test
    async def test_the_forwarded_token_makes_the_user_with_its_tier(self, fetch: Fetch) -> None:
        """Authorization forwarded by the proxy: the user is counted, under its tier's policies."""
        bearer = {"Authorization": f"Bearer {token(sub=f'u{uuid.uuid4().hex[:8]}', tier='pro')}"}
        response = await fetch("/check", headers=nginx(client_address(), **bearer))
        assert response.code == 200 and response.headers["RateLimit-Policy"] == '"pro";q=100;w=100000'


def traefik(address: str, method: str = "POST", uri: str = "/api/search?q=traefik") -> dict[str, str]:
    """What Traefik's ForwardAuth sends: X-Forwarded-Method, -Proto, -Host, -Uri and -For."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "X-Forwarded-Uri": uri,
        "X-Forwarded-For": address,
    }


SEARCH = '"search";q=10;w=10000'
BURST = '"burst";q=3;w=3000'


class TestOneProxysHeaders:
    @pytest.mark.gen_test
    async def test_behind_nginx_traefiks_headers_are_ignored(self, fetch: Fetch) -> None:
        """RATE_LIMIT_FORWARD_AUTH=nginx: a client's X-Forwarded-Method/-Uri (Traefik's family) choose no
        route; X-Original-* say the request is GET /api/items."""
        headers = {**traefik(client_address()), "X-Original-Method": "GET", "X-Original-URI": "/api/items"}
        response = await fetch("/check", headers=headers)
        assert response.code == 200 and response.headers["RateLimit-Policy"] == BURST

    @pytest.mark.gen_test
    async def test_the_deny_status_is_a_4xx_in_ascii_digits(self, fetch: Fetch) -> None:
        """X-RateLimit-Deny-Status takes three ASCII digits of a 4xx: a Unicode digit, a 5xx or a longer
        number leave 429 (the Unicode digit answered 500 with a traceback before)."""
        address = client_address()
        for _ in range(3):
            await fetch("/check", headers=nginx(address))
        # Header bytes arrive as Latin-1 characters: "\xb2" is the byte of "²", a digit to str.isdigit.
        for asked, status in (
            ("\xb2", 429),
            ("4\xb2\xb3", 429),
            ("403", 403),
            ("418", 418),
            ("500", 429),
            ("0403", 429),
        ):
            response = await fetch("/check", headers={**nginx(address), "X-RateLimit-Deny-Status": asked})
            assert response.code == status, asked

    @pytest.mark.gen_test
    async def test_if_none_match_never_makes_a_304(self, fetch: Fetch) -> None:
        """``If-None-Match: *`` (or any ETag): /check answers 200 with no ETag, never 304, which a proxy
        takes for an error (nginx failed open on it)."""
        response = await fetch("/check", headers={**nginx(client_address()), "If-None-Match": "*"})
        assert response.code == 200 and "Etag" not in response.headers

    @pytest.mark.gen_test
    @pytest.mark.parametrize("uri", ["/api/%73earch", "/%61pi/search", "/api/sea%72ch;x=1", "http://app/api/%73earch"])
    async def test_every_spelling_of_a_route_is_that_route(self, fetch: Fetch, uri: str) -> None:
        """Spellings of ``^/api/search`` (cost 5 of 10) that slipped it through nginx are that route: the
        third search by one client is denied."""
        address = client_address()
        answers = [await fetch("/check", headers=nginx(address, "POST", uri)) for _ in range(3)]
        assert [response.code for response in answers] == [200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == SEARCH

    @pytest.mark.gen_test
    @pytest.mark.parametrize(
        "uri", ["//api/search", "/api/./search", "/api/x/../search", "/api/search/..", "/api%2Fsearch"]
    )
    async def test_a_spelling_that_is_another_route_as_written_is_a_400(self, fetch: Fetch, uri: str) -> None:
        """The same route once normalized, another as an application that keeps the path's structure (or
        decodes its encoded slashes) reads it: refused with 400, never admitted on the cheaper reading."""
        answers = [await fetch("/check", headers=nginx(client_address(), "POST", uri)) for _ in range(2)]
        assert [response.code for response in answers] == [400, 400]
        assert "is another route as" in json.loads(answers[0].body)["detail"]

    @pytest.mark.gen_test
    async def test_a_malformed_encoding_is_a_400(self, fetch: Fetch) -> None:
        """An original URI with a malformed percent-encoding is refused with 400 and a problem body saying
        where, never passed: its route cannot be known."""
        response = await fetch("/check", headers=nginx(client_address(), "POST", "/api/se%zzarch"))
        assert response.code == 400 and response.headers["Content-Type"] == "application/problem+json"
        assert "malformed percent-encoding '%zz'" in json.loads(response.body)["detail"]


class TestUntrustedPeer:
    @pytest.fixture
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network, ...]:
        return ()

    @pytest.mark.gen_test
    async def test_a_peer_that_is_no_trusted_proxy_is_limited_on_its_own_request(self, fetch: Fetch) -> None:
        """The peer is not a trusted proxy: X-Original-* and the deny status are not believed; /check limits
        the caller on its own method and path (burst for GET /check, not the search route it names)."""
        headers = {**nginx(client_address(), "POST", "/api/search"), "X-RateLimit-Deny-Status": "403"}
        answers = [await fetch("/check", headers=headers) for _ in range(4)]
        assert [response.code for response in answers] == [200, 200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == BURST


class TestTraefik:
    @pytest.fixture
    def forward_auth(self) -> str:
        return "traefik"

    @pytest.mark.gen_test
    async def test_traefik_forward_auth_headers(self, fetch: Fetch) -> None:
        """Traefik ForwardAuth sends X-Forwarded-Method, -Proto, -Host, -Uri and -For: the original
        request is read from them."""
        response = await fetch("/check", headers=traefik(client_address()))
        assert response.code == 200 and response.headers["X-RateLimit-Remaining"] == "5"

    @pytest.mark.gen_test
    async def test_a_deny_status_is_nginxs_alone(self, fetch: Fetch) -> None:
        """Traefik passes a 429 on as it is, and forwards a client's own headers when authRequestHeaders is
        unset: X-RateLimit-Deny-Status is not read behind it, so a client cannot choose its denials' status."""
        address = client_address()
        answers = [
            await fetch("/check", headers={**traefik(address), "X-RateLimit-Deny-Status": "401"}) for _ in range(3)
        ]
        assert [response.code for response in answers] == [200, 200, 429]

    @pytest.mark.gen_test
    async def test_a_clients_x_original_headers_are_ignored(self, fetch: Fetch) -> None:
        """Traefik forwards a client's own headers when authRequestHeaders is unset: a forged
        X-Original-Method/-URI choose nothing; Traefik's X-Forwarded-* say it is a search (cost 5)."""
        address = client_address()
        forged = {**traefik(address), "X-Original-Method": "GET", "X-Original-URI": "/api/items"}
        answers = [await fetch("/check", headers=forged) for _ in range(3)]
        assert [response.code for response in answers] == [200, 200, 429]
        assert answers[0].headers["RateLimit-Policy"] == SEARCH


class TestEnvoy:
    @pytest.fixture
    def forward_auth(self) -> str:
        return "envoy"

    @pytest.mark.gen_test
    async def test_envoy_ext_authz_appends_the_original_path(self, fetch: Fetch) -> None:
        """Envoy's HTTP ext_authz asks path_prefix + the original path with the original method: POST
        /check/api/search is the search route."""
        response = await fetch(
            "/check/api/search?q=envoy", method="POST", body="", headers={"X-Forwarded-For": client_address()}
        )
        assert response.code == 200 and response.headers["RateLimit-Policy"] == SEARCH

    @pytest.mark.gen_test
    async def test_neither_nginxs_nor_traefiks_headers_are_read(self, fetch: Fetch) -> None:
        """RATE_LIMIT_FORWARD_AUTH=envoy: X-Original-* and X-Forwarded-Method/-Uri choose nothing; the
        request's own GET /check/api/items is what is limited."""
        address = client_address()
        headers = {**traefik(address), "X-Original-Method": "POST", "X-Original-URI": "/api/search"}
        response = await fetch("/check/api/items", headers=headers)
        assert response.code == 200 and response.headers["RateLimit-Policy"] == BURST


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RATE_LIMIT_HEADER = re.compile(r"^(ratelimit|ratelimit-policy|x-ratelimit-.*|retry-after)$")


def envoy_allows(name: str, section: str) -> bool:
    """Whether envoy.yaml's ``section`` (allowed_client_headers or ..._on_success) lets ``name`` through."""
    text = (DEPLOY / "envoy" / "envoy.yaml").read_text()
    block = text.split(f"{section}:", 1)[1].split("allowed_client_headers", 1)[0].split("- name:", 1)[0]
    patterns = re.findall(r"- (exact|prefix): (\S+)", block)
    return any(name == value if kind == "exact" else name.startswith(value) for kind, value in patterns)


@pytest.mark.gen_test
async def test_the_proxy_configs_pass_on_every_header_the_limiter_sends(fetch: Fetch) -> None:
    """Every rate-limit header of an allowed and of a denied /check answer is in Traefik's
    authResponseHeaders (allowed) and in Envoy's client header lists (allowed and denied)."""
    address = client_address()
    answers = [await fetch("/check", headers=nginx(address)) for _ in range(4)]
    allowed, denied = answers[0], answers[3]
    assert (allowed.code, denied.code) == (200, 429)
    traefik = (DEPLOY / "traefik" / "dynamic.yml").read_text().lower()
    for response, section in ((allowed, "allowed_client_headers_on_success"), (denied, "allowed_client_headers")):
        names = {name.lower() for name in response.headers if RATE_LIMIT_HEADER.match(name.lower())}
        assert len(names) >= 5
        for name in names:
            assert envoy_allows(name, section), (section, name)
            if response is allowed:
                assert f'- "{name}"' in traefik, name


class TestMisconfiguredProxy:
    @pytest.fixture
    def forward_auth(self) -> str:
        return "nginx"

    @pytest.mark.gen_test
    async def test_a_trusted_proxy_without_the_uri_header_is_named_in_the_log(
        self, fetch: Fetch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Traefik's headers sent to a limiter told RATE_LIMIT_FORWARD_AUTH=nginx: limited on its own path,
        which no route matches, so the log says which header was missing and which setting to check."""
        with caplog.at_level(logging.WARNING, logger="tornado_rate_limiter.forward_auth"):
            response = await fetch("/check", headers=traefik(client_address()))
        assert response.code == 200 and response.headers["RateLimit-Policy"] == BURST
        assert "without X-Original-URI: is RATE_LIMIT_FORWARD_AUTH right?" in caplog.text
