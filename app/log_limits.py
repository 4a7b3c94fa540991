"""Log lines a client can cause are rate limited: a flood of bad requests must not flood the log.

One record per logger and message template passes every ``interval`` seconds; the next one that passes
says how many were held back meanwhile. Templates are the code's own (``"Malformed HTTP message from
%s: %s"``), so the table stays small; it is bounded all the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# Tornado's loggers for what clients send (malformed requests, bugs they trigger), and the service's own
# for connections closed at its bounds and for what proxies send /check. (Redis errors are limited where
# they are logged, limiter/limiter.py.)
CLIENT_CAUSED = (
    "tornado.general",
    "tornado.application",
    "tornado_rate_limiter.connections",
    "tornado_rate_limiter.forward_auth",  # a trusted proxy that sends not what RATE_LIMIT_FORWARD_AUTH says
)
_MAX_TEMPLATES = 1024


class RepeatedLogFilter(logging.Filter):
    """At most one record per (logger, template) every ``interval`` seconds, with a count of the rest."""

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) >= _MAX_TEMPLATES and key not in self._last:
            self._last.clear()  # templates that many are not the code's own: start again
            self._held.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held and last is not None:
            record.msg, record.args = f"{record.getMessage()} ({held} more like this in {now - last:.0f} s)", None
        return True


def limit_repeated_logs(loggers: tuple[str, ...] = CLIENT_CAUSED, interval: float = 5.0) -> RepeatedLogFilter:
    """Put one RepeatedLogFilter on each of ``loggers`` (records logged by them, not their children)."""
    repeated = RepeatedLogFilter(interval)
    for name in loggers:
        logging.getLogger(name).addFilter(repeated)
    return repeated
