"""RedisLink (limiter/redis_link.py): the one connection a single server's calls go on. Its replies must
reach the right callers whatever callers give up, time out or lose the connection, on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from tests.redis_process import RedisProcess
from tornado_rate_limiter.limiter import BackendError, Policy, RedisBackend

T = TypeVar("T")


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    """A server of this test's own: these tests freeze it and kill its clients."""
    process = RedisProcess().start()
    yield process
    process.stop()


def run_on(server: RedisProcess, scenario: Callable[[RedisBackend], Awaitable[T]], timeout: float = 2.0) -> T:
    async def main() -> T:
        backend = RedisBackend.from_url(server.url, timeout=timeout)
        await backend.connect()
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


async def written(backend: RedisBackend, trips_before: int) -> None:
    """Until the pipeline has written a batch since ``trips_before`` (a few loop turns at most)."""
    for _ in range(50):
        if backend.pipeline.round_trips > trips_before:
            return
        await asyncio.sleep(0)
    message = "the call was never written"
    raise AssertionError(message)


def test_a_caller_that_gives_up_leaves_the_connection_in_step(server: RedisProcess) -> None:
    """A call written to a frozen Redis whose caller is cancelled: once Redis answers, its reply is read
    and dropped on the same connection; the next call gets its own answer, and the given-up call was
    still charged (Redis ran it)."""

    async def scenario(backend: RedisBackend) -> tuple[bool, float, float]:
        link = backend.pipeline._link
        server.freeze()
        try:
            trips = backend.pipeline.round_trips
            gave_up = asyncio.create_task(backend.acquire("gave-up", Policy(5, 0.001, name="first")))
            await written(backend, trips)
            gave_up.cancel()
            await asyncio.gather(gave_up, return_exceptions=True)
        finally:
            server.thaw()
        other = await backend.acquire("other", Policy(10, 0.001, name="second"))
        again = await backend.acquire("gave-up", Policy(5, 0.001, name="first"))
        return backend.pipeline._link is link, other.remaining, again.remaining

    same_link, other_remaining, again_remaining = run_on(server, scenario)
    assert same_link
    assert round(other_remaining, 3) == 9  # its own bucket of 10, not the given-up call's reply (4 of 5)
    assert round(again_remaining, 3) == 3  # the given-up call took one token: Redis ran it


def test_a_batch_past_its_deadline_fails_and_later_answers_are_right(server: RedisProcess) -> None:
    """Redis frozen past the deadline: the batch's calls fail as an outage (BackendError); thawed, the
    next calls on the same connection get their own answers."""

    async def scenario(backend: RedisBackend) -> tuple[object, bool, list[float]]:
        link = backend.pipeline._link
        server.freeze()
        try:
            late = await asyncio.gather(backend.acquire("late", Policy(5, 0.001, name="late")), return_exceptions=True)
        finally:
            server.thaw()
        answers = [await backend.acquire(f"after-{n}", Policy(10 + n, 0.001, name="after")) for n in range(3)]
        return late[0], backend.pipeline._link is link, [answer.remaining for answer in answers]

    late, same_link, remaining = run_on(server, scenario, timeout=0.2)
    assert isinstance(late, BackendError)
    assert same_link
    assert [round(value, 3) for value in remaining] == [9, 10, 11]


def test_a_connection_closed_by_redis_is_replaced(server: RedisProcess) -> None:
    """CLIENT KILL of our connection: the calls after it go on a new connection and are answered."""

    async def scenario(backend: RedisBackend) -> tuple[bool, list[bool]]:
        link = backend.pipeline._link
        assert link is not None
        server.client().client_kill_filter(_type="normal", skipme=True)
        for _ in range(100):  # until the link hears of it
            if not link.usable:
                break
            await asyncio.sleep(0.01)
        answers = [await backend.acquire("after-kill", Policy(10, 0.001, name="kill")) for _ in range(3)]
        return backend.pipeline._link is not link, [answer.allowed for answer in answers]

    replaced, allowed = run_on(server, scenario)
    assert replaced
    assert allowed == [True, True, True]
