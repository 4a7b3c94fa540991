"""Rate-limit headers and the 429 body, from a policy and a decision."""

from __future__ import annotations

import pytest

from tornado_rate_limiter.handlers.headers import (
    next_token_after,
    rate_limit_headers,
    retry_after_seconds,
    several_exceeded_problem,
)
from tornado_rate_limiter.limiter import Decision, FixedWindow, Policy, SlidingWindow
from tornado_rate_limiter.limiter.bucket import MAX_REFILL_SECONDS

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

    @pytest.mark.parametrize("kind", [FixedWindow, SlidingWindow])
    def test_a_window_shows_its_limit_and_length(self, kind: type[FixedWindow] | type[SlidingWindow]) -> None:
        """q is the limit and w the window; r the whole units left; t and X-RateLimit-Reset the time until
        the quota is whole again (reset_after), rounded up."""
        window = kind(limit=100, window=3600, name="hourly")
        headers = rate_limit_headers(window, Decision(True, 41.5, 0.0, 1234.2, 100.0))
        assert headers == {
            "RateLimit-Policy": '"hourly";q=100;w=3600',
            "RateLimit": '"hourly";r=41;t=1235',
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "41",
            "X-RateLimit-Reset": "1235",
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
        problem = several_exceeded_problem([POLICY], [decision(False, 0.2, retry_after=1.6)])
        assert problem["retry_after"] == 2 and problem["violated-policies"] == ["api"]
        assert problem["type"].endswith("#quota-exceeded") and problem["status"] == 429

    def test_the_slowest_policy_allowed_gives_headers_of_at_most_ten_digits(self) -> None:
        """The smallest refill rate a Policy takes (60 tokens in 1e9 s) gives header values of at most ten
        digits (1e-306 per second once gave 308-digit ones, and 1e-320 a 500)."""
        slow = Policy(capacity=60, refill_rate=60 / MAX_REFILL_SECONDS, name="slow")
        headers = rate_limit_headers(slow, Decision(True, 0.5, 0.0, slow.fill_time, 60.0))
        assert headers["RateLimit-Policy"] in ('"slow";q=60;w=1000000000', '"slow";q=60;w=1000000001')  # rounded up
        for name in ("X-RateLimit-Reset", "X-RateLimit-Remaining", "X-RateLimit-Limit"):
            assert headers[name].isdigit() and len(headers[name]) <= 10
        problem = several_exceeded_problem([slow], [Decision(False, 0.5, 0.5 / slow.refill_rate, slow.fill_time, 60.0)])
        assert 0 < problem["retry_after"] <= MAX_REFILL_SECONDS


class TestPolicyBounds:
    @pytest.mark.parametrize(("capacity", "refill_rate"), [(60, 1e-320), (60, 1e-306), (60, 5e-8), (1e-3, 1e-10)])
    def test_a_refill_rate_too_small_for_the_capacity_is_refused(self, capacity: float, refill_rate: float) -> None:
        """More than 1e9 s to refill the bucket, or one token: ValueError naming refill_rate and the smallest
        rate, not an OverflowError (or absurd headers) at the first request."""
        with pytest.raises(ValueError, match=r"refill_rate .* the smallest rate is"):
            Policy(capacity=capacity, refill_rate=refill_rate)
