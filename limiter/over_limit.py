"""OverLimitCache: denials Redis gave, remembered so a key known to be empty is denied without a round trip.

Safe because, in every algorithm, only time gives quota back (a bucket refills, a window ends or slides
on): other processes can spend quota, never add it. From the state Redis returned with a denial, the
quota at any later moment is at most what the algorithm's model gives for the time passed with no other
traffic. That time is measured from *before* the call was sent (Redis ran the script later), so the local
estimate never has less quota than Redis would: a cached denial is one Redis would give too, its
remaining is at least Redis's and its retry_after no longer. So a token bucket's denial stands until a
token may be back, a fixed window's until the window ends, a sliding window's until its retry_after.
Requests the estimate cannot rule out go to Redis.

Only decisions on Redis's clock (``now=None``) are cached; a caller's explicit ``now`` is its own clock.
What this assumes: Redis's clock does not jump ahead of this process's monotonic one (a clock step on the
Redis host, a failover to a host whose clock is ahead), no process writes the key with an explicit ``now``
in the future, and every process gives a policy name the same policy. Where one of these fails, a key is
denied that Redis would allow, for at most the ``retry_after`` the cache computed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.bucket import Decision

DEFAULT_MAX_KEYS = 10_000


class _Denial(NamedTuple):
    policy: AnyPolicy
    state: Any  # the algorithm's state, as Redis stored it when it denied
    redis_now: float  # Redis's clock when it decided
    asked_at: float  # this process's monotonic clock before the call was sent


class OverLimitCache:
    """At most ``max_keys`` recent denials, by Redis key; the least recently denied is forgotten first."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 0:
            message = f"max_keys must be >= 0, got {max_keys!r}"
            raise ValueError(message)
        self.max_keys = max_keys
        self._clock = clock
        self._denials: OrderedDict[str, _Denial] = OrderedDict()
        self.hits = 0  # denials answered from here, without a round trip (a plain int: read at scrape)

    def __len__(self) -> int:
        return len(self._denials)

    def denial(self, redis_key: str, policy: AnyPolicy, cost: float, redis_now: float | None = None) -> Decision | None:
        """The Decision Redis would give now if it is surely a denial, else None (ask Redis).

        ``redis_now`` is Redis's time, when known; by default it is estimated (never earlier than it is).
        """
        cached = self._denials.get(redis_key)
        if cached is None:
            return None
        if cached.policy is not policy and cached.policy != policy:  # redefined: the state may not fit
            return None
        if redis_now is None:
            redis_now = cached.redis_now + (self._clock() - cached.asked_at)
        decision = algorithm_for(policy).cached_denial(cached.state, redis_now, policy, cost)
        if decision is None:  # Redis may allow: ask it (an allowed answer forgets the key)
            return None
        self._denials.move_to_end(redis_key)  # a key denied again and again stays in
        self.hits += 1
        return decision

    def remember(self, redis_key: str, policy: AnyPolicy, state: Any, redis_now: float, asked_at: float) -> None:
        """Keep a denial: Redis found ``state`` at ``redis_now`` for a call sent at ``asked_at`` (monotonic)."""
        if self.max_keys == 0:
            return
        self._denials[redis_key] = _Denial(policy, state, redis_now, asked_at)
        self._denials.move_to_end(redis_key)
        if len(self._denials) > self.max_keys:
            self._denials.popitem(last=False)

    def forget(self, redis_key: str) -> None:
        """Drop what is known about ``redis_key`` (Redis has just allowed a request on it)."""
        self._denials.pop(redis_key, None)
