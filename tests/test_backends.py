"""Behaviour every backend shares, run against the local and the Redis backend alike."""

from __future__ import annotations

import pytest

from tests.conftest import BackendDriver
from tornado_rate_limiter.limiter import FixedWindow, Policy, SlidingWindow
from tornado_rate_limiter.limiter.verdict import Charge

POLICY = Policy(capacity=5, refill_rate=1.0, name="shared")
T0 = 1_764_000_000.0


class TestAcquire:
    def test_new_key_starts_full_and_drains(self, backend: BackendDriver) -> None:
        """A new key allows exactly capacity requests at one instant, then denies."""
        key = backend.fresh_key()
        decisions = [backend.acquire(key, POLICY, now=T0) for _ in range(6)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]

    def test_denied_request_reports_retry_after_and_consumes_nothing(self, backend: BackendDriver) -> None:
        """A denial says when to retry, and the tokens it did not get are still there afterwards."""
        key = backend.fresh_key()
        backend.acquire(key, POLICY, cost=4.5, now=T0)
        denied = backend.acquire(key, POLICY, cost=2, now=T0)
        assert not denied.allowed
        assert denied.retry_after == pytest.approx(1.5)
        assert backend.acquire(key, POLICY, cost=0.5, now=T0).allowed

    def test_refills_with_time(self, backend: BackendDriver) -> None:
        """Tokens come back at refill_rate per second, up to capacity."""
        key = backend.fresh_key()
        backend.acquire(key, POLICY, cost=5, now=T0)
        assert backend.acquire(key, POLICY, cost=1, now=T0 + 2.5).remaining == pytest.approx(1.5)
        assert backend.acquire(key, POLICY, cost=1, now=T0 + 1000).remaining == 4

    def test_time_going_backwards_adds_nothing(self, backend: BackendDriver) -> None:
        """A request stamped earlier than the last one gets no tokens for the difference."""
        key = backend.fresh_key()
        backend.acquire(key, POLICY, cost=5, now=T0 + 10)
        assert not backend.acquire(key, POLICY, cost=1, now=T0).allowed
        later = backend.acquire(key, POLICY, cost=1, now=T0 + 11)
        assert later.allowed and later.remaining == 0

    def test_reports_limit_and_reset_after(self, backend: BackendDriver) -> None:
        """limit is the capacity; reset_after is how long the bucket takes to be full again."""
        decision = backend.acquire(backend.fresh_key(), POLICY, cost=2, now=T0)
        assert decision.limit == 5
        assert decision.reset_after == pytest.approx(2.0)
        assert not decision.degraded

    def test_policies_keep_separate_buckets(self, backend: BackendDriver) -> None:
        """The same key under two policy names is two buckets."""
        key = backend.fresh_key()
        backend.acquire(key, POLICY, cost=5, now=T0)
        other = Policy(capacity=5, refill_rate=1.0, name="other")
        assert backend.acquire(key, other, cost=5, now=T0).allowed

    def test_a_name_under_another_algorithm_starts_fresh(self, backend: BackendDriver) -> None:
        """One key, a policy name used by a token bucket, a sliding window and a fixed window in turn (a
        reload that changes a policy's algorithm), then the sliding window again: each change starts the
        key fresh, on both backends (the local backend answered 7 left here, Redis 9)."""
        key = backend.fresh_key()
        sliding, fixed = SlidingWindow(10, 60, name="api"), FixedWindow(10, 60, name="api")
        backend.acquire(key, Policy(10, 1.0, name="api"), cost=3, now=T0)
        assert backend.acquire(key, sliding, cost=2, now=T0).remaining == 8
        assert backend.acquire(key, fixed, cost=1, now=T0).remaining == 9
        assert backend.acquire(key, sliding, cost=1, now=T0).remaining == 9

    def test_several_limits_under_another_algorithm_start_fresh(self, backend: BackendDriver) -> None:
        """The same through acquire_all: a window charged after a bucket of the same name forgets it."""
        key = backend.fresh_key()
        bucket, sliding = Policy(10, 1.0, name="api"), SlidingWindow(10, 60, name="api")
        backend.run(backend.backend.acquire_all([Charge(key, bucket, 4)], now=T0))
        backend.run(backend.backend.acquire_all([Charge(key, sliding, 1)], now=T0))
        assert backend.acquire(key, bucket, cost=1, now=T0).remaining == 9

    def test_uses_its_own_clock_when_now_is_none(self, backend: BackendDriver) -> None:
        """Without now, the backend's clock drives the bucket: a drained bucket waits about fill_time."""
        key = backend.fresh_key()
        slow = Policy(capacity=1, refill_rate=0.001, name="slow")
        assert backend.acquire(key, slow).allowed
        denial = backend.acquire(key, slow)
        assert not denial.allowed
        assert 990 < denial.retry_after <= 1000

    @pytest.mark.parametrize("cost", [0, -1, 5.5, float("nan")])
    def test_rejects_a_cost_outside_zero_to_capacity(self, backend: BackendDriver, cost: float) -> None:
        """cost <= 0 or > capacity raises ValueError, and touches no bucket."""
        with pytest.raises(ValueError, match="cost"):
            backend.acquire(backend.fresh_key(), POLICY, cost=cost, now=T0)

    def test_rejects_a_non_finite_now(self, backend: BackendDriver) -> None:
        """An explicit now must be a finite number of seconds."""
        with pytest.raises(ValueError, match="now"):
            backend.acquire(backend.fresh_key(), POLICY, now=float("inf"))
