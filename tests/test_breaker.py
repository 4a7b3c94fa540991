"""The circuit breaker's rules, step by step and under random sequences of outcomes and clock steps."""

from __future__ import annotations

import random

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tornado_rate_limiter.limiter import BreakerConfig, BreakerState, CircuitBreaker, CircuitOpenError
from tornado_rate_limiter.limiter.breaker import Permit

CONFIG = BreakerConfig(consecutive_failures=3, cooldown=2.0, max_cooldown=8.0, jitter=0.0, probe_timeout=5.0)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(config, clock=clock, rng=random.Random(0)), clock


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_failure(breaker.before_call())


class TestClosed:
    def test_opens_after_a_run_of_consecutive_failures(self) -> None:
        """Three failures in a row open it; before that, calls go through."""
        breaker, _ = make()
        fail(breaker, 2)
        assert breaker.state is BreakerState.CLOSED
        fail(breaker)
        assert breaker.state is BreakerState.OPEN

    def test_a_success_resets_the_run(self) -> None:
        """Failure, failure, success, failure, failure: never three in a row, stays closed."""
        breaker, _ = make()
        fail(breaker, 2)
        breaker.on_success(breaker.before_call())
        fail(breaker, 2)
        assert breaker.state is BreakerState.CLOSED

    def test_opens_on_a_high_failure_rate_in_the_window(self) -> None:
        """Alternating failures never make a run, but half of 20 calls failing opens it."""
        config = BreakerConfig(consecutive_failures=100, failure_rate=0.5, min_calls_in_window=20)
        breaker, clock = make(config)
        for _ in range(10):
            breaker.on_success(breaker.before_call())
            clock.now += 0.1
            assert breaker.state is BreakerState.CLOSED
            fail(breaker)
        assert breaker.state is BreakerState.OPEN

    def test_old_calls_leave_the_window(self) -> None:
        """Failures older than the window do not count towards the rate."""
        config = BreakerConfig(consecutive_failures=100, failure_rate=0.5, window_seconds=10, min_calls_in_window=4)
        breaker, clock = make(config)
        fail(breaker)
        breaker.on_success(breaker.before_call())
        clock.now += 11
        for _ in range(3):
            breaker.on_success(breaker.before_call())
        fail(breaker)
        assert breaker.state is BreakerState.CLOSED  # 1 of 4 in the window, not 2 of 6


class TestOpen:
    def test_refuses_calls_with_the_remaining_cooldown(self) -> None:
        """While open, before_call raises CircuitOpenError saying how long to wait."""
        breaker, clock = make()
        fail(breaker, 3)
        clock.now += 0.5
        with pytest.raises(CircuitOpenError) as refused:
            breaker.before_call()
        assert refused.value.retry_after == pytest.approx(1.5)
        assert breaker.remaining_cooldown() == pytest.approx(1.5)

    def test_becomes_half_open_after_the_cooldown(self) -> None:
        """Once the cool-down has passed, one probe is let through."""
        breaker, clock = make()
        fail(breaker, 3)
        clock.now += 2.0
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.before_call().probe

    def test_reading_the_state_changes_nothing(self) -> None:
        """The scrape reads the state: past the cool-down it reads HALF_OPEN as often as it is read, with no
        transition announced, until a call makes it so (and that call is the probe)."""
        changes: list[tuple[BreakerState, BreakerState]] = []
        clock = FakeClock()
        breaker = CircuitBreaker(CONFIG, clock=clock, rng=random.Random(0), on_change=lambda *c: changes.append(c))
        fail(breaker, 3)
        clock.now += 2.0
        assert [breaker.state for _ in range(3)] == [BreakerState.HALF_OPEN] * 3
        assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]
        assert breaker.before_call().probe
        assert changes[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)

    def test_cooldown_doubles_with_each_failed_probe_up_to_the_cap(self) -> None:
        """Failed probes give cool-downs of 2, 4, 8, 8 s (the cap)."""
        breaker, clock = make()
        fail(breaker, 3)
        seen = []
        for _ in range(4):
            seen.append(breaker.remaining_cooldown())
            clock.now += seen[-1]
            breaker.on_failure(breaker.before_call())
        assert seen == [2.0, 4.0, 8.0, 8.0]

    def test_cooldown_is_jittered(self) -> None:
        """With 20% jitter the cool-down varies within 1.6-2.4 s, so a fleet does not probe in step."""
        cooldowns = set()
        for seed in range(20):
            clock = FakeClock()
            breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1), clock=clock, rng=random.Random(seed))
            fail(breaker)
            cooldowns.add(round(breaker.remaining_cooldown(), 6))
        assert len(cooldowns) > 10
        assert all(1.6 <= cooldown <= 2.4 for cooldown in cooldowns)


class TestHalfOpen:
    def half_open(self) -> tuple[CircuitBreaker, FakeClock]:
        breaker, clock = make()
        fail(breaker, 3)
        clock.now += 2.0
        return breaker, clock

    def test_lets_one_probe_at_a_time(self) -> None:
        """A second caller is refused while the probe is out."""
        breaker, _ = self.half_open()
        breaker.before_call()
        with pytest.raises(CircuitOpenError):
            breaker.before_call()

    def test_a_successful_probe_closes(self) -> None:
        """Probe success: closed, and the next cool-down starts again from the base."""
        breaker, _ = self.half_open()
        breaker.on_success(breaker.before_call())
        assert breaker.state is BreakerState.CLOSED
        fail(breaker, 3)
        assert breaker.remaining_cooldown() == 2.0

    def test_a_failed_probe_reopens(self) -> None:
        """Probe failure: open again, for longer."""
        breaker, _ = self.half_open()
        breaker.on_failure(breaker.before_call())
        assert breaker.state is BreakerState.OPEN
        assert breaker.remaining_cooldown() == 4.0

    def test_a_cancelled_probe_lets_the_next_caller_probe(self) -> None:
        """A probe abandoned without an outcome does not leave the breaker stuck half-open."""
        breaker, _ = self.half_open()
        breaker.on_cancel(breaker.before_call())
        assert breaker.before_call().probe

    def test_a_probe_that_never_answers_expires(self) -> None:
        """After probe_timeout with no outcome, another caller may probe."""
        breaker, clock = self.half_open()
        breaker.before_call()
        clock.now += 5.0
        assert breaker.before_call().probe

    def test_late_outcomes_of_older_calls_change_nothing(self) -> None:
        """A call that started before the breaker opened cannot close or reopen it when it ends."""
        breaker, clock = make()
        stale = breaker.before_call()
        fail(breaker, 3)
        clock.now += 2.0
        breaker.on_success(stale)
        assert breaker.state is BreakerState.HALF_OPEN
        probe = breaker.before_call()
        breaker.on_failure(stale)
        breaker.on_success(probe)
        assert breaker.state is BreakerState.CLOSED


# The run-of-failures rule alone (the rate rule has its own tests above), with jitter on.
MACHINE_CONFIG = BreakerConfig(
    consecutive_failures=3, min_calls_in_window=10**6, cooldown=2.0, max_cooldown=8.0, jitter=0.2, probe_timeout=5.0
)


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes and clock steps against a model of the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(MACHINE_CONFIG, clock=self.clock, rng=random.Random(0))
        self.out: list[tuple[Permit, float]] = []  # calls granted and not yet answered, with when
        self.run = 0  # consecutive failures of current calls while closed

    @initialize()
    def start(self) -> None:
        assert self.breaker.state is BreakerState.CLOSED

    @rule()
    def call(self) -> None:
        state = self.breaker.state
        timeout = MACHINE_CONFIG.probe_timeout
        newest = max((p.probe_number for p, _ in self.out), default=0)
        probe_out = any(
            p.probe and p.probe_number == newest and self._current(p) and self.clock.now < t + timeout
            for p, t in self.out
        )
        try:
            permit = self.breaker.before_call()
        except CircuitOpenError as refused:
            assert state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and probe_out)
            assert refused.retry_after >= 0
            return
        assert state is not BreakerState.OPEN  # an open breaker never lets a call through
        assert permit.probe == (state is BreakerState.HALF_OPEN)
        if state is BreakerState.HALF_OPEN:
            assert not probe_out  # never two probes at once (but one gone silent expires)
        self.out.append((permit, self.clock.now))

    @precondition(lambda self: self.out)
    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "cancel"]))
    def answer(self, data: st.DataObject, outcome: str) -> None:
        permit, _ = self.out.pop(data.draw(st.integers(0, len(self.out) - 1)))
        before = self.breaker.state
        current = self._current(permit)
        getattr(self.breaker, f"on_{outcome}")(permit)
        after = self.breaker.state
        if not current:
            assert after is before  # stale outcomes change nothing
        elif permit.probe and outcome == "success":
            assert after is BreakerState.CLOSED
            self.run = 0
        elif permit.probe and outcome == "failure":
            assert after is BreakerState.OPEN
        elif before is BreakerState.CLOSED and outcome != "cancel":
            self.run = self.run + 1 if outcome == "failure" else 0
            assert (after is BreakerState.OPEN) == (self.run >= MACHINE_CONFIG.consecutive_failures)
            if after is BreakerState.OPEN:
                self.run = 0

    @rule(seconds=st.floats(0, 10))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    def _current(self, permit: Permit) -> bool:
        return permit.generation == self.breaker._generation

    @invariant()
    def open_means_a_cooldown_within_bounds(self) -> None:
        if self.breaker.state is BreakerState.OPEN:
            assert 0 < self.breaker.remaining_cooldown() <= MACHINE_CONFIG.max_cooldown * 1.2


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.__doc__ = """The breaker never lets a call through while open, never has two probes out, closes only
on a probe's success, reopens on a probe's failure, opens after the configured run of failures, ignores
outcomes of calls from before its last state change, and keeps cool-downs within (0, max_cooldown]."""


def test_a_state_is_its_own_name() -> None:
    """BreakerState is a StrEnum: a state formats as the word /health, the logs and the metrics use."""
    assert [f"{state}" for state in BreakerState] == ["closed", "open", "half_open"]
    assert BreakerState("half_open") is BreakerState.HALF_OPEN
