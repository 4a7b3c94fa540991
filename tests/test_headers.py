"""Rate-limit headers and the 429 body, from a policy and a decision."""

from __future__ import annotations

import pytest

from tornado_rate_limiter.handlers.headers import (
    next_token_after,
    quota_exceeded_problem,
    rate_limit_headers,
    retry_after_seconds,
)
from tornado_rate_limiter.limiter import Decision, Policy

POLICY = Policy(capacity=10, refill_rate=0.5, name="api")


def decision(allowed: bool, remaining: float, retry_after: float = 0.0, degraded: bool = False) -> Decision:
    reset_after = (10 - remaining) / 0.5
    return Decision(allowed, remaining, retry_after, reset_after, 10.0, degraded)


class TestHeaders:
    def test_allowed_headers(self) -> None:
        """The draft fields and X-RateLimit-* describe the same bucket."""
        headers = rate_limit_headers(POLICY, decision(True, 6.5))
        assert headers == {
            "RateLimit-Policy": '"api";q=10;w=20',
            "RateLimit": '"api";r=6;t=1',
            "X-RateLimit-Limit": "10",
            "X-RateLimit-Remaining": "6",
            "X-RateLimit-Reset": "7",
        }

    def test_degraded_decisions_are_marked(self) -> None:
        """A decision from the fallback adds X-RateLimit-Degraded: true."""
        assert rate_limit_headers(POLICY, decision(True, 5, degraded=True))["X-RateLimit-Degraded"] == "true"

    def test_next_token_is_zero_when_full_and_rounds_up(self) -> None:
        """t is 0 for a full bucket, else whole seconds until the next whole token."""
        assert next_token_after(POLICY, decision(True, 10)) == 0
        assert next_token_after(POLICY, decision(True, 9)) == 2
        assert next_token_after(POLICY, decision(True, 9.9)) == 1

    def test_retry_after_is_whole_seconds_at_least_one(self) -> None:
        """Retry-After rounds up and is never 0."""
        assert retry_after_seconds(decision(False, 0, retry_after=0.01)) == 1
        assert retry_after_seconds(decision(False, 0, retry_after=2.01)) == 3

    def test_problem_body(self) -> None:
        """The 429 body follows RFC 9457 with the quota-exceeded type."""
        problem = quota_exceeded_problem(POLICY, decision(False, 0.2, retry_after=1.6))
        assert problem["retry_after"] == 2 and problem["violated-policies"] == ["api"]
        assert problem["type"].endswith("#quota-exceeded") and problem["status"] == 429

    def test_the_slowest_policy_allowed_still_gives_whole_numbers(self) -> None:
        """A refill rate near the smallest a Policy accepts gives finite, whole header values: a smaller one
        is refused when the Policy is made (1e-320 per second once answered every request with a 500)."""
        slow = Policy(capacity=60, refill_rate=1e-300, name="slow")
        headers = rate_limit_headers(slow, Decision(True, 59.0, 0.0, 1e300, 60.0))
        assert headers["RateLimit-Policy"].startswith('"slow";q=60;w=6') and headers["X-RateLimit-Reset"].isdigit()
        problem = quota_exceeded_problem(slow, Decision(False, 0.5, 5e299, 6e301, 60.0))
        assert isinstance(problem["retry_after"], int)


class TestPolicyBounds:
    def test_a_refill_rate_too_small_for_the_capacity_is_refused(self) -> None:
        """Policy(60, 1e-320): ValueError naming refill_rate, not an OverflowError at the first request."""
        with pytest.raises(ValueError, match="refill_rate"):
            Policy(capacity=60, refill_rate=1e-320)
        with pytest.raises(ValueError, match="refill_rate"):
            Policy(capacity=1e-3, refill_rate=1e-310)  # the bucket fills, but one token never does
