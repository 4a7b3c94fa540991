"""What only the local backend does: the bound on keys, dropping idle buckets, threads."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from tornado_rate_limiter.limiter import LocalBackend, Policy

POLICY = Policy(capacity=10, refill_rate=1.0, name="local")
T0 = 1_764_000_000.0


class TestBounds:
    def test_never_holds_more_than_max_keys_per_policy(self) -> None:
        """However many distinct keys arrive, the backend holds at most max_keys buckets of each policy."""
        backend = LocalBackend(shards=4, max_keys=100)
        other = Policy(capacity=10, refill_rate=1.0, name="other")
        for number in range(5000):
            backend.acquire_now(f"ip:{number}", POLICY, now=T0)
        assert 90 < len(backend) <= 100
        for number in range(5000):
            backend.acquire_now(f"ip:{number}", other, now=T0)
        assert 180 < len(backend) <= 200

    def test_evicts_the_least_recently_used_key(self) -> None:
        """When a shard is full, the key used longest ago goes first and a recently used one stays."""
        backend = LocalBackend(shards=1, max_keys=3)
        for key in ("a", "b", "c"):
            backend.acquire_now(key, POLICY, cost=10, now=T0)
        backend.acquire_now("a", POLICY, cost=1, now=T0)  # denied, but a use: "a" is now the newest
        backend.acquire_now("d", POLICY, cost=10, now=T0)  # evicts "b"
        assert not backend.acquire_now("a", POLICY, cost=1, now=T0).allowed  # still drained
        assert backend.acquire_now("b", POLICY, cost=10, now=T0).allowed  # forgotten: full again

    def test_drops_buckets_that_are_full_again(self) -> None:
        """Idle buckets are dropped once they have been full for the expiry slack."""
        backend = LocalBackend(shards=1, max_keys=1000, expiry_slack=1.0)
        for number in range(100):
            backend.acquire_now(f"idle:{number}", POLICY, cost=1, now=T0)
        later = T0 + 1 + 1.0  # 1 token refills in 1 s; then the 1 s slack
        for number in range(100):
            backend.acquire_now(f"new:{number}", POLICY, cost=1, now=later)
        assert len(backend) == 100  # each insert swept idle entries as fast as new ones came

    def test_keeps_buckets_through_a_small_clock_setback(self) -> None:
        """A bucket full again less than the slack ago is kept, so a clock stepping back sees it."""
        backend = LocalBackend(shards=1, expiry_slack=1.0)
        backend.acquire_now("k", POLICY, cost=10, now=T0)
        backend.acquire_now("other", POLICY, cost=1, now=T0 + 10.5)  # full at T0 + 10, slack to + 11
        assert backend.acquire_now("k", POLICY, cost=10, now=T0 + 10.5).allowed

    @pytest.mark.parametrize(("shards", "max_keys"), [(0, 10), (8, 4)])
    def test_rejects_impossible_sizes(self, shards: int, max_keys: int) -> None:
        """Zero shards, or fewer keys than shards, is refused with a ValueError."""
        with pytest.raises(ValueError, match="shards"):
            LocalBackend(shards=shards, max_keys=max_keys)


class TestConcurrency:
    @pytest.mark.parametrize("round_", range(20))
    def test_threads_never_admit_more_than_capacity(self, round_: int) -> None:
        """Eight threads racing on one key of a policy none has used yet, all starting at once, get exactly
        capacity tokens between them (the policy's table and the bucket are made once)."""
        backend = LocalBackend()
        policy = Policy(capacity=1000, refill_rate=1e-6, name=f"race-{round_}")  # no refill within the test
        allowed = [0] * 8
        start = threading.Barrier(8)

        def worker(index: int) -> None:
            start.wait()
            for _ in range(500):
                allowed[index] += backend.acquire_now("shared", policy, now=T0).allowed

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # threads switch every few bytecodes: races show up, not once a month
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert sum(allowed) == 1000

    def test_async_acquire_matches_the_sync_path(self) -> None:
        """acquire() and acquire_now() are the same decision, on the same buckets."""
        backend = LocalBackend()
        first = asyncio.run(backend.acquire("k", POLICY, 4, T0))
        second = backend.acquire_now("k", POLICY, 4, T0)
        assert (first.remaining, second.remaining) == (6, 2)

    def test_uses_the_injected_clock(self) -> None:
        """Without now, time comes from the clock given to the constructor."""
        ticks = iter([T0, T0, T0 + 5])
        backend = LocalBackend(clock=lambda: next(ticks))
        backend.acquire_now("k", POLICY, cost=10)
        assert not backend.acquire_now("k", POLICY, cost=1).allowed
        assert backend.acquire_now("k", POLICY, cost=1).remaining == 4
