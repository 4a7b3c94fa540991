"""loop_time_deadline: Redis is blamed only for time the event loop had to read its reply."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.redis_process import RedisProcess
from tornado_rate_limiter.limiter import BackendError, Policy, RedisBackend
from tornado_rate_limiter.limiter.deadline import loop_time_deadline


def block_the_loop_soon(seconds: float) -> None:
    """On the loop's next turn, block it (as a CPU-bound handler or a GC pause would)."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)


class TestLoopTimeDeadline:
    def test_a_blocked_loop_is_not_counted_against_the_operation(self) -> None:
        """An operation of 20 ms under a 50 ms deadline, the loop blocked for 200 ms meanwhile: no timeout
        (asyncio.timeout, counting wall time, times out)."""

        async def scenario() -> None:
            async with loop_time_deadline(0.05):
                block_the_loop_soon(0.2)
                await asyncio.sleep(0.02)

        asyncio.run(scenario())

    def test_an_operation_that_never_ends_times_out_after_the_deadline(self) -> None:
        """A wait that never ends raises TimeoutError, not before the deadline."""

        async def scenario() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                async with loop_time_deadline(0.05):
                    await asyncio.sleep(10)
            return loop.time() - started

        elapsed = asyncio.run(scenario())
        assert 0.05 <= elapsed < 0.5  # ten times the deadline: room for a busy machine, not for a slow deadline

    def test_a_stalled_loop_adds_its_lag_and_no_more(self) -> None:
        """Blocked for 200 ms inside a 50 ms deadline on a wait that never ends: the timeout comes after the
        deadline plus the lag, less the one 10 ms step that the stall overlaps (so at least 240 ms), and it
        still comes."""

        async def scenario() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                async with loop_time_deadline(0.05):
                    block_the_loop_soon(0.2)
                    await asyncio.sleep(10)
            return loop.time() - started

        elapsed = asyncio.run(scenario())
        assert 0.2 + 0.05 - 0.01 - 1e-3 <= elapsed < 0.2 + 0.5

    def test_a_timeout_the_body_turned_into_another_error_leaves_no_cancellation_behind(self) -> None:
        """The body catches our cancellation and raises something else: the task is not left cancelling, so
        a later deadline in the same task still times out as a TimeoutError (as asyncio.timeout leaves it)."""

        async def scenario() -> int:
            with pytest.raises(ConnectionError):
                async with loop_time_deadline(0.02):
                    try:
                        await asyncio.sleep(10)
                    except asyncio.CancelledError:
                        raise ConnectionError("the read was interrupted") from None
            task = asyncio.current_task()
            assert task is not None
            with pytest.raises(TimeoutError):
                async with loop_time_deadline(0.02):
                    await asyncio.sleep(10)
            return task.cancelling()

        assert asyncio.run(scenario()) == 0

    def test_a_cancellation_from_outside_stays_a_cancellation(self) -> None:
        """Cancelling the task that waits is CancelledError, not TimeoutError."""

        async def waiter() -> None:
            async with loop_time_deadline(1.0):
                await asyncio.sleep(10)

        async def scenario() -> None:
            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())


class TestRedisDecisions:
    def test_a_reply_that_arrived_while_the_loop_was_blocked_is_used(self, redis_server: RedisProcess) -> None:
        """With a 50 ms deadline and the loop blocked for 200 ms right after the call is sent, the decision
        is Redis's own (it was the fallback's: the deadline counted the loop's lag against Redis)."""

        async def scenario() -> None:
            async with RedisBackend.from_url(redis_server.url, timeout=0.05) as backend:
                policy = Policy(10, 1.0, name="blocked-loop")
                await backend.connect()
                for _ in range(5):
                    call = asyncio.ensure_future(backend.acquire_from_redis("k", policy))
                    await asyncio.sleep(0)  # the call is queued; the sender runs on the next turn
                    block_the_loop_soon(0.2)
                    decision = await call
                    assert decision.allowed and not decision.degraded

        asyncio.run(scenario())

    def test_a_frozen_redis_is_still_detected(self) -> None:
        """SIGSTOP: the decision fails with BackendError (timed out) soon after the deadline."""
        server = RedisProcess().start()

        async def scenario() -> float:
            async with RedisBackend.from_url(server.url, timeout=0.05) as backend:
                await backend.connect()
                server.freeze()
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(BackendError, match="timed out"):
                    await backend.acquire_from_redis("k", Policy(10, 1.0, name="frozen"))
                return loop.time() - started

        try:
            elapsed = asyncio.run(scenario())
        finally:
            server.thaw()
            server.stop()
        assert 0.05 <= elapsed < 5.0
