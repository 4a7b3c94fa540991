"""The service as a Heroku-style process: binds $PORT, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
import time

import tornado.netutil

from tornado_rate_limiter.app.connections import GuardedHTTPServer
from tornado_rate_limiter.app.service import ServiceApplication, make_app
from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.handlers import SETTINGS_KEY
from tornado_rate_limiter.limiter.policies import PolicySet
from tornado_rate_limiter.limiter.policies.store import PolicyStore

log = logging.getLogger("tornado_rate_limiter")
# A platform sends SIGKILL 30 s after SIGTERM: requests in flight get this long, the rest is margin.
DRAIN_SECONDS = 10.0
# Connections the kernel holds for accept() (capped by net.core.somaxconn). Tornado's 128 overflowed under
# 300 connections at once from nginx: the dropped SYNs waited out its 1 s connect timeout, and the
# requests were served unchecked (bench/proxy_attacks.py: 15 of 1,500).
LISTEN_BACKLOG = 1024


async def drain(application: ServiceApplication, server: GuardedHTTPServer, deadline: float) -> None:
    """Wait until no request is in flight, its handler running or its response still being sent (to a
    slow reader), or until ``deadline`` (time.monotonic())."""

    def under_way() -> int:
        return max(application.in_flight, server.busy_connections())

    while under_way() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if under_way() > 0:
        log.warning("stopping with %d request(s) still in flight", under_way())


class ListenError(Exception):
    """The service cannot listen where its settings say; the message names the setting and what is valid."""


def bind(settings: Settings) -> list[socket.socket]:
    """The listening sockets for HOST and PORT, or ListenError saying in one line why there are none."""
    host, port = settings.host, settings.port
    try:
        return tornado.netutil.bind_sockets(port, host, backlog=LISTEN_BACKLOG)
    except socket.gaierror as exc:
        message = f"HOST={host!r} is not valid: no address of this machine has that name ({exc.strerror})"
        raise ListenError(message) from None
    except UnicodeError:  # a name that is no host name at all (empty or over-long labels): idna refuses it
        message = f"HOST={host!r} is not valid: expected an IP address such as 0.0.0.0 or a host name"
        raise ListenError(message) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = f"PORT={port} is not usable: another process already listens on {settings.address}"
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = f"HOST={host!r} is not valid: it is not an address of this machine (try 0.0.0.0)"
        elif exc.errno == errno.EACCES:
            message = f"PORT={port} is not usable: binding a port below 1024 needs privileges (try 8080)"
        else:
            message = f"cannot listen on {settings.address}: {exc.strerror or exc}"
        raise ListenError(message) from None


async def serve(
    settings: Settings, sockets: list[socket.socket], policies: PolicyStore | PolicySet | None = None
) -> None:
    """Serve on ``sockets`` until SIGTERM or SIGINT; then stop accepting, finish requests in flight, close Redis.

    A policy file is read again on SIGHUP, and when its content changes (RATE_LIMIT_CONFIG_INTERVAL)."""
    application = make_app(settings, policies=policies, demo_routes=True)
    config = application.settings[SETTINGS_KEY]
    limiter = config.limiter
    await limiter.connect()
    # What exists now (modules, the app, the clients) lives as long as the process: out of the garbage
    # collector's sight, the collections that requests trigger have less to walk (-2 to 3 us a request).
    gc.freeze()
    server = GuardedHTTPServer(
        application,
        registry=limiter.metrics.registry,
        max_connections=settings.connection_cap,
        header_timeout=settings.header_timeout,
        idle_timeout=settings.idle_timeout,
        body_timeout=settings.body_timeout,
        response_timeout=settings.response_timeout,
        max_body_size=settings.max_body_bytes,
        max_headers=settings.max_headers,
        max_header_bytes=settings.max_header_bytes,
    )
    server.add_sockets(sockets)
    log.info("listening on %s", settings.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watch = None
    store = config.policy_source
    if isinstance(store, PolicyStore):
        loop.add_signal_handler(signal.SIGHUP, lambda: store.reload(force=True))
    else:  # SIGHUP's default would end the process: a reload asked of a service without a file must not
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP: no policy file to reload"))
    if isinstance(store, PolicyStore) and settings.policy_check_interval > 0:
        watch = asyncio.create_task(store.watch(settings.policy_check_interval))
    await stop.wait()
    if watch is not None:
        watch.cancel()
    in_flight = max(application.in_flight, server.busy_connections())
    log.info("stopping: no new connections; finishing %d request(s) in flight", in_flight)
    application.draining = True
    server.stop()  # no new connections; the sweep goes on, so the timeouts still apply while requests drain
    await drain(application, server, time.monotonic() + DRAIN_SECONDS)
    server.close_sweeper()
    await server.close_all_connections()
    await limiter.close()
    log.info("stopped")
