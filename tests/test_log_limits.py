"""RepeatedLogFilter: one line per template every few seconds, and the count of the rest."""

from __future__ import annotations

import logging

from tornado_rate_limiter.app.log_limits import RepeatedLogFilter


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("tornado.general", logging.INFO, __file__, 1, message, args, None)


def test_repeats_are_held_back_and_counted_on_the_next_line() -> None:
    """Within the interval only the first of a template passes; after it, the next one says how many were
    held back; other templates pass on their own."""
    clock = [0.0]
    repeated = RepeatedLogFilter(interval=5.0, clock=lambda: clock[0])
    passed = [repeated.filter(record("Malformed HTTP message from %s: %s", "1.2.3.4", "bad")) for _ in range(100)]
    assert passed == [True] + [False] * 99
    assert repeated.filter(record("another template %s", "x"))
    clock[0] = 6.0
    late = record("Malformed HTTP message from %s: %s", "5.6.7.8", "bad")
    assert repeated.filter(late)
    assert late.getMessage() == "Malformed HTTP message from 5.6.7.8: bad (99 more like this in 6 s)"
