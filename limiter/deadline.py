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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Checks per timeout: the deadline is at most one step late on an idle loop (10 ms for 50 ms).
_STEPS = 5
_MAX_STEP = 0.02


@asynccontextmanager
async def loop_time_deadline(timeout: float) -> AsyncIterator[None]:
    """Like ``asyncio.timeout(timeout)``, but counting only the time the event loop was responsive.

    Raises TimeoutError when the body ran out of time; lag is the time the loop ran a check later than
    asked (the loop was busy, or the process had no CPU).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    step = min(timeout / _STEPS, _MAX_STEP)
    credited = 0.0
    expired = False
    handle: asyncio.Handle | None = None
    last = loop.time()

    def check() -> None:
        nonlocal credited, last, handle
        now = loop.time()
        credited += min(now - last, step)  # a late check credits no more than the step it waited for
        last = now
        if credited >= timeout - 1e-9:
            handle = loop.call_soon(expire)  # after the I/O callbacks and task steps already queued
        else:
            handle = loop.call_at(now + min(step, timeout - credited), check)

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    cancelling = task.cancelling()  # cancellations asked for before: not ours to turn into a timeout
    uncancelled = False
    handle = loop.call_at(last + step, check)
    try:
        yield
    except asyncio.CancelledError:
        if expired:
            uncancelled = True
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise
    finally:
        handle.cancel()
        if expired and not uncancelled:  # the body turned our cancellation into another error: undo it
            task.uncancel()
