"""Hypothesis strategies for token-bucket scenarios: policies, costs and clocks that stress the maths."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tornado_rate_limiter.limiter import Policy
from tornado_rate_limiter.limiter.bucket import MAX_REFILL_SECONDS

# Tiny, ordinary and huge magnitudes, so rounding shows up wherever it can.
magnitudes = st.one_of(
    st.floats(1e-6, 1e-2),
    st.integers(1, 1000).map(float),
    st.floats(0.01, 1000.0),
    st.floats(1e6, 1e12),
)
# A Policy refills in at most MAX_REFILL_SECONDS (the whole bucket, and one token).
policies = (
    st.tuples(magnitudes, magnitudes)
    .filter(lambda shape: max(shape[0], 1.0) / shape[1] <= MAX_REFILL_SECONDS)
    .map(lambda shape: Policy(capacity=shape[0], refill_rate=shape[1], name="prop"))
)
# The start of a scenario: zero, ordinary numbers, and epoch-sized timestamps (2020 to 2096).
start_times = st.one_of(st.just(0.0), st.floats(0.0, 1e6), st.floats(1.6e9, 4e9))
# A clock step backwards goes at most this far below the latest time seen: less than the backends'
# expiry slack (1 s), the window in which a bucket's state is kept through a clock that goes back.
MAX_CLOCK_SETBACK = 0.9


@st.composite
def costs(draw: st.DrawFn, policy: Policy) -> float:
    """A valid cost for ``policy``: a fraction of capacity, or 1 where 1 fits."""
    if policy.capacity >= 1 and draw(st.booleans()):
        return 1.0
    fraction = draw(st.floats(0.01, 1.0))
    return min(policy.capacity, max(fraction * policy.capacity, policy.capacity * 0.01))


@st.composite
def next_times(draw: st.DrawFn, policy: Policy, now: float, latest: float) -> float:
    """The clock after ``now``: a small or large step forward, none, or a setback below ``latest``."""
    kind = draw(st.sampled_from(["same", "tiny", "cost", "fill", "huge", "back"]))
    if kind == "same":
        return now
    if kind == "tiny":
        return now + draw(st.floats(0.0, 1e-3))
    if kind == "cost":
        return now + draw(st.floats(0.0, 3.0)) / policy.refill_rate
    if kind == "fill":
        return now + draw(st.floats(0.0, 2.0)) * policy.fill_time
    if kind == "huge":
        return now + draw(st.floats(0.0, 1e6))
    return latest - draw(st.floats(0.0, MAX_CLOCK_SETBACK))


@dataclass
class Request:
    key: int  # which of a few keys
    cost: float
    now: float


@st.composite
def scenarios(draw: st.DrawFn, keys: int = 3, max_requests: int = 40) -> tuple[Policy, list[Request]]:
    """A policy and a sequence of requests over ``keys`` keys with a wandering clock."""
    policy = draw(policies)
    now = latest = draw(start_times)
    requests = []
    for _ in range(draw(st.integers(1, max_requests))):
        now = draw(next_times(policy, now, latest))
        latest = max(latest, now)
        requests.append(Request(draw(st.integers(0, keys - 1)), draw(costs(policy)), now))
    return policy, requests
