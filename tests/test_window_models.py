"""The window algorithms' reference models (limiter/algorithms): their invariants, under Hypothesis.

Inputs are dyadic (eighths of a second, limits and costs in quarters), so the arithmetic is exact and a
property that fails is the model's, not rounding's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_rate_limiter.limiter.algorithms import fixed_window, sliding_window
from tornado_rate_limiter.limiter.algorithms.fixed_window import FixedWindow
from tornado_rate_limiter.limiter.algorithms.sliding_window import SlidingWindow
from tornado_rate_limiter.limiter.algorithms.window import WindowPolicy, WindowState, in_window
from tornado_rate_limiter.limiter.bucket import Decision

Take = Callable[[WindowState | None, float, WindowPolicy, float], tuple[bool, WindowState | None]]
Decide = Callable[[bool, WindowState | None, float, WindowPolicy, float], Decision]
MODELS: dict[str, tuple[type[WindowPolicy], Take, Decide]] = {
    "fixed": (FixedWindow, fixed_window.take, fixed_window.decide),
    "sliding": (SlidingWindow, sliding_window.take, sliding_window.decide),
}

limits = st.integers(1, 80).map(lambda quarters: quarters / 4)
windows = st.sampled_from([0.25, 1.0, 2.0, 60.0, 3600.0, 86400.0])
starts = st.one_of(st.just(0.0), st.integers(0, 2**24).map(lambda eighths: 1.6e9 + eighths / 8))
# Mostly forward, sometimes back (a clock stepping back), in eighths of a second.
steps = st.lists(st.tuples(st.integers(-16, 400).map(lambda eighths: eighths / 8), st.integers(1, 12)), max_size=60)


@st.composite
def window_steps(draw: st.DrawFn, window: float) -> list[tuple[float, int]]:
    """Requests as ``steps``, or stepping in eighths of the window (back up to 1.5 windows, forward up to
    2.5), so that the clock going back across window edges, with counts in both windows, comes up."""
    if draw(st.booleans()):
        return draw(steps)
    eighths = st.integers(-12, 20).map(lambda count: count * window / 8)  # exact: every window is dyadic
    return draw(st.lists(st.tuples(eighths, st.integers(1, 12)), max_size=60))


@dataclass
class Step:
    now: float  # the time asked at
    at: float  # the time decided at (a time before the stored window is taken as its start)
    index: int  # the window decided in
    cost: float
    allowed: bool
    before: WindowState | None
    after: WindowState | None
    decision: Decision


def run(name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]) -> list[Step]:
    """Feed the requests to the model, one key, each cost a number of quarters capped at the limit."""
    kind, take, decide = MODELS[name]
    policy = kind(limit, window, name="prop")
    state: WindowState | None = None
    now, trace = start, []
    for delta, quarters in requests:
        now = max(0.0, now + delta)
        cost = min(limit, quarters / 4)
        index, at = in_window(state, now, window)
        allowed, kept = take(state, now, policy, cost)
        trace.append(Step(now, at, index, cost, allowed, state, kept, decide(allowed, kept, now, policy, cost)))
        state = kept
    return trace


@pytest.mark.parametrize("name", MODELS)
class TestInvariants:
    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_a_window_admits_at_most_its_limit(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: the cost admitted in any aligned window is at most ``limit`` (both algorithms)."""
        admitted: dict[int, float] = defaultdict(float)
        for step in run(name, limit, window, start, requests):
            if step.allowed:
                admitted[step.index] += step.cost
        assert all(total <= limit for total in admitted.values())

    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_any_window_long_interval_admits_at_most_twice_the_limit(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: in any interval of ``window`` seconds at most ``2 * limit`` is admitted (the sliding
        window's bound, and the fixed window's over the two aligned windows such an interval touches)."""
        admitted = [(step.at, step.cost) for step in run(name, limit, window, start, requests) if step.allowed]
        for begin, _ in admitted:
            assert sum(cost for at, cost in admitted if begin <= at < begin + window) <= 2 * limit

    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_a_denial_writes_nothing_and_no_window_moves_back(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: a denied request leaves the state as it was; the stored window index never decreases."""
        highest = -math.inf
        for step in run(name, limit, window, start, requests):
            if not step.allowed:
                assert step.after is step.before
            if step.after is not None:
                assert step.after.window_index >= highest
                highest = step.after.window_index

    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_retry_after_is_the_least_wait_that_passes(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: after a denial, the same request made exactly ``retry_after`` later (no other traffic)
        is allowed, and one made a representable instant sooner is not."""
        _, take, _ = MODELS[name]
        policy = MODELS[name][0](limit, window, name="prop")
        for step in run(name, limit, window, start, requests):
            if step.allowed:
                assert step.decision.retry_after == 0
                continue
            wait = step.decision.retry_after
            assert wait > 0 and take(step.after, step.now + wait, policy, step.cost)[0]
            sooner = math.nextafter(step.now + wait, -math.inf)
            assert not take(step.after, sooner, policy, step.cost)[0]

    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_reset_after_is_when_the_key_is_fresh_again(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: ``reset_after`` later, with no traffic, the whole limit fits again; and it is 0 only
        when the whole limit fits now."""
        _, take, _ = MODELS[name]
        policy = MODELS[name][0](limit, window, name="prop")
        for step in run(name, limit, window, start, requests):
            later = step.now + step.decision.reset_after
            assert take(step.after, later, policy, limit)[0]
            if step.decision.reset_after == 0:
                assert take(step.after, step.now, policy, limit)[0]

    @given(limit=limits, window=windows, start=starts, requests=steps)
    def test_remaining_is_what_still_fits_now(
        self, name: str, limit: float, window: float, start: float, requests: list[tuple[float, int]]
    ) -> None:
        """Invariant: a request costing ``remaining`` made at the same moment is allowed (when it is > 0)."""
        _, take, _ = MODELS[name]
        policy = MODELS[name][0](limit, window, name="prop")
        for step in run(name, limit, window, start, requests):
            remaining = step.decision.remaining
            assert 0 <= remaining <= limit
            if remaining > 0:
                assert take(step.after, step.now, policy, remaining)[0]


class TestSemantics:
    def test_a_day_window_resets_at_midnight_utc(self) -> None:
        """A 86,400 s fixed window is the UTC day: spent at 23:59:59, fresh at 00:00:00."""
        policy = FixedWindow(2, 86400, name="daily")
        midnight = 1_767_225_600.0  # 2026-01-01T00:00:00Z
        state: WindowState | None = None
        for _ in range(2):
            allowed, state = fixed_window.take(state, midnight - 1, policy, 1)
            assert allowed
        allowed, kept = fixed_window.take(state, midnight - 1, policy, 1)
        decision = fixed_window.decide(allowed, kept, midnight - 1, policy, 1)
        assert not allowed and decision.retry_after == 1.0 and decision.reset_after == 1.0
        assert fixed_window.take(state, midnight, policy, 1)[0]

    def test_the_sliding_estimate_weighs_the_previous_window(self) -> None:
        """10 per minute, 10 admitted in the last minute's window: a quarter into this one, 7.5 count, so
        2 more fit and a third does not; its retry is when the estimate has room for it."""
        policy = SlidingWindow(10, 60, name="minute")
        state = WindowState(window_index=99, current=10.0)  # the window [5940, 6000)
        allowed, state_after = sliding_window.take(state, 6015.0, policy, 2)
        assert allowed and state_after == WindowState(100, 2.0, 10.0)
        allowed, kept = sliding_window.take(state_after, 6015.0, policy, 1)
        decision = sliding_window.decide(allowed, kept, 6015.0, policy, 1)
        # 10 * (1 - f) + 2 + 1 <= 10  ->  f >= 0.3  ->  at 6018
        assert not allowed and decision.retry_after == 3.0 and decision.remaining == 0.5

    @pytest.mark.parametrize(("kind", "field"), [(FixedWindow, "limit"), (SlidingWindow, "window")])
    def test_bad_values_are_refused_naming_the_field(self, kind: type[WindowPolicy], field: str) -> None:
        """A limit or window that is not a finite number > 0 raises ValueError naming it."""
        values = {"limit": 10.0, "window": 60.0, field: 0.0}
        with pytest.raises(ValueError, match=field):
            kind(values["limit"], values["window"])

    @pytest.mark.parametrize("window", [1e-300, 0.0009, 1.1e9])
    def test_a_window_outside_a_millisecond_to_31_years_is_refused(self, window: float) -> None:
        """Windows from 1 ms to 1e9 s: shorter ones overflow floor(now / window) (1e-300) or put the window
        index past 2**53, where Lua and Python compare indexes differently."""
        with pytest.raises(ValueError, match=r"window must be from 0\.001 s"):
            FixedWindow(1, window)
