"""The attacks that got past the shipped deploy/nginx/nginx.conf, run against it: a real nginx in front of an
application whose parser is lenient (wsgiref: tests/lenient_app.py), asking the service on a real Redis.
Each counts what one client gets admitted (a 200 from the application) and holds it to the policy's bound;
none of it may be served unchecked (marked degraded) while the limiter answers."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests import proxy_stack
from tests.nginx_process import Nginx
from tests.proxy_stack import SEARCHES, lenient_app, policy_file
from tests.raw_http import Answer, request
from tests.redis_process import RedisProcess
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.process

BURST = 3  # what one client may be admitted: 3 requests (or 2 searches)


@dataclass
class Stack:
    proxy: Nginx
    limiter: ServiceProcess
    app: ServiceProcess

    def send(self, source: str, target: str = "/", headers: list[tuple[str, str | bytes]] | None = None) -> Answer:
        return request(self.proxy.port, target, headers, source=source)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, the lenient application, the limiter (the policy file above, nginx trusted) and nginx."""
    directory = tmp_path_factory.mktemp("nginx-attacks")
    redis_server = RedisProcess().start()
    app, limiter = lenient_app(), proxy_stack.limiter(redis_server, policy_file(directory, BURST), "nginx")
    started: list[ServiceProcess | Nginx] = []
    try:
        for process in (app, limiter):
            process.start()
            started.append(process)
        proxy_dir = directory / "nginx"
        proxy_dir.mkdir()
        proxy = Nginx(proxy_dir, limiter.port, app.port).start()
        started.append(proxy)
        yield Stack(proxy, limiter, app)
    finally:
        for process in reversed(started):
            process.stop()
        redis_server.stop()


_client_numbers = itertools.count(11)


class Client:
    @staticmethod
    def new() -> str:
        """A loopback address of its own, so each client starts with a full quota."""
        return f"127.0.1.{next(_client_numbers)}"


def admitted(answers: list[Answer]) -> int:
    """How many the application served, none of them unchecked."""
    assert not [answer for answer in answers if answer.headers.get("x-ratelimit-degraded") == "true"]
    return sum(1 for answer in answers if answer.status == 200)


def served_path(answer: Answer) -> str:
    path: str = json.loads(answer.body)["path"]
    return path


def test_a_control_byte_in_a_header_no_longer_passes(stack: Stack) -> None:
    """``X-A: a\\x7fb`` made the limiter answer 400 and nginx serve the request unchecked (500 of 500 through,
    bound 3): now that header never reaches the limiter, and the client gets its 3."""
    client = Client.new()
    answers = [stack.send(client, "/", [("X-A", b"a\x7fb")]) for _ in range(20)]
    assert admitted(answers) == BURST
    assert {answer.status for answer in answers} == {200, 429}


def test_a_control_byte_in_authorization_is_refused_not_passed(stack: Stack) -> None:
    """Authorization reaches the limiter, which refuses the byte with a 400: nginx answers 400 (the limiter
    answered), never the application."""
    client = Client.new()
    answers = [stack.send(client, "/", [("Authorization", b"Bearer a\x7fb")]) for _ in range(20)]
    assert admitted(answers) == 0
    assert {answer.status for answer in answers} == {400}
    assert json.loads(answers[0].body)["status"] == 400


# Spellings of /api/search that slipped its route (cost 5 of 10). nginx passes each on to the application as
# written: those that decode to it are charged as the search; those whose structure (dot segments, repeated
# slashes, parameters in a segment, an encoded slash) makes them another route as written are refused.
CHARGED_AS_THE_SEARCH = ["/api/%73earch", "/%61pi/search", "/api/sea%72ch;x=1", "http://app/api/%73earch"]
REFUSED_AS_AMBIGUOUS = ["//api/search", "/api/./search", "/api/x/../search", "/api/search/..;x", "/api%2Fsearch"]


def test_every_spelling_of_a_route_is_charged_as_that_route_or_refused(stack: Stack) -> None:
    """The spellings of ``/api/search`` that got 10 admitted where 2 were due: one client sending each
    twice gets its 2 searches, and the application served them as /api/search."""
    client = Client.new()
    answers = [stack.send(client, form) for form in CHARGED_AS_THE_SEARCH + REFUSED_AS_AMBIGUOUS for _ in range(2)]
    assert admitted(answers) == SEARCHES
    assert {served_path(answer) for answer in answers if answer.status == 200} == {"/api/search"}


@pytest.mark.parametrize("form", CHARGED_AS_THE_SEARCH)
def test_a_spelling_that_decodes_to_the_route_is_charged_as_it(stack: Stack, form: str) -> None:
    """Each from a client of its own: 2 admitted of 4, the route's policy in the headers, and the
    application served the search (wsgiref decodes the path; it keeps ``;x=1``)."""
    client = Client.new()
    answers = [stack.send(client, form) for _ in range(4)]
    assert admitted(answers) == SEARCHES
    assert answers[0].headers["ratelimit-policy"] == '"search";q=10;w=10000'
    assert served_path(answers[0]).split(";")[0] == "/api/search"


@pytest.mark.parametrize("form", REFUSED_AS_AMBIGUOUS)
def test_a_spelling_whose_structure_decides_its_route_is_refused(stack: Stack, form: str) -> None:
    """wsgiref serves ``/api/./search`` as written (not as /api/search) and ``/api%2Fsearch`` as /api/search:
    the limiter cannot know which reading the application routes on, so nginx answers 400 and the
    application is never asked."""
    answers = [stack.send(Client.new(), form) for _ in range(3)]
    assert [answer.status for answer in answers] == [400] * 3
    assert admitted([stack.send(Client.new(), "/files/a%2Fb")]) == 1  # an encoded slash that changes no route


def test_six_thousand_headers_are_no_way_past(stack: Stack) -> None:
    """6,000 headers in one request cost the limiter 15 ms each (300 such connections pushed it past nginx's
    timeout, and everyone was served unchecked): nginx refuses the head itself, and a head it accepts sends
    the limiter only the four headers it needs."""
    client = Client.new()
    many = [(f"X-H{number}", "v") for number in range(6000)]
    assert stack.send(client, "/", many).status == 400  # nginx: Request Header Or Cookie Too Large
    within_nginx = [(f"X-H{number}", "v") for number in range(90)]
    answers = [stack.send(client, "/", within_nginx) for _ in range(5)]
    assert admitted(answers) == BURST


def test_forged_original_request_headers_change_nothing(stack: Stack) -> None:
    """A client's own X-Original-URI/-Method (nginx sets them itself) and Traefik's X-Forwarded-Uri/-Method
    (never read behind nginx) leave a search a search."""
    client = Client.new()
    forged: list[tuple[str, str | bytes]] = [
        ("X-Original-URI", "/cheap"),
        ("X-Original-Method", "OPTIONS"),
        ("X-Forwarded-Uri", "/cheap"),
        ("X-Forwarded-Method", "OPTIONS"),
    ]
    answers = [stack.send(client, "/api/search", forged) for _ in range(4)]
    assert admitted(answers) == SEARCHES


def test_a_clients_deny_status_and_if_none_match_change_nothing(stack: Stack) -> None:
    """``X-RateLimit-Deny-Status: \\xb2`` answered 500 with a traceback, and ``If-None-Match: *`` a 304 that
    nginx served unchecked: now the client gets its 3, then real 429s."""
    client = Client.new()
    headers: list[tuple[str, str | bytes]] = [("X-RateLimit-Deny-Status", b"\xb2"), ("If-None-Match", "*")]
    answers = [stack.send(client, "/", headers) for _ in range(5)]
    assert admitted(answers) == BURST
    assert [answer.status for answer in answers[BURST:]] == [429, 429]


def test_a_malformed_encoding_is_refused(stack: Stack) -> None:
    """A broken percent-encoding never reaches the application unchecked (nginx refuses it itself)."""
    answer = stack.send(Client.new(), "/api/se%zzarch")
    assert answer.status == 400


def test_unchecked_only_when_the_limiter_does_not_answer_and_with_the_same_headers(stack: Stack) -> None:
    """The limiter frozen (SIGSTOP): after proxy_read_timeout the request is served, marked degraded, and the
    application sees the same Host and X-Forwarded-For as on the checked path (they were lost before)."""
    client = Client.new()
    checked = stack.send(client, "/")
    assert checked.status == 200 and "x-ratelimit-degraded" not in checked.headers
    assert stack.limiter.process is not None
    pid = stack.limiter.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        unchecked = stack.send(client, "/")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert unchecked.status == 200 and unchecked.headers["x-ratelimit-degraded"] == "true"
    seen_checked, seen_unchecked = (json.loads(answer.body)["headers"] for answer in (checked, unchecked))
    for name in ("host", "x-forwarded-for"):
        assert seen_unchecked[name] == seen_checked[name], name
    assert seen_checked["x-forwarded-for"] == client


class _AnswersAsTold(http.server.BaseHTTPRequestHandler):
    """Stands where the limiter does and answers the status the original URI names (``/answer/500``), to
    see what nginx makes of each answer the real limiter may give."""

    def do_GET(self) -> None:
        status = int(self.headers.get("X-Original-URI", "/answer/200").rsplit("/", 1)[1])
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def answering_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """The shipped config in front of the same application, asking a stand-in that answers as told."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersAsTold)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = Nginx(tmp_path_factory.mktemp("nginx-answers"), server.server_address[1], stack.app.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("limiter_status", "client_status", "served"),
    [(200, 200, True), (403, 429, False), (429, 429, False), (400, 400, False), (431, 400, False), (500, 503, False)],
)
def test_only_an_allowed_answer_reaches_the_application(
    answering_stack: Nginx, limiter_status: int, client_status: int, served: bool
) -> None:
    """Whatever the limiter answers, the application is asked only when it allowed: a denial is a 429
    (also one the limiter kept at 429), a refusal a 400, an error a 503 (a 400 from the limiter was served
    unchecked before), none marked degraded."""
    answer = request(answering_stack.port, f"/answer/{limiter_status}", source=Client.new())
    assert answer.status == client_status
    assert ("x-ratelimit-degraded" in answer.headers) is False
    assert (answer.status == 200 and json.loads(answer.body)["path"].startswith("/answer/")) is served


def test_a_crowd_of_heavy_heads_is_never_served_unchecked(stack: Stack) -> None:
    """300 requests of 900 headers at once from one client (about 2 ms each for the limiter to parse, when
    nginx forwarded them; 219 of 1,500 were then served unchecked): none is served unchecked now that
    nginx sends the limiter four headers and the limiter's listen backlog holds the crowd's connections."""
    client = Client.new()
    headers: list[tuple[str, str | bytes]] = [(f"X-H{number}", "v") for number in range(900)]
    with ThreadPoolExecutor(max_workers=300) as pool:
        answers = list(pool.map(lambda _: stack.send(client, "/", headers), range(600)))
    assert not [answer for answer in answers if answer.headers.get("x-ratelimit-degraded") == "true"]
    assert {answer.status for answer in answers} <= {429, 431}  # 431: wsgiref refuses over 100 headers
