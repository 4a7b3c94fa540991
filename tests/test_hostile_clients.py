"""Clients that try to make the service pay: bodies of denied requests, and the body of allowed ones
still delivered whole. Against a real service process over real sockets."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.service_process import ServiceProcess

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def one_token_service() -> Iterator[ServiceProcess]:
    """Capacity 1, refilled once in 1000 s: the first request spends the token, the rest are denied."""
    service = ServiceProcess({"RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_REFILL_RATE": "0.001"}).start()
    yield service
    service.stop()


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return received + b"<closed>"
        received += chunk
    return received


class TestDeniedBodies:
    def test_a_denied_request_is_answered_from_its_headers_and_its_body_never_read(
        self, one_token_service: ServiceProcess
    ) -> None:
        """Token spent: a POST announcing a 1,000,000-byte body gets its 429 before sending any of it, and
        the server closes the connection instead of reading the body."""
        urllib.request.urlopen(one_token_service.url + "/api/whoami", timeout=5).read()  # spends the token
        with socket.create_connection(("127.0.0.1", one_token_service.port)) as sock:
            sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            response = read_response(sock, timeout=5)
        assert response.startswith(b"HTTP/1.1 429 "), response[:200]
        assert b"quota-exceeded" in response and response.endswith(b"<closed>")

    def test_an_allowed_request_still_gets_its_whole_body(self) -> None:
        """Allowed, a body sent in small pieces reaches the handler whole, form arguments parsed."""
        service = ServiceProcess().start()
        try:
            with socket.create_connection(("127.0.0.1", service.port)) as sock:
                body = b"a=1&b=" + b"x" * 5000
                head = b"POST /api/echo?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                head += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
                sock.sendall(head)
                for start in range(0, len(body), 1000):
                    sock.sendall(body[start : start + 1000])
                    time.sleep(0.01)
                response = read_response(sock, timeout=5)
        finally:
            service.stop()
        assert response.startswith(b"HTTP/1.1 200 ")
        echoed = json.loads(response.split(b"\r\n\r\n", 1)[1].removesuffix(b"<closed>"))
        assert echoed["body"] == body.decode()
