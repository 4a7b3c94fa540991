"""Hypothesis properties of the token bucket, proven for the local and the Redis backend alike."""

from __future__ import annotations

import math
import uuid

from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tests.conftest import BackendDriver, close_driver, make_driver
from tests.redis_process import RedisProcess
from tests.strategies import MAX_CLOCK_SETBACK, Request, costs, next_times, policies, scenarios, start_times
from tornado_rate_limiter.limiter import Decision, Policy, RedisBackend

# Floating-point slack for sums over many requests: far below one token of any tested policy's scale.
RELATIVE_TOLERANCE = 1e-9


def replay(backend: BackendDriver, policy: Policy, requests: list[Request]) -> tuple[list[str], list[Decision]]:
    """Run ``requests`` on fresh keys; returns the keys used and the decisions."""
    keys = [backend.fresh_key() for _ in range(3)]
    return keys, [backend.acquire(keys[r.key], policy, r.cost, r.now) for r in requests]


class TestBucketProperties:
    @given(scenario=scenarios())
    def test_admitted_cost_never_exceeds_capacity_plus_refill(
        self, backend: BackendDriver, scenario: tuple[Policy, list[Request]]
    ) -> None:
        """For one key, the cost admitted over any interval [t0, t1] is at most
        capacity + refill_rate * (t1 - t0), with time read as the latest clock value seen
        (a request stamped earlier is counted at the bucket's time, which never moves back)."""
        policy, requests = scenario
        _, decisions = replay(backend, policy, requests)
        for key in {r.key for r in requests}:
            admitted: list[tuple[float, float]] = []  # (bucket time, cost) of each allowed request
            latest = -math.inf
            for request, decision in zip(requests, decisions, strict=False):
                if request.key != key:
                    continue
                latest = max(latest, request.now)
                if decision.allowed:
                    admitted.append((latest, request.cost))
            for first in range(len(admitted)):
                total = 0.0
                for last in range(first, len(admitted)):
                    total += admitted[last][1]
                    bound = policy.capacity + policy.refill_rate * (admitted[last][0] - admitted[first][0])
                    assert total <= bound * (1 + RELATIVE_TOLERANCE), (first, last, total, bound)

    @given(scenario=scenarios())
    def test_remaining_retry_after_and_reset_after_are_consistent(
        self, backend: BackendDriver, scenario: tuple[Policy, list[Request]]
    ) -> None:
        """Every decision has 0 <= remaining <= capacity and limit == capacity; allowed means
        retry_after == 0; denied means remaining < cost and 0 < retry_after <= reset_after; reset_after is at
        least the time to refill what is missing, and exactly that when the clock never went back."""
        policy, requests = scenario
        _, decisions = replay(backend, policy, requests)
        latest = -math.inf
        for request, decision in zip(requests, decisions, strict=False):
            clock_went_back = request.now < latest
            latest = max(latest, request.now)
            assert 0 <= decision.remaining <= policy.capacity
            assert decision.limit == policy.capacity
            refill_time = (policy.capacity - decision.remaining) / policy.refill_rate
            assert decision.reset_after >= refill_time * (1 - RELATIVE_TOLERANCE)
            if not clock_went_back:
                assert math.isclose(decision.reset_after, refill_time, rel_tol=RELATIVE_TOLERANCE)
            if decision.allowed:
                assert decision.retry_after == 0
            else:
                assert decision.remaining < request.cost
                rounding = 4 * math.ulp(abs(request.now) + decision.reset_after)
                assert 0 < decision.retry_after <= decision.reset_after + rounding

    @given(scenario=scenarios(keys=1, max_requests=20), final_cost=st.floats(0.05, 1.0))
    @example(  # found in CI: the wait must count from the stored state, not the refilled one
        scenario=(Policy(926.0, 0.009765625, "prop"), [Request(0, 926.0, 0.0), Request(0, 926.0, 102.4)]),
        final_cost=0.75,
    )
    def test_retry_after_is_exactly_when_the_request_would_pass(
        self, backend: BackendDriver, scenario: tuple[Policy, list[Request]], final_cost: float
    ) -> None:
        """A denied request repeated retry_after seconds later (with no other traffic) is allowed, and
        one made clearly earlier (at 90% of the wait, where that is a distinguishable time) is denied."""
        policy, requests = scenario
        cost = final_cost * policy.capacity
        now = requests[-1].now
        keys, _ = replay(backend, policy, requests)
        early_key, on_time_key = keys[0], backend.fresh_key()
        for request in requests:  # the same history on a second key, for the second probe
            backend.acquire(on_time_key, policy, request.cost, request.now)
        decision = backend.acquire(early_key, policy, cost, now)
        while decision.allowed:  # drain until this request is denied; at most 20 rounds
            backend.acquire(on_time_key, policy, cost, now)
            decision = backend.acquire(early_key, policy, cost, now)
        assert backend.acquire(on_time_key, policy, cost, now + decision.retry_after).allowed
        early = now + 0.9 * decision.retry_after
        shortfall = (decision.retry_after - (early - now)) * policy.refill_rate
        if shortfall > 16 * math.ulp(policy.capacity) + 4 * math.ulp(early) * policy.refill_rate:
            assert not backend.acquire(early_key, policy, cost, early).allowed
        note(f"retry_after={decision.retry_after!r} shortfall={shortfall!r}")

    @given(scenario=scenarios())
    def test_every_key_the_redis_backend_wrote_has_a_ttl(
        self, redis_backend: BackendDriver, scenario: tuple[Policy, list[Request]]
    ) -> None:
        """After any sequence of requests, every key the Redis backend wrote carries a TTL."""
        policy, requests = scenario
        keys, decisions = replay(redis_backend, policy, requests)
        backend = redis_backend.backend
        assert isinstance(backend, RedisBackend)
        written = {keys[r.key] for r, d in zip(requests, decisions, strict=False) if d.allowed}
        for key in written:
            ttl = redis_backend.run(backend.client.pttl(backend.redis_key(key, policy)))
            assert ttl > 0, (key, ttl)


def test_redis_and_local_backends_decide_identically(redis_server: RedisProcess) -> None:
    """The Redis backend and the local backend return the same Decision, bit for bit, for the same
    sequence of requests and clock readings; and every key Redis holds for the run has a TTL."""

    local_driver, redis_driver = make_driver("local", redis_server), make_driver("redis", redis_server)

    class Differential(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.local, self.redis = local_driver, redis_driver
            self.run_id = uuid.uuid4().hex
            self.policy = Policy(1, 1)
            self.now = self.latest = 0.0

        @initialize(policy=policies, start=start_times)
        def choose_policy(self, policy: Policy, start: float) -> None:
            self.policy, self.now, self.latest = policy, start, start

        @rule(data=st.data())
        def move_clock(self, data: st.DataObject) -> None:
            self.now = data.draw(next_times(self.policy, self.now, self.latest))
            self.latest = max(self.latest, self.now)

        @rule(key=st.integers(0, 2), data=st.data())
        def acquire(self, key: int, data: st.DataObject) -> None:
            cost = data.draw(costs(self.policy))
            name = f"diff:{self.run_id}:{key}"
            local = self.local.acquire(name, self.policy, cost, self.now)
            remote = self.redis.acquire(name, self.policy, cost, self.now)
            assert remote == local

        @invariant()
        def redis_keys_have_ttls(self) -> None:
            client = self.redis.backend.client  # type: ignore[union-attr]
            for redis_key in self.redis.run(client.keys(f"*diff:{self.run_id}:*")):
                assert self.redis.run(client.pttl(redis_key)) > 0

    assert MAX_CLOCK_SETBACK < 1.0  # both backends keep state 1 s past full: setbacks stay inside
    try:
        # Each example is a run of up to 40 steps: half the profile's examples keep the time in line.
        machine_settings = settings(max_examples=settings.default.max_examples // 2, stateful_step_count=40)
        run_state_machine_as_test(Differential, settings=machine_settings)
    finally:
        close_driver(local_driver)
        close_driver(redis_driver)
