"""Auto-pipelining: calls made in one event-loop turn share one round trip, and nothing else changes."""

from __future__ import annotations

import asyncio
import math

import pytest
from redis.exceptions import ResponseError

from tests.redis_process import RedisProcess
from tornado_rate_limiter.limiter import BackendError, LocalBackend, Policy, RedisBackend
from tornado_rate_limiter.limiter.auto_pipeline import MAX_BATCH

T0 = 1_764_000_000.0


def backend_on(server: RedisProcess, **options: object) -> RedisBackend:
    return RedisBackend.from_url(server.url, timeout=2.0, **options)  # type: ignore[arg-type]


def test_a_crowd_shares_a_few_round_trips_and_gets_the_sequential_answers(redis_server: RedisProcess) -> None:
    """100 concurrent calls on one 60-token bucket: ceil(100 / MAX_BATCH) round trips, exactly 60 allowed,
    and the remaining counts are those of 100 calls made one after another (59 down to 0), each once."""

    async def scenario() -> tuple[int, list[float], list[float]]:
        backend = backend_on(redis_server)
        policy = Policy(capacity=60, refill_rate=1e-6, name="crowd")
        await backend.connect()  # the script loaded: no NOSCRIPT retry in the count
        before = backend.pipeline.round_trips
        decisions = await asyncio.gather(*(backend.acquire("crowd", policy, now=T0) for _ in range(100)))
        trips = backend.pipeline.round_trips - before
        await backend.close()
        local = LocalBackend()
        expected = [local.acquire_now("crowd", policy, now=T0) for _ in range(100)]
        return trips, sorted(d.remaining for d in decisions), sorted(d.remaining for d in expected)

    trips, remaining, expected = asyncio.run(scenario())
    assert trips == math.ceil(100 / MAX_BATCH) == 4
    assert remaining == expected


def test_a_lone_call_is_sent_on_the_next_loop_turn(redis_server: RedisProcess) -> None:
    """One call alone is on the wire after a single turn of the loop: no timer, no wait for company."""

    async def scenario() -> tuple[int, bool]:
        backend = backend_on(redis_server)
        await backend.connect()  # a connection in the pool and the script loaded
        before = backend.pipeline.round_trips
        call = asyncio.create_task(backend.acquire("lone", Policy(10, 1, name="lone")))
        await asyncio.sleep(0)  # the call queues itself and starts the sender
        await asyncio.sleep(0)  # the sender's first step sends it
        sent = backend.pipeline.round_trips - before
        decision = await call
        await backend.close()
        return sent, decision.allowed

    assert asyncio.run(scenario()) == (1, True)


def test_one_bad_call_in_a_pipeline_fails_alone(redis_server: RedisProcess) -> None:
    """A key holding the wrong type fails its own call (WRONGTYPE); the others in its pipeline succeed."""

    async def scenario() -> list[object]:
        backend = backend_on(redis_server)
        policy = Policy(10, 1, name="mixed")
        await backend.client.lpush(backend.redis_key("wrong", policy), "x")
        keys = ["ok-1", "wrong", "ok-2"]
        results = await asyncio.gather(*(backend.acquire(k, policy) for k in keys), return_exceptions=True)
        await backend.close()
        return results

    first, wrong, second = asyncio.run(scenario())
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
    assert first.allowed and second.allowed  # type: ignore[union-attr]


def test_a_pipeline_reloads_a_forgotten_script(redis_server: RedisProcess) -> None:
    """After SCRIPT FLUSH, a pipeline whose calls all hit NOSCRIPT loads the script and runs them again."""

    async def scenario() -> list[bool]:
        backend = backend_on(redis_server)
        policy = Policy(10, 1, name="reload")
        await backend.acquire("first", policy)
        await backend.client.script_flush()
        decisions = await asyncio.gather(*(backend.acquire(f"k{i}", policy) for i in range(20)))
        await backend.close()
        return [d.allowed for d in decisions]

    assert asyncio.run(scenario()) == [True] * 20


def test_a_caller_that_gives_up_leaves_the_others_their_answers(redis_server: RedisProcess) -> None:
    """Cancelling one waiting call does not disturb the pipeline it was in."""

    async def scenario() -> tuple[bool, int]:
        backend = backend_on(redis_server)
        policy = Policy(100, 1, name="cancel")
        calls = [asyncio.create_task(backend.acquire(f"k{i}", policy)) for i in range(10)]
        await asyncio.sleep(0)
        calls[3].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await backend.close()
        cancelled = isinstance(results[3], asyncio.CancelledError)
        return cancelled, sum(1 for r in results if not isinstance(r, BaseException) and r.allowed)

    assert asyncio.run(scenario()) == (True, 9)


@pytest.mark.parametrize("crowd", [1, 2, 64])
def test_pipelined_decisions_equal_unpipelined_ones(redis_server: RedisProcess, crowd: int) -> None:
    """Crowds of 1, 2 and 64 calls over 8 keys per round trip decide exactly as the same calls one at a time.

    A crowd of 64 goes as two round trips of MAX_BATCH on two connections, which Redis may run in either
    order (as it would two concurrent callers): each key's calls stay in one round trip, where order holds.
    """

    async def scenario() -> tuple[list[object], list[object]]:
        backend = backend_on(redis_server, over_limit_keys=0)
        policy = Policy(capacity=5, refill_rate=0.25, name=f"same-{crowd}")
        trip = lambda i: (i % crowd) // MAX_BATCH  # noqa: E731  # which round trip of its crowd a call joins
        calls = [(f"k{trip(i)}-{i % 8}", 1 + i % 3, T0 + i // crowd) for i in range(192)]
        together: list[object] = []
        for start in range(0, len(calls), crowd):
            batch = calls[start : start + crowd]
            together += await asyncio.gather(*(backend.acquire("a" + k, policy, c, t) for k, c, t in batch))
        alone = [await backend.acquire("b" + k, policy, c, t) for k, c, t in calls]
        await backend.close()
        return together, alone

    together, alone = asyncio.run(scenario())
    assert together == alone


def test_a_key_that_cannot_be_sent_fails_alone(redis_server: RedisProcess) -> None:
    """A key Redis cannot be sent (a lone surrogate is no UTF-8) fails its own call, not its neighbours'."""

    async def scenario() -> list[object]:
        backend = backend_on(redis_server)
        keys = ["fine-1", "bad-\ud800", "fine-2"]
        results = await asyncio.gather(
            *(backend.acquire(k, Policy(10, 1, name="encode")) for k in keys), return_exceptions=True
        )
        await backend.close()
        return results

    first, bad, second = asyncio.run(scenario())
    assert isinstance(bad, UnicodeEncodeError)
    assert first.allowed and second.allowed  # type: ignore[union-attr]


def test_closing_answers_the_waiting_calls_and_refuses_new_ones(redis_server: RedisProcess) -> None:
    """close() while calls wait: each gets BackendError (none hangs); a call after close raises at once."""

    async def scenario() -> tuple[list[object], bool]:
        backend = backend_on(redis_server)
        policy = Policy(10, 1, name="closing")
        calls = [asyncio.create_task(backend.acquire(f"k{i}", policy)) for i in range(5)]
        await asyncio.sleep(0)  # queued, the sender not started yet
        await backend.close()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=5)
        try:
            await backend.acquire("late", policy)
        except BackendError:
            refused = True
        else:
            refused = False
        return results, refused

    results, refused = asyncio.run(scenario())
    assert all(isinstance(result, BackendError) for result in results)
    assert refused


def test_a_sender_cancelled_before_it_ran_leaves_no_caller_waiting(redis_server: RedisProcess) -> None:
    """If the task that would connect and send a turn's calls is cancelled before its first step (a
    shutdown that cancels every task), its callers get BackendError and the next calls are sent as usual."""

    async def scenario() -> tuple[object, bool]:
        backend = backend_on(redis_server)
        policy = Policy(10, 1, name="cancelled-sender")
        waiting = asyncio.create_task(backend.acquire("first", policy))
        for _ in range(10):  # the call is queued, and the task that connects and sends it created, not yet run
            await asyncio.sleep(0)
            if backend.pipeline._senders:
                break
        assert backend.pipeline._senders
        for sender in list(backend.pipeline._senders):
            sender.cancel()
        result = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), timeout=5)
        later = await asyncio.wait_for(backend.acquire("second", policy), timeout=5)
        await backend.close()
        return result[0], later.allowed

    first, later_allowed = asyncio.run(scenario())
    assert isinstance(first, BackendError)
    assert later_allowed
