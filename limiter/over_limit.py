"""OverLimitCache: denials Redis gave, remembered so a key known to be empty is denied without a round trip.

Safe because only time refills a bucket: other processes can take tokens, never add them. From the state
Redis returned with a denial, the tokens at any later moment are at most what refill gives for the time
passed. That time is measured from *before* the call was sent (Redis ran the script later), so the local
estimate never has fewer tokens than Redis would: a cached denial is one Redis would give too, its
remaining is at least Redis's and its retry_after no longer. Requests the estimate cannot rule out go to
Redis.

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
from typing import NamedTuple

from tornado_rate_limiter.limiter.bucket import BucketState, Decision, Policy, decide, refill

DEFAULT_MAX_KEYS = 10_000


class _Denial(NamedTuple):
    policy: Policy
    state: BucketState  # as Redis stored it when it denied
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

    def __len__(self) -> int:
        return len(self._denials)

    def denial(self, redis_key: str, policy: Policy, cost: float, redis_now: float | None = None) -> Decision | None:
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
        tokens = refill(cached.state, redis_now, policy).tokens
        if tokens >= cost:
            if tokens >= policy.capacity:  # full by now: nothing left to remember
                del self._denials[redis_key]
            return None
        self._denials.move_to_end(redis_key)  # a key denied again and again stays in
        return decide(False, cached.state, redis_now, policy, cost)

    def remember(self, redis_key: str, policy: Policy, state: BucketState, redis_now: float, asked_at: float) -> None:
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
