"""LocalBackend: rate limits in this process's memory, sharded and bounded, for any algorithm.

The default when no Redis is configured and the fallback while Redis is down. ``acquire_now`` is the hot
path of every request on the local backend: it finds the key's shard and lets the policy's algorithm step
the stored value (``Algorithm.local_step``); tests hold every step to its model (and to Redis) bit for bit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from tornado_rate_limiter.limiter.algorithms import Algorithm, AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.bucket import DEFAULT_EXPIRY_SLACK, Decision, validate_now
from tornado_rate_limiter.limiter.verdict import Charge, Verdict, check_charges, outcome, verdict_of

DEFAULT_SHARDS = 16
DEFAULT_MAX_KEYS = 1_000_000
# Entries looked at for expiry each time a key is added: enough to drain idle keys faster than new
# ones arrive, few enough to keep an insert O(1).
_SWEEP_PER_INSERT = 2
_PLAIN_NUMBERS = (int, float)


class _Shard:
    """One lock and one LRU-ordered map of key to state: the least recently used key comes first."""

    __slots__ = ("entries", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, Any] = OrderedDict()  # values as the algorithm's local_step keeps them


class LocalBackend:
    """Limits in memory: per policy, ``shards`` maps with a lock each and at most ``max_keys`` keys.

    When full, the least recently used key is evicted (forgetting a key can only give it more quota, so
    eviction errs towards allowing). A key that has been fresh again for ``expiry_slack`` seconds is
    dropped as keys are added; the slack keeps state through small backward steps of the clock.
    A policy's algorithm and name identify it. As in Redis, where one key holds a name's state whatever
    the algorithm, a key charged under a name forgets what another algorithm kept for it under that name
    (a policy file reloaded with another algorithm for a name starts its keys fresh, on both backends).
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
        self._tables: dict[tuple[type, str], list[_Shard]] = {}  # by policy class and name: its shards
        self._tables_lock = threading.Lock()
        # The tables of the same name under other algorithms, for the names that have several (rare).
        self._same_name: dict[tuple[type, str], list[list[_Shard]]] = {}

    def __len__(self) -> int:
        """The number of keys held."""
        return sum(len(shard.entries) for shards in list(self._tables.values()) for shard in shards)

    async def acquire(self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None) -> Decision:
        """Spend ``cost`` of ``key``'s quota under ``policy`` if it has that much left."""
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

    def acquire_now(self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None) -> Decision:
        """The same as ``acquire``, without the event loop: safe to call from any thread."""
        algorithm = algorithm_for(policy)
        if cost.__class__ not in _PLAIN_NUMBERS or not 0 < cost <= algorithm.quota(policy):  # NaN fails too
            algorithm.validate_cost(cost, policy)  # raises, saying why
        cost = float(cost)  # as the model: an int past 2**53 must round as it does there
        now = self._clock() if now is None else validate_now(now)
        table = (policy.__class__, policy.name)
        shards = self._tables.get(table) or self._shards_for(table)
        shard = shards[hash(key) % self._shard_count]
        entries = shard.entries
        shard.lock.acquire()  # not `with`: on this path the context manager costs as much as the rest
        try:
            stored = entries.pop(key, None)  # and put back below, at the recently-used end
            decision, kept = algorithm.local_step(stored, now, policy, cost)
            if kept is not None:
                entries[key] = kept
                if stored is None:
                    self._make_room(entries, algorithm, policy, now)
            elif stored is not None:
                entries[key] = stored  # a denial writes nothing, but counts as a use
        finally:
            shard.lock.release()
        if self._same_name and kept is not None:
            self._forget_elsewhere(table, key)
        return decision

    async def acquire_all(self, charges: Sequence[Charge], now: float | None = None) -> Verdict:
        """Several limits of one request, all or nothing (limiter/verdict.py)."""
        return self.acquire_all_now(charges, now)

    def acquire_all_now(self, charges: Sequence[Charge], now: float | None = None) -> Verdict:
        """``acquire_all`` without the event loop: the shards involved are locked together (in one order,
        so two requests never wait on each other), so no other decision sees a half-charged request."""
        costs = check_charges(charges)
        now = self._clock() if now is None else validate_now(now)
        places = []
        for charge in charges:
            table = (charge.policy.__class__, charge.policy.name)
            shards = self._tables.get(table) or self._shards_for(table)
            places.append(shards[hash(charge.key) % self._shard_count])
        locks = sorted({id(shard): shard.lock for shard in places}.items())
        for _, lock in locks:
            lock.acquire()
        try:
            stored = [shard.entries.get(charge.key) for shard, charge in zip(places, charges, strict=True)]
            outcomes = [
                outcome(charge, cost, algorithm_for(charge.policy).state_of(value), now)
                for charge, cost, value in zip(charges, costs, stored, strict=True)
            ]
            verdict = verdict_of(charges, costs, outcomes, now)
            for shard, charge, value, found, charged in zip(
                places, charges, stored, outcomes, verdict.charged, strict=True
            ):
                entries, algorithm = shard.entries, algorithm_for(charge.policy)
                if charged:
                    entries.pop(charge.key, None)
                    entries[charge.key] = algorithm.stored_form(found.after)
                    if value is None:
                        self._make_room(entries, algorithm, charge.policy, now)
                elif value is not None:
                    entries.move_to_end(charge.key)  # a use, though nothing changed
        finally:
            for _, lock in reversed(locks):
                lock.release()
        if self._same_name:
            for charge, charged in zip(charges, verdict.charged, strict=True):
                if charged:
                    self._forget_elsewhere((charge.policy.__class__, charge.policy.name), charge.key)
        return verdict

    def _shards_for(self, table: tuple[type, str]) -> list[_Shard]:
        """The shards of one policy, made on first use."""
        with self._tables_lock:  # two threads meeting a new policy must not each make a table
            shards = self._tables.get(table)
            if shards is None:
                shards = self._tables[table] = [_Shard() for _ in range(self._shard_count)]
                for other, other_shards in self._tables.items():
                    if other[1] == table[1] and other != table:
                        self._same_name.setdefault(table, []).append(other_shards)
                        self._same_name.setdefault(other, []).append(shards)
            return shards

    def _forget_elsewhere(self, table: tuple[type, str], key: str) -> None:
        """``key`` was just charged under ``table``'s name: what other algorithms kept under it goes (Redis
        overwrites the one key the name has)."""
        for shards in self._same_name.get(table, ()):
            shard = shards[hash(key) % self._shard_count]
            with shard.lock:
                shard.entries.pop(key, None)

    def _make_room(
        self, entries: OrderedDict[str, Any], algorithm: Algorithm[Any, Any], policy: AnyPolicy, now: float
    ) -> None:
        """After an insert: drop a few expired entries from the cold end, then evict down to the bound."""
        for _ in range(_SWEEP_PER_INSERT):
            oldest_key, oldest = next(iter(entries.items()))
            if algorithm.fresh_at(oldest, policy) + self._slack > now or len(entries) == 1:
                break
            del entries[oldest_key]
        while len(entries) > self._keys_per_shard:
            entries.popitem(last=False)
