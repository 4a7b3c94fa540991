"""Request heads over MAX_HEADERS lines or MAX_HEADER_BYTES bytes: answered 431 and closed, counted; the rest
served as before. A GuardedHTTPServer in this process, its IOLoop on a thread, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import tornado.http1connection
import tornado.httpserver
import tornado.netutil
import tornado.web
from prometheus_client import CollectorRegistry

from tests.raw_http import Answer, parse, request
from tornado_rate_limiter.app import Settings
from tornado_rate_limiter.app.connections import GuardedHTTPServer
from tornado_rate_limiter.app.head_limits import HEAD_END, TORNADO_HEAD_END, tornado_max_header_size

MAX_HEADERS, MAX_HEADER_BYTES = Settings().max_headers, Settings().max_header_bytes
# What tests/raw_http.py sends before the headers it is given: the request line, Host and Connection.
_BASE_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
_BASE_LINES = 2


class HeadersSeen(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"headers": sum(1 for _ in self.request.headers.get_all())})


@dataclass
class Servers:
    guarded: int  # the port of a GuardedHTTPServer with the default limits
    bare: int  # the port of Tornado's own HTTPServer, serving the same application
    registry: CollectorRegistry  # the guarded server's metrics

    def refused(self) -> float:
        value = self.registry.get_sample_value("rate_limit_connections_closed_total", {"reason": "head_too_large"})
        return value or 0.0


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    ready, stop_requested = threading.Event(), threading.Event()
    started: list[Servers] = []
    registry = CollectorRegistry()

    async def serve() -> None:
        application = tornado.web.Application([("/", HeadersSeen)])
        guarded = GuardedHTTPServer(
            application,
            registry=registry,
            max_connections=100,
            header_timeout=10,
            idle_timeout=60,
            body_timeout=15,
            response_timeout=30,
            max_body_size=65536,
            max_headers=MAX_HEADERS,
            max_header_bytes=MAX_HEADER_BYTES,
        )
        bare = tornado.httpserver.HTTPServer(application)
        ports = []
        for server in (guarded, bare):
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            server.add_sockets(sockets)
            ports.append(sockets[0].getsockname()[1])
        started.append(Servers(ports[0], ports[1], registry))
        ready.set()
        while not stop_requested.is_set():
            await asyncio.sleep(0.05)
        guarded.close_sweeper()
        for server in (guarded, bare):
            server.stop()
            await server.close_all_connections()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield started[0]
    stop_requested.set()
    thread.join(10)


def header_lines(count: int) -> list[tuple[str, str]]:
    """Headers for tests/raw_http.py's request() that make a head of ``count`` header lines, names distinct."""
    return [(f"x-{index}", "v") for index in range(count - _BASE_LINES)]


def head_of_bytes(size: int) -> list[tuple[str, str]]:
    """One header for request() that makes its head exactly ``size`` bytes long, its final blank line included."""
    return [("x-pad", "v" * (size - len(_BASE_HEAD) - len(b"x-pad: \r\n")))]


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server sends, and whether it then closed the connection (False: silent for 5 s)."""
    sock.settimeout(5)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return received, False
    return received, True


def keep_alive_exchange(port: int, heads: list[bytes]) -> list[Answer]:
    """Each head sent on one keep-alive connection after the previous answer; the answers, the last one read
    until the server closes (which it must)."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for head in heads[:-1]:
            sock.sendall(head)
            received = b""
            while not received.endswith(b"}"):  # HeadersSeen's JSON, whole
                chunk = sock.recv(65536)
                assert chunk, f"closed after {received!r}"
                received += chunk
            answers.append(parse(received))
        sock.sendall(heads[-1])
        received, closed = read_until_closed(sock)
        assert closed, received
        answers.append(parse(received))
    return answers


def keep_alive_head(lines: int) -> bytes:
    """A GET / head of ``lines`` header lines, Host one of them, that asks for nothing about the connection."""
    return b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"x-%d: v\r\n" % index for index in range(lines - 1)) + b"\r\n"


def test_a_head_of_max_headers_lines_is_served(servers: Servers) -> None:
    """100 header lines (Host and Connection among them) reach the handler, all of them."""
    answer = request(servers.guarded, "/", header_lines(MAX_HEADERS))
    assert (answer.status, answer.body) == (200, b'{"headers": %d}' % MAX_HEADERS)


def test_one_line_more_is_answered_431_and_closed(servers: Servers) -> None:
    """101 header lines: 431 with Connection: close and no body, then the server closes the connection."""
    with socket.create_connection(("127.0.0.1", servers.guarded), timeout=5) as sock:
        sock.sendall(keep_alive_head(MAX_HEADERS + 1))
        received, closed = read_until_closed(sock)
    assert received == b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert closed


def test_a_head_of_max_header_bytes_is_served_and_one_byte_more_is_431(servers: Servers) -> None:
    """A head of exactly MAX_HEADER_BYTES bytes, its request line and final blank line counted, is served;
    one byte longer gets 431."""
    assert request(servers.guarded, "/", head_of_bytes(MAX_HEADER_BYTES)).status == 200
    assert request(servers.guarded, "/", head_of_bytes(MAX_HEADER_BYTES - 1)).status == 200
    assert request(servers.guarded, "/", head_of_bytes(MAX_HEADER_BYTES + 1)).status == 431


def test_a_head_beyond_what_tornado_reads_is_closed_unanswered(servers: Servers) -> None:
    """A head longer than Tornado's own maximum (4 x MAX_HEADER_BYTES, at least 64 KiB) with no end in
    sight: the connection is closed without an answer, and not counted as a 431."""
    before = servers.refused()
    with socket.create_connection(("127.0.0.1", servers.guarded), timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed while we still send: as good
            sock.sendall(b"GET / HTTP/1.1\r\nx-pad: " + b"v" * (tornado_max_header_size(MAX_HEADER_BYTES) + 1))
        received, closed = read_until_closed(sock)
    assert (received, closed, servers.refused()) == (b"", True, before)


def test_a_keep_alive_connection_gets_its_431_and_is_closed(servers: Servers) -> None:
    """A served request, then on the same keep-alive connection a head of 101 lines: 431, then closed."""
    plain, refused = keep_alive_exchange(servers.guarded, [keep_alive_head(3), keep_alive_head(101)])
    assert (plain.status, refused.status, refused.headers["connection"]) == (200, 431, "close")


def test_a_blank_line_before_the_request_line_is_not_a_header_line(servers: Servers) -> None:
    """On a keep-alive connection, a head of 100 lines after an empty line (which Tornado skips, as RFC 9112
    lets servers do) is still served."""
    last = b"\r\n" + keep_alive_head(MAX_HEADERS - 1)[:-2] + b"Connection: close\r\n\r\n"
    plain, after_blank_line = keep_alive_exchange(servers.guarded, [keep_alive_head(3), last])
    assert (plain.status, after_blank_line.status, after_blank_line.body) == (200, 200, b'{"headers": 100}')


def test_each_431_is_counted_as_head_too_large(servers: Servers) -> None:
    """rate_limit_connections_closed_total{reason="head_too_large"} goes up by one per refused head, and not
    for a head that is served."""
    before = servers.refused()
    request(servers.guarded, "/", header_lines(MAX_HEADERS))
    for lines in (MAX_HEADERS + 1, 1000):
        assert request(servers.guarded, "/", header_lines(lines)).status == 431
    assert servers.refused() == before + 2


def test_a_plain_request_is_answered_as_by_tornados_own_server(servers: Servers) -> None:
    """A plain request gets the same status, headers (but the date) and body as from Tornado's HTTPServer."""
    guarded, bare = (request(port, "/", [("Accept", "*/*")]) for port in (servers.guarded, servers.bare))
    assert guarded.status == 200 and guarded.body == b'{"headers": 3}'
    assert (guarded.status, guarded.body) == (bare.status, bare.body)
    assert {**guarded.headers, "date": ""} == {**bare.headers, "date": ""}


def test_the_faster_head_end_ends_where_tornados_does() -> None:
    """On every string of up to 8 bytes of "a", CR and LF, HEAD_END matches when Tornado's pattern does and
    its match ends at the same byte (the match's end is all Tornado uses)."""
    tornados = re.compile(TORNADO_HEAD_END)
    for length in range(9):
        for letters in itertools.product(b"a\r\n", repeat=length):
            data = bytes(letters)
            expected, found = tornados.search(data), HEAD_END.search(data)
            assert (expected and expected.end()) == (found and found.end()), data


def test_tornado_still_reads_heads_up_to_the_pattern_that_is_replaced() -> None:
    """The literal that find_head_end_faster swaps is still the one Tornado passes (else the swap would
    quietly stop applying)."""
    literal = 'b"' + repr(TORNADO_HEAD_END)[2:-1] + '"'  # as Tornado's source spells it: b"\r?\n\r?\n"
    assert re.search(r"read_until_regex\(\s*" + re.escape(literal), inspect.getsource(tornado.http1connection))
