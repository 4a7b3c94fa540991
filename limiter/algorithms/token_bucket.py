"""TokenBucket: ``capacity`` units of burst, refilled at ``refill_rate`` per second.

The reference model is ``limiter/bucket.py`` (``TokenBucket`` is its ``Policy``, under the name it has
always had too); ``lua/token_bucket.lua`` mirrors it. The local step is the model inlined on plain floats:
it is the hot path of every request on the local backend.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from tornado_rate_limiter.limiter import bucket
from tornado_rate_limiter.limiter.algorithms.base import Algorithm, Script
from tornado_rate_limiter.limiter.bucket import BucketState, Decision, Policy

TokenBucket = Policy

# Decision(...) runs NamedTuple's Python-level __new__; tuple.__new__(Decision, fields) costs half.
_new_tuple = tuple.__new__


@lru_cache(maxsize=1024)
def _script_args(policy: Policy, cost: float) -> tuple[str, str, str]:
    """Made once per policy and cost: repr keeps every bit."""
    return repr(policy.capacity), repr(policy.refill_rate), repr(cost)


class TokenBucketAlgorithm(Algorithm[Policy, BucketState]):
    name = "token_bucket"
    policy_type = Policy
    fields = ("capacity", "refill_rate")
    script = Script.single("token_bucket.lua", "token_bucket")
    fragment = "token_bucket.lua"
    state_fields = 2

    def validate_cost(self, cost: object, policy: Policy) -> float:
        return bucket.validate_cost(cost, policy)

    def take(self, state: BucketState | None, now: float, policy: Policy, cost: float) -> tuple[bool, BucketState]:
        return bucket.take(state, now, policy, cost)

    def decide(self, allowed: bool, kept: BucketState | None, now: float, policy: Policy, cost: float) -> Decision:
        assert kept is not None  # take always keeps a state: a fresh key's is a full bucket
        return bucket.decide(allowed, kept, now, policy, cost)

    def script_args(self, policy: Policy, cost: float) -> tuple[str, ...]:
        return _script_args(policy, cost)

    def parse_reply(self, reply: Any) -> tuple[bool, BucketState, float]:
        allowed, tokens, stamp, now = reply
        return allowed == 1, BucketState(float(tokens), float(stamp)), float(now)

    # A bucket is kept in memory as complex(tokens, stamp): the smallest Python object holding two floats
    # (32 bytes, against 104 for a tuple of two), which keeps a key near 175 bytes (docs/BENCHMARKS.md).
    def local_step(self, stored: complex | None, now: float, policy: Policy, cost: float) -> tuple[Decision, Any]:
        capacity, rate = policy.capacity, policy.refill_rate
        if stored is None:
            tokens, stamp = capacity, now
        else:
            tokens, stamp = stored.real, stored.imag
        # bucket.refill, then bucket.take
        available = tokens + (now - stamp) * rate if now > stamp else tokens + 0.0
        if available > capacity:
            available = capacity
        if available < cost:  # denials are the rarer answer: the model's code, with its exact retry_after
            return bucket.decide(False, BucketState(tokens, stamp), now, policy, cost), None
        remaining = available - cost
        if now > stamp:
            stamp = now
        reset_after = (stamp - now if stamp > now else 0.0) + (capacity - remaining) / rate  # bucket.full_after
        return _new_tuple(Decision, (True, remaining, 0.0, reset_after, capacity, False)), complex(remaining, stamp)

    def state_of(self, stored: complex | None) -> BucketState | None:
        return None if stored is None else BucketState(stored.real, stored.imag)

    def stored_form(self, state: BucketState | None) -> complex | None:
        return None if state is None else complex(state.tokens, state.stamp)

    def fresh(self, now: float, policy: Policy) -> BucketState:
        return BucketState(policy.capacity, now)

    def fresh_at(self, stored: complex, policy: Policy) -> float:
        return stored.imag + (policy.capacity - stored.real) / policy.refill_rate

    def cached_denial(self, state: BucketState, now: float, policy: Policy, cost: float) -> Decision | None:
        if bucket.refill(state, now, policy).tokens >= cost:
            return None
        return bucket.decide(False, state, now, policy, cost)

    def scaled(self, policy: Policy, share: float) -> Policy:
        return Policy(policy.capacity * share, policy.refill_rate * share, name=policy.name)

    def admitting(self, policy: Policy, cost: float) -> Policy:
        return policy if policy.capacity >= cost else Policy(cost, policy.refill_rate, name=policy.name)

    def quota(self, policy: Policy) -> float:
        return policy.capacity

    def period(self, policy: Policy) -> float:
        """The time an empty bucket takes to fill: ``q`` units come back over ``w`` seconds."""
        return policy.fill_time

    def next_reset(self, policy: Policy, decision: Decision) -> float:
        """Seconds until the next whole token (0 when the bucket is full)."""
        if decision.remaining >= policy.capacity:
            return 0.0
        target = min(policy.capacity, math.floor(decision.remaining) + 1)
        return (target - decision.remaining) / policy.refill_rate

    def describe(self, policy: Policy) -> str:
        return f"{policy.name}: token bucket of {policy.capacity:g} tokens, {policy.refill_rate:g} per second"


TOKEN_BUCKET = TokenBucketAlgorithm()
