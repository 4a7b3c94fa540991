"""Token-bucket maths: the reference model every backend follows.

Pure functions over a bucket's state (tokens, stamp); backends only store and load that state, so the
Lua script in ``lua/token_bucket.lua`` mirrors ``take`` operation for operation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

_POLICY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Seconds a backend keeps a bucket after it is full again: the state survives a clock stepping back
# this far, and callers whose clock runs a little ahead of Redis's never see a bucket expire early.
DEFAULT_EXPIRY_SLACK = 1.0
# The longest a bucket, or one token, may take to refill: about 31 years.
MAX_REFILL_SECONDS = 1e9


def positive_finite(field: str, value: object) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        message = f"{field} must be a finite number > 0, got {value!r}"
        raise ValueError(message)
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        message = f"{field} must be a finite number > 0, got {value!r}"
        raise ValueError(message)
    return number


def check_policy_name(name: object) -> None:
    """ValueError unless ``name`` can name a policy in headers, keys and metrics."""
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
        message = f"name must be 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}"
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Policy:
    """A token bucket's shape: ``capacity`` tokens of burst, refilled at ``refill_rate`` per second.

    ``name`` keeps buckets of different policies apart and is shown in the RateLimit headers, so it
    is limited to 1-64 characters of ``A-Z a-z 0-9 _ . -``.
    """

    capacity: float
    refill_rate: float
    name: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "capacity", positive_finite("capacity", self.capacity))
        object.__setattr__(self, "refill_rate", positive_finite("refill_rate", self.refill_rate))
        check_policy_name(self.name)
        # The headers say in seconds how long refilling takes: a rate so small that one token or the whole
        # bucket takes forever (1e-320/s overflowed them; 1e-306/s made 308-digit headers) is no rate limit.
        slowest = max(self.fill_time, 1 / self.refill_rate)
        if not slowest <= MAX_REFILL_SECONDS * (1 + 1e-9):  # the smallest rate named below passes, rounded
            smallest = max(self.capacity, 1.0) / MAX_REFILL_SECONDS
            message = (
                f"refill_rate {self.refill_rate!r} is too small for capacity {self.capacity!r}: refilling would "
                f"take more than {MAX_REFILL_SECONDS:g} s (31 years); the smallest rate is {smallest:.3g}"
            )
            raise ValueError(message)

    @property
    def fill_time(self) -> float:
        """Seconds an empty bucket takes to become full."""
        return self.capacity / self.refill_rate


class Decision(NamedTuple):
    """The answer to one request for tokens."""

    allowed: bool  # whether the request may proceed
    remaining: float  # tokens left in the bucket after this decision
    retry_after: float  # seconds until this same request would be allowed; 0 when allowed
    reset_after: float  # seconds until the bucket is full again
    limit: float  # the policy's capacity
    degraded: bool = False  # True when a fallback, not the primary backend, decided


class BucketState(NamedTuple):
    """What a backend stores for one key."""

    tokens: float  # tokens in the bucket at ``stamp``
    stamp: float  # seconds since the epoch at which ``tokens`` was counted; never moves back


def validate_cost(cost: object, policy: Policy) -> float:
    """Return ``cost`` as a float, or raise ValueError unless 0 < cost <= capacity."""
    number = positive_finite("cost", cost)
    if number > policy.capacity:
        message = f"cost must be at most the policy's capacity {policy.capacity:g}, got {cost!r}"
        raise ValueError(message)
    return number


def validate_now(now: object) -> float:
    """Return an explicit ``now`` as a float, or raise ValueError unless it is a finite number."""
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        message = f"now must be a finite number of seconds since the epoch, got {now!r}"
        raise ValueError(message)
    return float(now)


def refill(state: BucketState, now: float, policy: Policy) -> BucketState:
    """The state at ``now``: tokens added for the time since ``stamp``; time going back adds none."""
    elapsed = max(0.0, now - state.stamp)
    tokens = min(policy.capacity, state.tokens + elapsed * policy.refill_rate)
    return BucketState(tokens, max(state.stamp, now))


def take(state: BucketState | None, now: float, policy: Policy, cost: float) -> tuple[bool, BucketState]:
    """Refill, then take ``cost`` tokens if there are enough.

    Returns whether the request is allowed and the state to keep: the new state when allowed, and the
    stored state untouched when denied (a denial writes nothing). A missing state is a full bucket.
    """
    stored = state if state is not None else BucketState(policy.capacity, now)
    current = refill(stored, now, policy)
    if current.tokens >= cost:
        return True, BucketState(current.tokens - cost, current.stamp)
    return False, stored


def full_after(state: BucketState, now: float, policy: Policy) -> float:
    """Seconds from ``now`` until the bucket in ``state`` (as refilled to ``now``) is full again."""
    return max(0.0, state.stamp - now) + (policy.capacity - state.tokens) / policy.refill_rate


def wait_for(kept: BucketState, now: float, policy: Policy, cost: float) -> float:
    """Seconds from ``now`` until ``cost`` tokens are there: the least wait after which ``take`` passes.

    ``kept`` is the state as stored. The closed form is usually exact, but floating point can put it a
    rounding error short (or, for huge buckets that absorb small refills, further), so it is checked
    against ``refill`` itself and, when short, searched forward: doubling steps to overshoot, then
    bisection back to the least wait.
    """

    def enough(wait: float) -> bool:
        return refill(kept, now + wait, policy).tokens >= cost

    current = refill(kept, now, policy)
    wait = max(0.0, current.stamp - now) + (cost - current.tokens) / policy.refill_rate
    if enough(wait):
        return wait
    short, step = wait, math.ulp(now + wait)
    while not enough(wait):
        short, wait, step = wait, wait + step, step * 2
    while True:  # short fails, wait passes: narrow down to adjacent representable times
        middle = short + (wait - short) / 2
        if middle in (short, wait) or now + middle in (now + short, now + wait):
            return wait
        if enough(middle):
            wait = middle
        else:
            short = middle


def decide(allowed: bool, kept: BucketState, now: float, policy: Policy, cost: float) -> Decision:
    """The Decision for the outcome of ``take`` at ``now``, from the state it kept."""
    if allowed:  # the state just written, stamped max(stamp, now): refill adds nothing (the common case, inline)
        reset_after = max(0.0, kept.stamp - now) + (policy.capacity - kept.tokens) / policy.refill_rate
        return Decision(True, kept.tokens, 0.0, reset_after, policy.capacity)
    current = refill(kept, now, policy)
    return Decision(
        allowed=False,
        remaining=current.tokens,
        retry_after=wait_for(kept, now, policy, cost),
        reset_after=full_after(current, now, policy),
        limit=policy.capacity,
    )
