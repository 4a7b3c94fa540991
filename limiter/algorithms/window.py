"""What the window algorithms share: their policy's shape, their stored state, the search for the least
wait after which a request passes, and the parts of the Algorithm interface that are the same for both."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from tornado_rate_limiter.limiter.algorithms.base import Algorithm
from tornado_rate_limiter.limiter.bucket import MAX_REFILL_SECONDS, Decision, check_policy_name, positive_finite

# The shortest window: its index at today's epoch times stays far below 2**53, where Lua's numbers and
# Python's integers would compare window indexes differently (and 1e-300 s overflowed floor(now / window)).
MIN_WINDOW = 0.001


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """``limit`` units of cost per ``window`` seconds; windows are aligned to the Unix epoch (UTC), so a
    86,400 s window resets at 00:00 UTC. ``name`` as a token bucket's: 1-64 of ``A-Z a-z 0-9 _ . -``."""

    limit: float
    window: float
    name: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit", positive_finite("limit", self.limit))
        object.__setattr__(self, "window", positive_finite("window", self.window))
        if not MIN_WINDOW <= self.window <= MAX_REFILL_SECONDS:
            message = (
                f"window must be from {MIN_WINDOW:g} s to {MAX_REFILL_SECONDS:g} s (31 years), got {self.window!r}"
            )
            raise ValueError(message)
        check_policy_name(self.name)

    def validate_cost(self, cost: object) -> float:
        """``cost`` as a float, or ValueError unless 0 < cost <= limit."""
        number = positive_finite("cost", cost)
        if number > self.limit:
            message = f"cost must be at most the policy's limit {self.limit:g}, got {cost!r}"
            raise ValueError(message)
        return number


class WindowState(NamedTuple):
    """What a backend stores for one key: the window it counts in, and the cost admitted there."""

    window_index: int  # floor(time / window) of the window counted in; never moves back
    current: float  # cost admitted in window ``index``
    previous: float = 0.0  # cost admitted in window ``index - 1`` (the sliding window's only)


def in_window(state: WindowState | None, now: float, window: float) -> tuple[int, float]:
    """The window index at ``now`` and the time to decide at: a ``now`` before the stored window's start
    is taken as that start, so time going back never moves a stored window back."""
    index = math.floor(now / window)
    if state is not None and index < state.window_index:
        return state.window_index, state.window_index * window
    return index, now


def least_wait(passes: Callable[[float], bool], now: float, guess: float) -> float:
    """The least ``wait`` >= 0 with ``passes(now + wait)``, to the representable time, from a closed-form
    ``guess`` that floating point may put a rounding error or a few off, either way."""
    wait = max(0.0, guess)
    if not passes(now + wait):  # short: double the step to overshoot, then bisect back
        short, step = wait, math.ulp(now + wait)
        while not passes(now + wait):
            short, wait, step = wait, wait + step, step * 2
        while (middle := short + (wait - short) / 2) not in (short, wait) and now + middle not in (
            now + short,
            now + wait,
        ):
            if passes(now + middle):
                wait = middle
            else:
                short = middle
    for _ in range(64):  # long by a few representable times: step back while an earlier one passes too
        earlier = math.nextafter(now + wait, -math.inf) - now
        if not 0 <= earlier < wait or not passes(now + earlier):
            break
        wait = earlier
    return wait


W = TypeVar("W", bound=WindowPolicy)


class WindowAlgorithm(Algorithm[W, WindowState]):
    """What the fixed and the sliding window share beyond their models: the quota is ``limit`` per
    ``window`` seconds, and a reply or a stored value holds a WindowState."""

    fields = ("limit", "window")

    def validate_cost(self, cost: object, policy: W) -> float:
        return policy.validate_cost(cost)

    def script_args(self, policy: W, cost: float) -> tuple[str, ...]:
        return _script_args(policy, cost)

    def parse_reply(self, reply: Any) -> tuple[bool, WindowState, float]:
        allowed, *counts, now = reply
        index, current, *previous = (float(number) for number in counts)
        return allowed == 1, WindowState(int(index), current, *previous), float(now)

    def scaled(self, policy: W, share: float) -> W:
        return type(policy)(policy.limit * share, policy.window, name=policy.name)

    def admitting(self, policy: W, cost: float) -> W:
        return policy if policy.limit >= cost else type(policy)(cost, policy.window, name=policy.name)

    def quota(self, policy: W) -> float:
        return policy.limit

    def period(self, policy: W) -> float:
        return policy.window

    def next_reset(self, policy: W, decision: Decision) -> float:
        """The draft's ``t`` for a window: seconds until the quota is whole again (``reset_after``)."""
        return decision.reset_after

    def describe(self, policy: W) -> str:
        return f"{policy.name}: {self.name.replace('_', ' ')} of {policy.limit:g} per {policy.window:g} s"


@lru_cache(maxsize=1024)
def _script_args(policy: WindowPolicy, cost: float) -> tuple[str, str, str]:
    """Made once per policy and cost: repr keeps every bit."""
    return repr(policy.limit), repr(policy.window), repr(cost)
