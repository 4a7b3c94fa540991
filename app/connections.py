"""GuardedHTTPServer: what a client can hold of the service is bounded, so slow and abusive clients cannot
exhaust it (descriptors, memory) and /health and /metrics still answer.

- A new connection must send a complete request head within ``header_timeout``; between requests a
  keep-alive connection may stay idle ``idle_timeout``; a body must arrive within ``body_timeout`` of
  its head; a request must be answered, its response sent, within ``response_timeout`` of its body's end
  (a client that reads nothing would otherwise hold its connection busy forever).
- At most ``max_connections`` are open, below the descriptor limit (so ``accept()`` never fails with
  EMFILE, which Tornado would log in a loop). At the cap, the connection that has waited longest for a
  request head (a slow or idle client, never one whose request is being handled) is closed to make room,
  so a crowd of idle connections cannot lock out a health check; failing that, the one busy longest, if
  for more than a second (a client that does not read its responses); only then is the new one closed.
- A request head over ``max_headers`` lines or ``max_header_bytes`` bytes is answered 431 and its
  connection closed before Tornado parses it (app/head_limits.py).
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream
from prometheus_client import CollectorRegistry, Counter, Gauge

from tornado_rate_limiter.app.head_limits import HeadLimits, serve_connection, tornado_max_header_size

log = logging.getLogger("tornado_rate_limiter.connections")

# Descriptors kept for everything but client connections: the listening sockets, the Redis pool (32 by
# default), log files, and margin.
RESERVED_DESCRIPTORS = 64
_SWEEP_SECONDS = 0.5
# At the cap, a connection busy this long may be closed to make room (a health check takes milliseconds).
_BUSY_EVICTABLE_SECONDS = 1.0


def descriptor_limit() -> int:
    """The soft limit on open descriptors of this process (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections() -> int:
    """What the descriptor limit leaves for client connections, kept in reserve for the rest."""
    return max(1, descriptor_limit() - RESERVED_DESCRIPTORS)


@dataclass
class _Client:
    """What the server knows of one connection."""

    waiting_since: float | None  # monotonic time it started waiting for a request head; None while busy
    served: int = 0  # requests answered on it
    busy_since: float | None = None  # monotonic time its current request's head arrived; None while waiting
    received_at: float | None = None  # monotonic time its current request's body was all in


class ConnectionMetrics:
    """Connections open, and closed by the server's bounds (by reason: cap, evicted, timeouts, heads too large)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge("rate_limit_open_connections", "Client connections open.", registry=registry)
        self.closed = Counter(
            "rate_limit_connections_closed",
            "Client connections the server closed to bound what clients hold: refused (at the cap, all busy), "
            "evicted (idle or busy longest, to make room), header_timeout, idle_timeout, body_timeout, "
            "response_timeout, head_too_large (a request head over MAX_HEADERS or MAX_HEADER_BYTES, answered 431).",
            ["reason"],
            registry=registry,
        )
        for reason in (
            "refused",
            "evicted",
            "header_timeout",
            "idle_timeout",
            "body_timeout",
            "response_timeout",
            "head_too_large",
        ):
            self.closed.labels(reason)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer with the bounds of the module docstring; ``registry`` receives its metrics."""

    def initialize(  # type: ignore[override]  # Configurable's initialize takes the constructor's arguments
        self,
        request_callback: Any,
        *,
        registry: CollectorRegistry,
        max_connections: int,
        header_timeout: float,
        idle_timeout: float,
        body_timeout: float,
        response_timeout: float,
        max_body_size: int,
        max_headers: int,
        max_header_bytes: int,
        **options: Any,
    ) -> None:
        # Tornado's own idle and body timeouts are backstops only: the sweep applies (and counts) the rules.
        # Its head size too: heads up to it are read whole, so that those over max_header_bytes get a 431.
        super().initialize(
            request_callback,
            idle_connection_timeout=max(header_timeout, idle_timeout) + 1,
            body_timeout=body_timeout + 1,
            max_body_size=max_body_size,
            max_header_size=tornado_max_header_size(max_header_bytes),
            **options,
        )
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.response_timeout = response_timeout
        self.connection_metrics = ConnectionMetrics(registry)
        self.connection_metrics.open.set_function(lambda: len(self._connections))
        self.head_limits = HeadLimits(max_headers, max_header_bytes, self._head_refused)
        self._heads_refused = self.connection_metrics.closed.labels("head_too_large")
        self._clients: dict[object, _Client] = {}
        self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep, _SWEEP_SECONDS * 1000)
        self._sweeper.start()

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if len(self._connections) >= self.max_connections and not self._evict_one():
            stream.close()
            self.connection_metrics.closed.labels("refused").inc()
            # Clients can cause this line: app/log_limits.py lets it through at most once every few seconds.
            log.warning("at the cap of %d open connections, all busy: a new one was closed", self.max_connections)
            return
        serve_connection(self, stream, address, self.head_limits)

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        client = self._clients.get(server_conn)
        if client is None:
            client = self._clients[server_conn] = _Client(waiting_since=time.monotonic())
        else:
            client.waiting_since, client.busy_since, client.received_at = time.monotonic(), None, None
        return _Tracked(super().start_request(server_conn, request_conn), client)

    def on_close(self, server_conn: object) -> None:
        self._clients.pop(server_conn, None)
        super().on_close(server_conn)

    def _head_refused(self) -> None:
        self._heads_refused.inc()
        # Clients can cause this line: app/log_limits.py lets it through at most once every few seconds.
        log.info(
            "a request head over %d header lines or %d bytes: answered 431 and closed",
            self.head_limits.max_headers,
            self.head_limits.max_header_bytes,
        )

    def busy_connections(self) -> int:
        """Connections with a request under way: its head is in and its response not yet all sent."""
        return sum(1 for client in self._clients.values() if client.busy_since is not None)

    def close_sweeper(self) -> None:
        self._sweeper.stop()

    def _evict_one(self) -> bool:
        """Close the connection idle longest, else the one busy longest if for over a second; False if none."""
        now = time.monotonic()
        waiting = [(client.waiting_since, conn) for conn, client in self._clients.items() if client.waiting_since]
        stuck = [
            (client.busy_since, conn)
            for conn, client in self._clients.items()
            if client.busy_since is not None and now - client.busy_since > _BUSY_EVICTABLE_SECONDS
        ]
        candidates = waiting or stuck
        if not candidates:
            return False
        _, oldest = min(candidates, key=lambda item: item[0])
        self._close(oldest, "evicted")
        log.warning("at the cap of %d open connections: closed the one idle or busy longest", self.max_connections)
        return True

    def _sweep(self) -> None:
        """Close connections past their header or idle timeout."""
        now = time.monotonic()
        for conn, client in list(self._clients.items()):
            if client.waiting_since is None:
                if client.received_at is not None:
                    if now - client.received_at > self.response_timeout:
                        self._close(conn, "response_timeout")
                elif client.busy_since is not None and now - client.busy_since > self.body_timeout:
                    self._close(conn, "body_timeout")
                continue
            waited = now - client.waiting_since
            if client.served == 0 and waited > self.header_timeout:
                self._close(conn, "header_timeout")
            elif client.served > 0 and waited > self.idle_timeout:
                self._close(conn, "idle_timeout")

    def _close(self, conn: object, reason: str) -> None:
        self._clients.pop(conn, None)
        conn.stream.close()  # type: ignore[attr-defined]  # an HTTP1ServerConnection; on_close follows
        self.connection_metrics.closed.labels(reason).inc()


class _Tracked(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, marking its connection busy from its head until its response is done."""

    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate, client: _Client) -> None:
        self.inner, self.client = inner, client

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Any:
        self.client.waiting_since, self.client.busy_since = None, time.monotonic()
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.client.served += 1
        self.client.received_at = time.monotonic()
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()
