"""A small closed-loop HTTP load generator for fault tests: keep-alive clients on loopback, bounded in
time and count, recording every response (status, degraded header, latency)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One request as a client saw it."""

    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int  # 0 when the connection failed: the service dropped or refused it
    degraded: bool  # X-RateLimit-Degraded: true
    retry_after: str | None
    rate_limit_policy: str | None = None  # the RateLimit-Policy header: which policies decided

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    """``clients`` concurrent keep-alive connections sending GET ``path`` (with ``headers``) until stopped."""

    port: int
    clients: int = 16
    path: str = "/api/whoami"
    headers: dict[str, str] = field(default_factory=dict)
    max_requests: int = 200_000
    max_seconds: float = 60.0
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        self._tasks = [asyncio.create_task(self._client(deadline)) for _ in range(self.clients)]

    async def stop(self) -> list[Sample]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.samples

    def _running(self, deadline: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline and len(self.samples) < self.max_requests

    async def _client(self, deadline: float) -> None:
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        request = f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
        while self._running(deadline):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                now = time.monotonic()
                self.samples.append(Sample(now, now, 0, False, None))
                await asyncio.sleep(0.01)
                continue
            try:
                while self._running(deadline):
                    started = time.monotonic()
                    writer.write(request)
                    status, headers = await _read_response(reader)
                    degraded = headers.get("x-ratelimit-degraded") == "true"
                    finished, retry_after = time.monotonic(), headers.get("retry-after")
                    policy = headers.get("ratelimit-policy")
                    self.samples.append(Sample(started, finished, status, degraded, retry_after, policy))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                now = time.monotonic()
                self.samples.append(Sample(now, now, 0, False, None))
            finally:
                writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers
