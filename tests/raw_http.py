"""One HTTP/1.1 request sent byte for byte, as an attacker writes it (http.client refuses or rewrites some
of what attacks need: control bytes, odd targets, thousands of headers), and its answer read back."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str]  # names in lower case
    body: bytes


def request(
    port: int,
    target: str | bytes = "/",
    headers: list[tuple[str, str | bytes]] | None = None,
    *,
    method: str = "GET",
    source: str = "127.0.0.1",
    timeout: float = 10.0,
) -> Answer:
    """Send ``method target`` with ``headers`` (and Host, Connection: close) from ``source`` to 127.0.0.1:``port``."""
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers or []:
        lines.append(name.encode("latin-1") + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    payload = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(payload)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return parse(bytes(received))


def parse(received: bytes) -> Answer:
    """The status, headers and body of one response with ``Connection: close`` (the body is what follows the head)."""
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return Answer(0, {}, received)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
