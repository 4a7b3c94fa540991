"""FixedWindow: at most ``limit`` units of cost in each window of ``window`` seconds, the windows aligned
to the Unix epoch. The reference model (pure functions over the stored state).

Window ``i = floor(now / window)``; ``current`` is the cost admitted in window ``i``. A request is allowed
when ``current + cost <= limit``, and then ``current += cost``; a denial writes nothing.
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


class FixedWindow(WindowPolicy):
    """``limit`` per window of ``window`` seconds, counted afresh at each window's start."""


def count(state: WindowState | None, now: float, policy: WindowPolicy) -> tuple[int, float, float]:
    """The window at ``now``, the time decided at, and the cost admitted in that window so far."""
    index, now = in_window(state, now, policy.window)
    current = state.current if state is not None and state.window_index == index else 0.0
    return index, now, current


def take(state: WindowState | None, now: float, policy: WindowPolicy, cost: float) -> tuple[bool, WindowState | None]:
    """Whether ``cost`` fits in the window at ``now``, and the state to keep (the stored one when denied)."""
    index, _, current = count(state, now, policy)
    if current + cost <= policy.limit:
        return True, WindowState(index, current + cost)
    return False, state


def decide(allowed: bool, kept: WindowState | None, now: float, policy: WindowPolicy, cost: float) -> Decision:
    """The Decision for the outcome of ``take`` at ``now``, from the state it kept.

    ``remaining`` is what the window has left after the decision; ``retry_after`` (when denied) is the
    least wait until the window ends and the same request passes; ``reset_after`` the time until the
    window ends while it has counted anything, else 0."""
    index, _, current = count(kept, now, policy)
    ends_in = (index + 1) * policy.window - now  # on the caller's clock, even when it went back
    reset_after = ends_in if current > 0 else 0.0
    if allowed:
        return Decision(True, policy.limit - current, 0.0, reset_after, policy.limit)

    def passes(later: float) -> bool:
        return take(kept, later, policy, cost)[0]

    retry_after = least_wait(passes, now, (index + 1) * policy.window - now)
    return Decision(False, policy.limit - current, retry_after, reset_after, policy.limit)


class FixedWindowAlgorithm(WindowAlgorithm[FixedWindow]):
    name = "fixed_window"
    policy_type = FixedWindow
    script = Script.single("fixed_window.lua", "fixed_window")
    fragment = "fixed_window.lua"
    state_fields = 2

    def take(
        self, state: WindowState | None, now: float, policy: FixedWindow, cost: float
    ) -> tuple[bool, WindowState | None]:
        return take(state, now, policy, cost)

    def decide(self, allowed: bool, kept: WindowState | None, now: float, policy: FixedWindow, cost: float) -> Decision:
        return decide(allowed, kept, now, policy, cost)

    def fresh_at(self, stored: WindowState, policy: FixedWindow) -> float:
        """A stored count stops mattering once its window ends."""
        return (stored.window_index + 1) * policy.window


FIXED_WINDOW = FixedWindowAlgorithm()
