"""Hostile headers: whatever a client puts in forwarding, auth or Host headers, never a 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import JWT_SECRET
from tests.redis_process import free_port
from tornado_rate_limiter.app import Settings, make_app

# Pieces of addresses and header syntax, glued together in any order: near misses of valid values.
FRAGMENTS = [
    "[",
    "]",
    ":",
    "::",
    "%",
    ",",
    ";",
    "=",
    '"',
    " ",
    "for=",
    "For=",
    "by=",
    "unknown",
    "_x",
    "::ffff:",
    "1.2.3.4",
    "2001:db8::1",
    "fe80::1",
    "ff",
    "999",
    ".",
    "/64",
    "Bearer ",
    "eyJhbGciOiJIUzI1NiJ9",
    "\t",
]
# Header values a client can put on the wire: any byte but CR, LF and NUL (latin-1, as HTTP/1.1 allows).
HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    st.sampled_from(
        [
            "::ffff:1.2.3.4",
            "[::1]:80",
            "for=unknown",
            'for="[2001:db8::1"',
            "1.2.3.4, , ,",
            "Bearer",
            "Bearer ",
            "Bearer a.b.c",
            "bearer eyJhbGciOiJub25lIn0.e30.",
            "fe80::1%25eth0",
            "999.999.999.999",
        ]
    ),
)


@pytest.fixture(scope="module", params=["x-forwarded-for", "forwarded"])
def server_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """The service (trusting loopback proxies, with a JWT secret) on its own thread and loop, reading
    each kind of forwarding header in turn."""
    port = free_port()
    ready = threading.Event()
    holder: dict[str, asyncio.AbstractEventLoop] = {}

    def run() -> None:
        async def serve() -> None:
            env = {
                "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.0/8",
                "RATE_LIMIT_FORWARDED_HEADER": request.param,
                "JWT_SECRET": JWT_SECRET,
            }
            settings = Settings.from_env(env)
            make_app(settings, demo_routes=True).listen(port, "127.0.0.1")
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await asyncio.Event().wait()

        with contextlib.suppress(RuntimeError):  # the test thread stops the loop mid-run
            asyncio.run(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    holder["loop"].call_soon_threadsafe(holder["loop"].stop)
    thread.join(5)


def status_of(port: int, headers: dict[str, str], path: str = "/api/whoami") -> int:
    """Send raw bytes (so no client library cleans the headers up) and read the status code."""
    lines = [f"GET {path} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


@given(
    forwarded_for=HEADER_VALUES,
    forwarded=HEADER_VALUES,
    authorization=HEADER_VALUES,
    host=HEADER_VALUES,
    path=st.sampled_from(["/api/whoami", "/api/echo?x=%ff", "/health", "/nope"]),
)
def test_arbitrary_headers_never_cause_a_server_error(
    server_port: int, forwarded_for: str, forwarded: str, authorization: str, host: str, path: str
) -> None:
    """X-Forwarded-For, Forwarded, Authorization and Host with any content get a 2xx, 4xx, never 5xx."""
    headers = {"Host": host, "X-Forwarded-For": forwarded_for, "Forwarded": forwarded, "Authorization": authorization}
    assert status_of(server_port, headers, path) < 500
