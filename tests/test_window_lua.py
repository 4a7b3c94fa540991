"""The window algorithms' Lua (lua/fixed_window.lua, lua/sliding_window.lua) against their reference models,
on a real redis-server: the same decisions and the same stored state, bit for bit, for any sequence."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from tests.redis_process import RedisProcess
from tests.test_window_models import MODELS, limits, starts, window_steps, windows
from tornado_rate_limiter.limiter.algorithms.fixed_window import FIXED_WINDOW
from tornado_rate_limiter.limiter.algorithms.sliding_window import SLIDING_WINDOW
from tornado_rate_limiter.limiter.algorithms.window import WindowState

SCRIPTS = {"fixed": FIXED_WINDOW.script.text, "sliding": SLIDING_WINDOW.script.text}


@pytest.fixture(scope="module")
def client(redis_server: RedisProcess) -> redis.Redis:
    return redis_server.client()


def redis_take(
    client: redis.Redis, name: str, key: str, limit: float, window: float, cost: float, now: float
) -> tuple[bool, WindowState]:
    """One call of the script with an explicit ``now``: whether it allowed, and the state it reports."""
    reply = client.eval(SCRIPTS[name], 1, key, repr(limit), repr(window), repr(cost), repr(now), "1000")
    index, current = int(float(reply[1])), float(reply[2])
    previous = float(reply[3]) if name == "sliding" else 0.0
    return reply[0] == 1, WindowState(index, current, previous)


@pytest.mark.parametrize("name", MODELS)
@given(data=st.data(), limit=limits, window=windows, start=starts)
def test_redis_decides_as_the_model(
    client: redis.Redis, name: str, data: st.DataObject, limit: float, window: float, start: float
) -> None:
    """Invariant: for any sequence of requests on one key, the script allows exactly what the model allows
    and stores exactly the state the model keeps (and a TTL with it)."""
    kind, take, _ = MODELS[name]
    policy = kind(limit, window, name="prop")
    key = f"window-lua:{uuid.uuid4().hex}"
    state: WindowState | None = None
    now = start
    for delta, quarters in data.draw(window_steps(window), label="requests"):
        now = max(0.0, now + delta)
        cost = min(limit, quarters / 4)
        allowed, kept = take(state, now, policy, cost)
        redis_allowed, redis_state = redis_take(client, name, key, limit, window, cost, now)
        assert redis_allowed == allowed
        assert kept is not None and redis_state == kept
        if allowed:
            assert client.pttl(key) > 0
        state = kept


@pytest.mark.parametrize("name", MODELS)
def test_on_redis_clock_without_now(client: redis.Redis, name: str) -> None:
    """With ``now`` empty the script reads Redis's TIME: the reply's time is Redis's, and it decides."""
    key = f"window-lua:{uuid.uuid4().hex}"
    reply = client.eval(SCRIPTS[name], 1, key, "5", "60", "1", "", "1000")
    seconds, micros = client.time()
    assert reply[0] == 1 and abs(float(reply[-1]) - (seconds + micros / 1e6)) < 5
