"""A deadline that blames Redis only for time Redis had: the event loop's own lag does not count.

``asyncio.timeout(0.05)`` fires 50 ms of wall time after it starts. On a CPU-starved process (a GC pause,
a noisy neighbour, a burst of requests) the loop may be busy for most of those 50 ms while Redis's reply
already sits in the socket, and the decision would go to the fallback as if Redis were down: a fleet then
admits N times the limit exactly when it is under the most pressure. This deadline counts only the time
the loop was free to read a reply: it checks every ``step`` seconds and credits each check with at most
``step``, however late it ran. When the credit reaches the timeout, a reply that arrived meanwhile still
gets one loop turn to be read before the operation is cancelled. A genuinely frozen Redis is detected
after the timeout plus the loop's lag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# Checks per timeout: the deadline is at most one step late on an idle loop (10 ms for 50 ms).
_STEPS = 5
_MAX_STEP = 0.02


class LoopTimeAlarm:
    """Calls ``on_expire`` once ``timeout`` seconds of responsive loop time have passed (counted as the
    module says), unless cancelled first. What ``loop_time_deadline`` is built on; also usable where no
    task is to be cancelled (a batch of calls whose futures are to fail)."""

    __slots__ = ("_credited", "_handle", "_last", "_loop", "_on_expire", "_step", "_timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, on_expire: Callable[[], object]) -> None:
        self._loop, self._timeout, self._on_expire = loop, timeout, on_expire
        self._step = min(timeout / _STEPS, _MAX_STEP)
        self._credited = 0.0
        self._last = loop.time()
        self._handle: asyncio.Handle = loop.call_at(self._last + self._step, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        self._credited += min(now - self._last, self._step)  # a late check credits no more than its step
        self._last = now
        if self._credited >= self._timeout - 1e-9:
            self._handle = self._loop.call_soon(self._on_expire)  # after the I/O callbacks already queued
        else:
            self._handle = self._loop.call_at(now + min(self._step, self._timeout - self._credited), self._check)

    def cancel(self) -> None:
        self._handle.cancel()


@asynccontextmanager
async def loop_time_deadline(timeout: float) -> AsyncIterator[None]:
    """Like ``asyncio.timeout(timeout)``, but counting only the time the event loop was responsive.

    Raises TimeoutError when the body ran out of time; lag is the time the loop ran a check later than
    asked (the loop was busy, or the process had no CPU).
    """
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    cancelling = task.cancelling()  # cancellations asked for before: not ours to turn into a timeout
    uncancelled = False
    alarm = LoopTimeAlarm(asyncio.get_running_loop(), timeout, expire)
    try:
        yield
    except asyncio.CancelledError:
        if expired:
            uncancelled = True
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise
    finally:
        alarm.cancel()
        if expired and not uncancelled:  # the body turned our cancellation into another error: undo it
            task.uncancel()
