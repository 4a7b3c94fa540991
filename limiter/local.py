"""LocalBackend: token buckets in this process's memory, sharded and bounded.

The default when no Redis is configured and the fallback while Redis is down. ``acquire_now`` is the hot
path of every request on the local backend, so it does ``bucket.take`` and ``bucket.decide`` inline on
plain floats; tests/test_properties.py holds it to the model (and to Redis) bit for bit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType

from tornado_rate_limiter.limiter.bucket import (
    DEFAULT_EXPIRY_SLACK,
    BucketState,
    Decision,
    Policy,
    decide,
    validate_cost,
    validate_now,
)

DEFAULT_SHARDS = 16
DEFAULT_MAX_KEYS = 1_000_000
# Entries looked at for expiry each time a key is added: enough to drain idle keys faster than new
# ones arrive, few enough to keep an insert O(1).
_SWEEP_PER_INSERT = 2
_PLAIN_NUMBERS = (int, float)
# Decision(...) runs NamedTuple's Python-level __new__; tuple.__new__(Decision, fields) costs half.
_new_tuple = tuple.__new__


# _STATE: a bucket is stored as complex(tokens, stamp). A complex number is the smallest Python object
# holding two floats (32 bytes, against 104 for a tuple of two floats), which keeps a bucket near 175
# bytes with its key and its map slot (docs/BENCHMARKS.md).


class _Shard:
    """One lock and one LRU-ordered map of key to state: the least recently used key comes first."""

    __slots__ = ("entries", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, complex] = OrderedDict()


class LocalBackend:
    """Token buckets in memory: per policy, ``shards`` maps with a lock each and at most ``max_keys`` keys.

    When full, the least recently used key is evicted (forgetting a bucket can only make it fuller, so
    eviction errs towards allowing). A bucket that has been full again for ``expiry_slack`` seconds is
    dropped as keys are added; the slack keeps state through small backward steps of the clock.
    A policy's name identifies it: buckets are kept by name, as in Redis.
    """

    def __init__(
        self,
        *,
        shards: int = DEFAULT_SHARDS,
        max_keys: int = DEFAULT_MAX_KEYS,
        expiry_slack: float = DEFAULT_EXPIRY_SLACK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if shards < 1 or max_keys < shards:
            message = f"need 1 <= shards <= max_keys, got shards={shards}, max_keys={max_keys}"
            raise ValueError(message)
        if not expiry_slack >= 0:
            message = f"expiry_slack must be >= 0 seconds, got {expiry_slack!r}"
            raise ValueError(message)
        self._shard_count = shards
        self._keys_per_shard = max_keys // shards
        self._slack = expiry_slack
        self._clock = clock
        self._tables: dict[str, list[_Shard]] = {}  # by policy name: that policy's shards
        self._tables_lock = threading.Lock()

    def __len__(self) -> int:
        """The number of buckets held."""
        return sum(len(shard.entries) for shards in list(self._tables.values()) for shard in shards)

    async def acquire(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        return self.acquire_now(key, policy, cost, now)

    async def connect(self) -> None:
        """Nothing to connect to: here so that code written for the Redis backend runs on this one."""

    async def close(self) -> None:
        """Nothing to release (the buckets stay): the Backend protocol's ``close``."""

    async def __aenter__(self) -> LocalBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def acquire_now(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """The same as ``acquire``, without the event loop: safe to call from any thread."""
        capacity, rate = policy.capacity, policy.refill_rate
        if cost.__class__ not in _PLAIN_NUMBERS or not 0 < cost <= capacity:  # NaN fails the comparison too
            validate_cost(cost, policy)  # raises, saying why
        cost = float(cost)  # as the model: an int past 2**53 must round as it does there
        now = self._clock() if now is None else validate_now(now)
        shards = self._tables.get(policy.name) or self._shards_for(policy.name)
        shard = shards[hash(key) % self._shard_count]
        entries = shard.entries
        shard.lock.acquire()  # not `with`: on this path the context manager costs as much as the rest
        try:
            stored = entries.pop(key, None)  # and put back below, at the recently-used end
            if stored is None:
                tokens, stamp = capacity, now
            else:
                tokens, stamp = stored.real, stored.imag
            # bucket.refill, then bucket.take
            available = tokens + (now - stamp) * rate if now > stamp else tokens + 0.0
            if available > capacity:
                available = capacity
            allowed = available >= cost
            if allowed:
                remaining = available - cost
                if now > stamp:
                    stamp = now
                entries[key] = complex(remaining, stamp)  # see _STATE
                if stored is None:
                    self._make_room(entries, policy, now)
            elif stored is not None:
                entries[key] = stored  # a denial writes nothing, but counts as a use
        finally:
            shard.lock.release()
        if not allowed:  # denials are the rarer answer: the model's code, with its exact retry_after
            return decide(False, BucketState(tokens, stamp), now, policy, cost)
        reset_after = (stamp - now if stamp > now else 0.0) + (capacity - remaining) / rate  # bucket.full_after
        return _new_tuple(Decision, (True, remaining, 0.0, reset_after, capacity, False))

    def _shards_for(self, name: str) -> list[_Shard]:
        """The shards of policy ``name``, made on first use."""
        with self._tables_lock:  # two threads meeting a new name must not each make a table
            return self._tables.setdefault(name, [_Shard() for _ in range(self._shard_count)])

    def _make_room(self, entries: OrderedDict[str, complex], policy: Policy, now: float) -> None:
        """After an insert: drop a few expired entries from the cold end, then evict down to the bound."""
        for _ in range(_SWEEP_PER_INSERT):
            oldest_key, oldest = next(iter(entries.items()))
            full_at = oldest.imag + (policy.capacity - oldest.real) / policy.refill_rate
            if full_at + self._slack > now or len(entries) == 1:
                break
            del entries[oldest_key]
        while len(entries) > self._keys_per_shard:
            entries.popitem(last=False)
