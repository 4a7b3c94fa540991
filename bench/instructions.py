"""Instructions per request, counted by valgrind (callgrind): the one figure here that noise cannot move.

A request goes through Tornado's whole flow in one process (the application's delegate, the handler,
prepare(), the headers, finish()) on a connection that writes nowhere, so what is counted is the
server's work without the kernel's. Each app runs ``WARM + N`` requests and ``WARM + 2N`` under
callgrind, in separate processes; the difference over N is one request's instructions (start-up, imports
and the warm-up cancel out). PYTHONHASHSEED is fixed, so a rerun counts the same within a few hundred.

`python -m bench.instructions <kind> <requests>` runs the requests of one of bench/apps.py's KINDS (what
callgrind is given).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.httputil
import tornado.web

from bench import apps
from bench.cpu import APPS, SERVERS
from bench.http import Server

Row = dict[str, Any]
WARM, N = 300, 1000
# The cpu section's servers that are one of bench/apps.py's apps, minus the peers (their Redis clients'
# round trips would be the count): the same ids and labels in both tables.
MEASURED = [spec for spec in SERVERS if spec.command[: len(APPS)] == APPS and spec.id not in ("limits", "throttled")]
_HEADERS = {"Host": "127.0.0.1:8080", "User-Agent": "wrk", "Accept": "*/*"}


class _Connection:
    """What a handler writes to, answering at once; ``done`` is set when the response is finished."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.context = _Context()

    def set_close_callback(self, callback: object) -> None:
        pass

    def write_headers(self, start_line: object, headers: object, chunk: bytes | None = None) -> asyncio.Future[None]:
        return self._written()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self._written()

    def finish(self) -> None:
        self.done.set_result(None)

    def _written(self) -> asyncio.Future[None]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written


class _Context:
    remote_ip = "127.0.0.1"
    protocol = "http"
    address = ("127.0.0.1", 50000)
    trusted_downstream = None


async def _requests(app: tornado.web.Application, count: int) -> None:
    start = tornado.httputil.RequestStartLine("GET", "/", "HTTP/1.1")
    headers = tornado.httputil.HTTPHeaders(_HEADERS)
    for _ in range(count):
        connection = _Connection()
        delegate = app.start_request(None, connection)  # type: ignore[arg-type]
        received = delegate.headers_received(start, headers)
        if received is not None:
            await received
        delegate.finish()
        await connection.done


def _count(spec: Server, requests: int, redis_url: str) -> int:
    env = {**os.environ, **spec.env, "PYTHONHASHSEED": "0"}  # spec.env: limits too high to deny
    env.pop("REDIS_URL", None)
    if spec.redis:
        env["REDIS_URL"] = redis_url
    kind = spec.command[len(APPS)]
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.instructions", kind, str(requests)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=True).stderr
    match = re.search(r"Collected : (\d+)", output)
    if match is None:
        message = f"callgrind counted nothing: {output[-300:]}"
        raise RuntimeError(message)
    return int(match.group(1))


def run_instructions(redis_url: str) -> list[Row]:
    if shutil.which("valgrind") is None:
        return [{"id": spec.id, "label": spec.label, "error": "valgrind is not installed"} for spec in MEASURED]

    def measure(spec: Server) -> Row:
        try:
            short, long = _count(spec, WARM + N, redis_url), _count(spec, WARM + 2 * N, redis_url)
        except Exception as exc:
            return {"id": spec.id, "label": spec.label, "error": f"{type(exc).__name__}: {exc}"}
        return {"id": spec.id, "label": spec.label, "instructions_per_request": (long - short) / N}

    with ThreadPoolExecutor(max_workers=2) as pool:  # one valgrind per core
        return list(pool.map(measure, MEASURED))


def main() -> None:
    kind, requests = sys.argv[1], int(sys.argv[2])

    async def run() -> None:
        await _requests(apps.make_app(kind), requests)

    asyncio.run(run())


if __name__ == "__main__":
    main()
