"""SlidingWindow: the sliding-window counter. The reference model (pure functions over the stored state).

Window ``i = floor(now / window)`` starts at ``start = i * window``; ``current`` is the cost admitted in
window ``i`` and ``previous`` in window ``i - 1``. The cost of the last ``window`` seconds is estimated as
``previous * (1 - (now - start) / window) + current``, and a request is allowed when ``estimated + cost
<= limit``, then ``current += cost``; a denial writes nothing. Each aligned window admits at most
``limit``, and any ``window`` seconds at most ``2 * limit``.
"""

from __future__ import annotations

from tornado_rate_limiter.limiter.algorithms.base import Script
from tornado_rate_limiter.limiter.algorithms.window import (
    WindowAlgorithm,
    WindowPolicy,
    WindowState,
    in_window,
    least_wait,
)
from tornado_rate_limiter.limiter.bucket import Decision


class SlidingWindow(WindowPolicy):
    """``limit`` per sliding ``window`` seconds, estimated from this window's count and the last one's."""


def counts(state: WindowState | None, now: float, policy: WindowPolicy) -> tuple[int, float, float, float]:
    """The window at ``now``, the time decided at, and the cost admitted in it and in the one before."""
    index, now = in_window(state, now, policy.window)
    if state is None or index > state.window_index + 1:
        return index, now, 0.0, 0.0
    if index == state.window_index + 1:
        return index, now, 0.0, state.current
    return index, now, state.current, state.previous


def estimate(index: int, now: float, current: float, previous: float, policy: WindowPolicy) -> float:
    """The cost of the last ``window`` seconds: the previous window's weighted by how much of it they cover."""
    start = index * policy.window
    return previous * (1 - (now - start) / policy.window) + current


def take(state: WindowState | None, now: float, policy: WindowPolicy, cost: float) -> tuple[bool, WindowState | None]:
    """Whether ``cost`` fits at ``now``, and the state to keep (the stored one when denied)."""
    index, at, current, previous = counts(state, now, policy)
    if estimate(index, at, current, previous, policy) + cost <= policy.limit:
        return True, WindowState(index, current + cost, previous)
    return False, state


def _reset_after(index: int, now: float, current: float, previous: float, window: float) -> float:
    """Seconds until the estimate is 0 with no traffic: this window's count lasts through the next one."""
    if current > 0:
        return (index + 2) * window - now
    return (index + 1) * window - now if previous > 0 else 0.0


def decide(allowed: bool, kept: WindowState | None, now: float, policy: WindowPolicy, cost: float) -> Decision:
    """The Decision for the outcome of ``take`` at ``now``, from the state it kept.

    ``remaining``: the limit less the estimate (and less this cost when allowed), never below 0;
    ``retry_after``: the least wait after which the same request passes with no other traffic (maybe in
    the next window, where this window's count becomes the previous one); ``reset_after``: the time until
    the estimate is 0 with no traffic."""
    index, at, current, previous = counts(kept, now, policy)
    window = policy.window
    reset_after = _reset_after(index, now, current, previous, window)  # on the caller's clock
    if allowed:  # kept is the state just written: its count includes this cost
        spent = estimate(index, at, current, previous, policy)
        return Decision(True, max(0.0, policy.limit - spent), 0.0, reset_after, policy.limit)
    estimated = estimate(index, at, current, previous, policy)

    def passes(later: float) -> bool:
        return take(kept, later, policy, cost)[0]

    start, end = index * window, (index + 1) * window
    if previous > 0 and current + cost <= policy.limit:  # passes later in this window, as previous decays
        guess = start + (1 - (policy.limit - current - cost) / previous) * window - now
    elif current > 0:  # in the next window, once this window's count has decayed enough
        guess = end + max(0.0, 1 - (policy.limit - cost) / current) * window - now
    else:
        guess = end - now
    retry_after = least_wait(passes, now, guess)
    return Decision(False, max(0.0, policy.limit - estimated), retry_after, reset_after, policy.limit)


class SlidingWindowAlgorithm(WindowAlgorithm[SlidingWindow]):
    name = "sliding_window"
    policy_type = SlidingWindow
    script = Script.single("sliding_window.lua", "sliding_window")
    fragment = "sliding_window.lua"
    state_fields = 3

    def take(
        self, state: WindowState | None, now: float, policy: SlidingWindow, cost: float
    ) -> tuple[bool, WindowState | None]:
        return take(state, now, policy, cost)

    def decide(
        self, allowed: bool, kept: WindowState | None, now: float, policy: SlidingWindow, cost: float
    ) -> Decision:
        return decide(allowed, kept, now, policy, cost)

    def fresh_at(self, stored: WindowState, policy: SlidingWindow) -> float:
        """A stored count stops mattering once the next window ends (its count weighs on that one)."""
        return (stored.window_index + 2) * policy.window


SLIDING_WINDOW = SlidingWindowAlgorithm()
