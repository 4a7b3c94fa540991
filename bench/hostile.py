"""`python -m bench.hostile [--tree PATH] [scenario ...]`: what hostile clients cost a service process.

Each scenario starts `python -m tornado_rate_limiter` from ``--tree`` (this checkout by default; give a
`git worktree` of an older commit for a before figure), attacks it over loopback, bounded in count and time,
and prints one line of figures read off the process (/proc CPU and RSS, its log, its answers):

  slow-heads     ulimit -n 256, 300 connections that send half a request line: /health, log, CPU
  bodies         300 connections each sending all but 1,000 bytes of the largest body: RSS
  denied-body    token spent, a POST sending a 20,000-byte body one byte per send: bytes read, CPU
  many-headers   service CPU per request with 101 and with 6,000 header lines, against a plain request's
  trickled-head  the 6,000 lines in 1,000-byte pieces, each read on its own: service CPU per request
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.raw_http import parse, request
from tests.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent


class Service(ServiceProcess):
    """The service from ``tree``, started; ``ulimit`` caps its descriptors; CPU and RSS read off /proc."""

    def __init__(self, tree: Path, env: dict[str, str] | None = None, ulimit: int | None = None) -> None:
        command = f"exec {sys.executable} -m tornado_rate_limiter"
        if ulimit is not None:
            command = f"ulimit -n {ulimit} && {command}"
        super().__init__({"PYTHONPATH": str(tree), **(env or {})}, command=["sh", "-c", command], cwd=tree)
        self.start()

    def _proc(self, name: str) -> str:
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/{name}").read_text()

    def cpu_seconds(self) -> float:
        fields = self._proc("stat").split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> int:
        return int(self._proc("status").split("VmRSS:")[1].split()[0]) // 1024


def connect(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(payload)
    return sock


def slow_heads(tree: Path) -> str:
    service = Service(tree, ulimit=256)
    try:
        cpu = service.cpu_seconds()
        slow = [connect(service.port, b"GET /api/whoami HTTP/1.1\r\nHost: x") for _ in range(300)]
        answered = 0
        for _ in range(5):
            try:
                urllib.request.urlopen(service.url + "/health", timeout=2).read()
                answered += 1
            except OSError:
                pass
        time.sleep(3)
        cpu = service.cpu_seconds() - cpu
        for sock in slow:
            sock.close()
        log = service.log()
    finally:
        service.stop()
    return (
        f"slow-heads: /health answered {answered} of 5; service CPU {cpu:.2f} s; log {len(log.encode()):,} bytes, "
        f"{log.count('Too many open files'):,} EMFILE lines"
    )


def bodies(tree: Path) -> str:
    service = Service(tree, env={"RATE_LIMIT_CAPACITY": "100000"})
    try:
        size = _largest_body(tree)
        idle = service.rss_mb()
        head = b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        held = [connect(service.port, head + b"x" * (size - 1000)) for _ in range(300)]
        time.sleep(2)
        during = service.rss_mb()
        for sock in held:
            sock.close()
    finally:
        service.stop()
    return f"bodies: largest body {size:,} bytes; RSS {idle} MB idle, {during} MB with 300 unfinished bodies"


def _largest_body(tree: Path) -> int:
    """The tree's default largest body: MAX_BODY_BYTES where it has the setting, else Tornado's 1 MiB."""
    settings = (tree / "app" / "settings.py").read_text()
    return 65536 if "max_body_bytes: int = 65536" in settings else 1024 * 1024


def denied_body(tree: Path) -> str:
    service = Service(tree, env={"RATE_LIMIT_CAPACITY": "1", "RATE_LIMIT_REFILL_RATE": "0.001"})
    try:
        urllib.request.urlopen(service.url + "/api/whoami", timeout=5).read()  # spends the only token
        cpu, started, size = service.cpu_seconds(), time.monotonic(), 20_000
        sock = connect(service.port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sent, answer = 0, b""
        while sent < size and not answer:
            try:
                sent += sock.send(b"x")
                answer = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                break
        sock.setblocking(True)
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        waited = time.monotonic() - started
        time.sleep(0.2)
        cpu = service.cpu_seconds() - cpu
        sock.close()
    finally:
        service.stop()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return (
        f"denied-body: {status!r} after {waited:.2f} s, {sent:,} of {size:,} body bytes sent; service CPU {cpu:.2f} s"
    )


def many_headers(tree: Path, count: int = 500) -> str:
    """``count`` requests of each kind, one connection each, to a limited route with limits too high to deny."""
    # Names distinct (Tornado joins a repeated one's values, a cost of its own) and short: 6,000 lines
    # fit in the 64 KiB that Tornado reads of a head by default.
    kinds: dict[str, list[tuple[str, str | bytes]]] = {
        "plain": [],
        "101 headers": [(f"h{index}", "v") for index in range(99)],  # with Host and Connection
        "6,000 headers": [(f"h{index}", "v") for index in range(5998)],
    }
    service = Service(tree, env={"RATE_LIMIT_CAPACITY": "1000000"})
    try:
        for _ in range(50):  # warm-up: the first requests pay for caches filling
            request(service.port, "/api/whoami")
        per_request: dict[str, float] = {}
        statuses: dict[str, str] = {}
        for kind, headers in kinds.items():
            cpu = service.cpu_seconds()
            seen = Counter(request(service.port, "/api/whoami", headers).status for _ in range(count))
            per_request[kind] = (service.cpu_seconds() - cpu) / count
            statuses[kind] = ", ".join(f"{status} x{times}" for status, times in sorted(seen.items()))
    finally:
        service.stop()
    plain = per_request["plain"]
    figures = [
        f"{kind} {per_request[kind] * 1000:.2f} ms ({per_request[kind] / plain:.1f}x plain; {statuses[kind]})"
        for kind in kinds
    ]
    return f"many-headers: service CPU per request, {count} of each: " + "; ".join(figures)


def trickled_head(tree: Path, count: int = 50, piece: int = 1000) -> str:
    """The head of many-headers' 6,000 lines sent ``count`` times in pieces, which the server reads one by one."""
    head = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"".join(b"h%d: v\r\n" % index for index in range(5998)) + b"\r\n"
    service = Service(tree, env={"RATE_LIMIT_CAPACITY": "1000000"})
    try:
        for _ in range(50):
            request(service.port, "/api/whoami")
        cpu, seen = service.cpu_seconds(), Counter[int]()
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", service.port)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for start in range(0, len(head), piece):
                    sock.sendall(head[start : start + piece])
                    time.sleep(0.0005)  # the server reads each piece before the next comes
                sock.settimeout(10)
                received = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        received += chunk
            seen[parse(received).status] += 1
        cpu = (service.cpu_seconds() - cpu) / count
    finally:
        service.stop()
    statuses = ", ".join(f"{status} x{times}" for status, times in sorted(seen.items()))
    pieces = f"{len(head):,} bytes in {piece:,}-byte pieces"
    return f"trickled-head: {pieces}: service CPU {cpu * 1000:.1f} ms per request ({statuses})"


SCENARIOS: dict[str, Callable[[Path], str]] = {
    "slow-heads": slow_heads,
    "bodies": bodies,
    "denied-body": denied_body,
    "many-headers": many_headers,
    "trickled-head": trickled_head,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run the service from")
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}")
    for name in arguments.scenarios or SCENARIOS:
        print(SCENARIOS[name](arguments.tree.resolve()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
