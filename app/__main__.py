"""`python -m app`: run the service as a Heroku-style process (binds $PORT, stops cleanly on SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import tornado.httpserver

from app.service import make_app
from app.settings import Settings, SettingsError
from limiter import RedisBackend

log = logging.getLogger("app")


async def serve(settings: Settings) -> None:
    """Listen until SIGTERM or SIGINT, then stop accepting, let requests in flight finish, close Redis."""
    application = make_app(settings)
    server = tornado.httpserver.HTTPServer(application)
    server.listen(settings.port, settings.host)
    log.info("listening on %s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: no new connections, finishing requests in flight")
    server.stop()
    await asyncio.wait_for(server.close_all_connections(), timeout=20)
    backend = application.settings["limiter_backend"]
    if isinstance(backend, RedisBackend):
        await backend.close()
    log.info("stopped")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
