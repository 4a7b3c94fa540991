"""LocalBackend: token buckets in this process's memory, sharded and bounded.

The default when no Redis is configured and the fallback while Redis is down.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from limiter.bucket import (
    DEFAULT_EXPIRY_SLACK,
    BucketState,
    Decision,
    Policy,
    decide,
    full_after,
    take,
    validate_cost,
    validate_now,
)

DEFAULT_SHARDS = 16
DEFAULT_MAX_KEYS = 1_000_000
# Entries looked at for expiry each time a key is added: enough to drain idle keys faster than new
# ones arrive, few enough to keep an insert O(1).
_SWEEP_PER_INSERT = 2


class _Entry(NamedTuple):
    tokens: float
    stamp: float
    expires_at: float  # when the bucket is full again, plus the slack: past it the entry is dropped


class _Shard:
    """One lock and one LRU-ordered map: the least recently used key comes first."""

    __slots__ = ("entries", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, _Entry] = OrderedDict()


class LocalBackend:
    """Token buckets in memory: ``shards`` maps with a lock each, at most ``max_keys`` keys in all.

    When full, the least recently used key is evicted (forgetting a bucket can only make it fuller, so
    eviction errs towards allowing). A bucket that has been full again for ``expiry_slack`` seconds is
    dropped as keys are added; the slack keeps state through small backward steps of the clock.
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
        self._shards = [_Shard() for _ in range(shards)]
        self._keys_per_shard = max_keys // shards
        self._slack = expiry_slack
        self._clock = clock

    def __len__(self) -> int:
        """The number of buckets held."""
        return sum(len(shard.entries) for shard in self._shards)

    async def acquire(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        return self.acquire_now(key, policy, cost, now)

    def acquire_now(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """The same as ``acquire``, without the event loop: safe to call from any thread."""
        cost = validate_cost(cost, policy)
        now = self._clock() if now is None else validate_now(now)
        bucket_key = f"{policy.name}:{key}"
        shard = self._shards[hash(bucket_key) % len(self._shards)]
        with shard.lock:
            entries = shard.entries
            entry = entries.get(bucket_key)
            state = BucketState(entry.tokens, entry.stamp) if entry is not None else None
            allowed, kept = take(state, now, policy, cost)
            if allowed:
                expires_at = now + full_after(kept, now, policy) + self._slack
                entries[bucket_key] = _Entry(kept.tokens, kept.stamp, expires_at)
            if entry is not None:
                entries.move_to_end(bucket_key)
            elif allowed:
                self._make_room(entries, now)
        return decide(allowed, kept, now, policy, cost)

    def _make_room(self, entries: OrderedDict[str, _Entry], now: float) -> None:
        """After an insert: drop a few expired entries from the cold end, then evict down to the bound."""
        for _ in range(_SWEEP_PER_INSERT):
            if not entries:
                break
            oldest_key, oldest = next(iter(entries.items()))
            if oldest.expires_at > now:
                break
            del entries[oldest_key]
        while len(entries) > self._keys_per_shard:
            entries.popitem(last=False)
