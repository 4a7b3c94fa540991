"""deploy/traefik/ as shipped, end to end: a real Traefik 3 (ForwardAuth) in front of a real application
process (tests/lenient_app.py, which echoes what reached it), asking the limiter on a real Redis, and
attacks sent through it byte for byte. Clients connect from distinct loopback addresses (127.0.0.2 and
up), so Traefik sees them as different clients and says so in X-Forwarded-For, as it would for clients
on the internet. Each attack is counted: a client never gets more 200s than its policy allows.

Every Traefik runs twice over: with the shipped ``authRequestHeaders`` (only Authorization goes to
/check) and without it (Traefik's default, where every client header goes to /check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import proxy_stack, raw_http
from tests.proxy_stack import SEARCH_SPELLINGS, SEARCHES, lenient_app, policy_file
from tests.redis_process import RedisProcess
from tests.service_process import ServiceProcess
from tests.traefik_process import STATIC, Traefik, traefik_binary

pytestmark = pytest.mark.process

BURST = 3
RATE_LIMIT_HEADERS = (
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
VARIANTS = ["shipped", "all-headers"]
Headers = list[tuple[str, str | bytes]]  # as raw_http sends them: a value may be bytes


@dataclass
class Stack:
    """The processes of one run: Redis, the application, the limiter and Traefik (``shipped``, and
    ``all_headers`` without authRequestHeaders when asked for), and what the shipped Traefik logged at start."""

    redis: RedisProcess
    app: ServiceProcess
    limiter: ServiceProcess
    shipped: Traefik
    all_headers: Traefik | None
    start_log: str

    def proxy(self, variant: str) -> Traefik:
        proxy = self.shipped if variant == "shipped" else self.all_headers
        assert proxy is not None
        return proxy


_sources = iter(range(2, 255))


def new_client() -> str:
    """A loopback address no other request of this module came from: a client with a limit of its own."""
    return f"127.0.0.{next(_sources)}"


def send(proxy: Traefik, source: str, target: str | bytes = "/", headers: Headers | None = None) -> raw_http.Answer:
    """One request through ``proxy`` from ``source``, byte for byte, with a bounded wait."""
    return raw_http.request(proxy.port, target, headers, source=source, timeout=5)


def statuses(proxy: Traefik, source: str, count: int, target: str = "/", headers: Headers | None = None) -> list[int]:
    return [send(proxy, source, target, headers).status for _ in range(count)]


def seen(answer: raw_http.Answer) -> dict[str, Any]:
    """What the application saw of the request (its method, path and headers), from its echo."""
    assert answer.status == 200 and answer.headers["server"].startswith("WSGIServer"), answer
    result: dict[str, Any] = json.loads(answer.body)
    return result


@contextmanager
def running_stack(directory: Path, *, all_headers: bool) -> Iterator[Stack]:
    """Start Redis, the application, the limiter (RATE_LIMIT_FORWARD_AUTH=traefik, Traefik trusted) and
    Traefik; stop every one of them, whatever happens."""
    assert traefik_binary(), "traefik is missing: scripts/ensure-traefik installs it (make test runs it)"
    redis_server = RedisProcess().start()
    app, limiter = lenient_app(), proxy_stack.limiter(redis_server, policy_file(directory, BURST), "traefik")
    started: list[ServiceProcess | Traefik] = []
    try:
        app.start()
        started.append(app)
        limiter.start()
        started.append(limiter)
        (directory / "shipped").mkdir()
        shipped = Traefik(directory / "shipped", limiter.port, app.port).start()
        started.append(shipped)
        start_log = shipped.log()
        every = None
        if all_headers:
            (directory / "all-headers").mkdir()
            every = Traefik(directory / "all-headers", limiter.port, app.port, forward_all_headers=True).start()
            started.append(every)
        yield Stack(redis_server, app, limiter, shipped, every, start_log)
    finally:
        for process in reversed(started):
            process.stop()
        redis_server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the tests that only send requests: each test's clients are new addresses."""
    with running_stack(tmp_path_factory.mktemp("traefik"), all_headers=True) as running:
        yield running


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of the test's own, for a test that stops part of it."""
    with running_stack(tmp_path, all_headers=False) as running:
        yield running


def test_each_client_gets_its_limit_then_the_limiters_429(stack: Stack) -> None:
    """Three 200s from the application, then the limiter's 429 as it sent it (Retry-After, the rate-limit
    headers, the problem body); another client still has its own three."""
    client = new_client()
    answers = [send(stack.shipped, client, "/a") for _ in range(BURST + 1)]
    assert [answer.status for answer in answers] == [200, 200, 200, 429]
    denied = answers[-1]
    assert denied.headers["server"].startswith("TornadoServer")  # the limiter's answer, passed on whole
    assert int(denied.headers["retry-after"]) >= 1
    assert denied.headers["ratelimit-policy"] == '"burst";q=3;w=3000'
    assert denied.headers["ratelimit"].startswith('"burst";r=0;')
    assert denied.headers["x-ratelimit-limit"] == "3" and denied.headers["x-ratelimit-remaining"] == "0"
    assert int(denied.headers["x-ratelimit-reset"]) >= 1
    assert denied.headers["content-type"] == "application/problem+json"
    problem = json.loads(denied.body)
    assert problem["status"] == 429 and problem["violated-policies"] == ["burst"]
    assert problem["retry_after"] == int(denied.headers["retry-after"])
    assert statuses(stack.shipped, new_client(), BURST + 1) == [200, 200, 200, 429]


def test_an_allowed_request_reaches_the_application_with_the_limiters_headers(stack: Stack) -> None:
    """Allowed: the application gets the limiter's headers (authResponseHeaders, replacing the client's
    own and deleting their aliases), the client's address in X-Forwarded-For and its Authorization;
    the client's response carries none of the rate-limit headers (Traefik adds them to the request only)."""
    client = new_client()
    answer = send(
        stack.shipped,
        client,
        "/a/b?q=1",
        [("Authorization", "Bearer abc"), ("X-RateLimit-Remaining", "999"), ("X_RateLimit_Remaining", "998")],
    )
    request = seen(answer)
    assert (request["method"], request["path"]) == ("GET", "/a/b")
    headers = request["headers"]
    assert headers["ratelimit-policy"] == '"burst";q=3;w=3000'
    assert headers["ratelimit"].startswith('"burst";r=2;')
    assert headers["x-ratelimit-limit"] == "3"
    assert headers["x-ratelimit-remaining"] == "2"  # the limiter's alone: not 999, nor "2,998" (WSGI joins aliases)
    assert int(headers["x-ratelimit-reset"]) >= 1
    assert "x-ratelimit-degraded" not in headers
    assert headers["x-forwarded-for"] == client
    assert headers["authorization"] == "Bearer abc"
    assert [name for name in RATE_LIMIT_HEADERS if name in answer.headers] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_forged_x_forwarded_for_changes_nothing(stack: Stack, variant: str) -> None:
    """A client that spent its limit and claims another address in X-Forwarded-For is still itself:
    Traefik deletes the header and sets the address it saw, to /check and to the application."""
    proxy, client = stack.proxy(variant), new_client()
    forged: Headers = [("X-Forwarded-For", "203.0.113.99"), ("X-Real-Ip", "203.0.113.98")]
    answers = [send(proxy, client, "/", forged) for _ in range(BURST + 1)]
    assert [answer.status for answer in answers] == [200, 200, 200, 429]
    assert seen(answers[0])["headers"]["x-forwarded-for"] == client
    assert send(proxy, client, "/", [("X-Forwarded-For", new_client())]).status == 429


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "forged",
    [
        [("X-Original-URI", "/"), ("X-Original-Method", "OPTIONS")],
        [("X-Forwarded-Uri", "/"), ("X-Forwarded-Method", "OPTIONS")],
        [("X_Forwarded_Uri", "/"), ("X-Forwarded-Prefix", "/")],
    ],
    ids=["x-original", "x-forwarded", "aliases"],
)
def test_a_forged_original_request_changes_nothing(stack: Stack, variant: str, forged: Headers) -> None:
    """A search that says it is a request for / (in nginx's X-Original-*, or in Traefik's own
    X-Forwarded-*) is still a search of cost 5: 2 of them, not the 3 that / allows. Traefik deletes a
    client's X-Forwarded-*; X-Original-* reaches /check without authRequestHeaders, and the limiter,
    told it asks Traefik, does not read it."""
    proxy, client = stack.proxy(variant), new_client()
    assert statuses(proxy, client, SEARCHES + 2, "/api/search", forged) == [200, 200, 429, 429]


def test_the_shipped_config_has_no_call_home_and_starts_without_a_warning(stack: Stack) -> None:
    """traefik.yml turns the release check and usage statistics off; Traefik says both are off, and logs
    no warning or error at start (the shipped files leave none of its complaints)."""
    static = yaml.safe_load(STATIC.read_text())
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert "Version check is disabled." in stack.start_log and "Stats collection is disabled." in stack.start_log
    assert "Version check is enabled" not in stack.start_log
    complaints = [line for line in stack.start_log.splitlines() if " WRN " in line or " ERR " in line]
    assert complaints == []


def test_with_the_limiter_stopped_traefik_answers_500(own_stack: Stack) -> None:
    """The limiter stopped: Traefik answers 500 with no body and no Retry-After, and the application is not
    asked (ForwardAuth has no fail-open switch: fail-closed)."""
    own_stack.limiter.stop()
    answer = send(own_stack.shipped, new_client(), "/a")
    assert answer.status == 500 and answer.body == b""
    assert "retry-after" not in answer.headers and "server" not in answer.headers  # not the application's
    assert f"Error calling http://127.0.0.1:{own_stack.limiter.port}/check" in own_stack.shipped.log()


def test_with_redis_killed_requests_pass_marked_degraded(own_stack: Stack) -> None:
    """Redis killed: the limiter decides from its fallback (fail-open), and the application is told so in
    X-RateLimit-Degraded (the client is not: Traefik puts the limiter's headers on the request only)."""
    own_stack.redis.kill()
    answer = send(own_stack.shipped, new_client(), "/a")
    assert seen(answer)["headers"]["x-ratelimit-degraded"] == "true"
    assert "x-ratelimit-degraded" not in answer.headers


# Attacks. Each counts the 200s one client gets: never more than its policy's bound.


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "header", [("X-A", "a\x7fb"), ("Authorization", "Bearer a\x7fb")], ids=["x-a", "authorization"]
)
def test_a_control_byte_in_a_header_is_refused_by_traefik(
    stack: Stack, variant: str, header: tuple[str, str | bytes]
) -> None:
    """A DEL byte in a header value, 20 times: Go's HTTP server refuses each with a 400 before any
    middleware, so none is admitted (the bound is 3)."""
    answers = statuses(stack.proxy(variant), new_client(), 20, "/", [header])
    assert answers.count(200) <= BURST
    assert answers == [400] * 20


@pytest.mark.parametrize("target", SEARCH_SPELLINGS)
def test_the_search_route_however_spelt_costs_a_search(stack: Stack, target: str) -> None:
    """The search route spelt seven other ways is still found (2 admitted, not the 3 of a path off the
    route), and what the application served is /api/search (wsgiref keeps the ;x=1 of the last form in
    its path, which the route table cuts, as servlet containers do). Traefik decodes unreserved
    characters, removes dot segments and repeated slashes and reduces the absolute form itself; the
    limiter normalizes what is left (;x=1)."""
    client = new_client()
    answers = [send(stack.shipped, client, target) for _ in range(SEARCHES + 2)]
    assert [answer.status for answer in answers] == [200, 200, 429, 429]
    assert seen(answers[0])["path"].split(";")[0] == "/api/search"


# One per option of the entry point's encodedCharacters, and a malformed encoding.
HIDING_TARGETS = [
    "/api%2Fsearch",  # /api/search to a WSGI application (PATH_INFO is decoded), not to the route table
    "/api%5Csearch",  # a backslash, read as / by some servers
    "/api/%2573earch",  # /api/%73earch once decoded, /api/search to an application that decodes twice
    "/api%00/search",
    "/api%3B/search",
    "/api%3F/search",
    "/api%23/search",
    "/api/search%zz",
]


@pytest.mark.parametrize("target", HIDING_TARGETS)
def test_an_encoded_character_that_could_hide_a_route_is_refused(stack: Stack, target: str) -> None:
    """Paths a route could hide behind (%2F: the limiter reads /api%2Fsearch, a WSGI application serves
    /api/search) are refused with a 400 by the entry point (encodedCharacters), and a malformed
    percent-encoding by Go's parser: none is admitted, none reaches the application."""
    client = new_client()
    answers = [send(stack.shipped, client, target) for _ in range(SEARCHES + 2)]
    assert [answer.status for answer in answers] == [400] * (SEARCHES + 2)
    assert not any(answer.headers.get("server", "").startswith("WSGIServer") for answer in answers)


@pytest.mark.parametrize(("variant", "status"), [("shipped", 429), ("all-headers", 500)])
def test_six_thousand_headers_are_not_admitted_beyond_the_limit(stack: Stack, variant: str, status: int) -> None:
    """A client that spent its limit sends one request of 6,000 headers: not a 200. With the shipped
    authRequestHeaders /check sees only Authorization and denies (429); with every header forwarded, the
    limiter closes a head that large (71 KB, beyond four times MAX_HEADER_BYTES) unanswered, and Traefik
    answers 500 (fail-closed). 150 headers are answered 431 by the limiter, which Traefik passes on."""
    proxy, client = stack.proxy(variant), new_client()
    assert statuses(proxy, client, BURST) == [200] * BURST
    many: Headers = [(f"X-H{index}", "v") for index in range(6000)]
    answer = send(proxy, client, "/", many)
    assert answer.status != 200
    assert answer.status == status
    over_the_cap: Headers = [(f"X-H{index}", "v") for index in range(150)]
    if variant == "all-headers":  # (the shipped variant's application answers 431 itself, over wsgiref's 100)
        assert send(proxy, new_client(), "/", over_the_cap).status == 431
    assert send(proxy, client).status == 429


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("asked", ["²", "204", "401"])
def test_a_clients_deny_status_admits_nothing_more(stack: Stack, variant: str, asked: str) -> None:
    """A client asking its denials be answered ``X-RateLimit-Deny-Status: ²`` (a digit to Python's
    isdigit, sent as one Latin-1 byte), 204 (a 2xx: allowed, to Traefik) or 401: 3 admitted, then 429s.
    The shipped authRequestHeaders keep the header from /check; without them it reaches /check from
    Traefik, a trusted proxy, but behind Traefik (RATE_LIMIT_FORWARD_AUTH=traefik) the limiter reads no
    deny status: Traefik passes its 429 on as it is."""
    answers = statuses(stack.proxy(variant), new_client(), BURST + 3, "/", [("X-RateLimit-Deny-Status", asked)])
    assert answers == [200] * BURST + [429] * 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_if_none_match_star_gets_no_304(stack: Stack, variant: str) -> None:
    """``If-None-Match: *`` on every request: /check never answers 304 (a non-2xx, which Traefik would
    pass to the client instead of the application's answer), so 3 reach the application, then 429s."""
    proxy, client = stack.proxy(variant), new_client()
    answers = [send(proxy, client, "/", [("If-None-Match", "*")]) for _ in range(BURST + 2)]
    assert [answer.status for answer in answers] == [200, 200, 200, 429, 429]
    assert seen(answers[0])["headers"]["if-none-match"] == "*"
