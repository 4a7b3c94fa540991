"""The reference model: Policy validation and the pure token-bucket maths."""

from __future__ import annotations

import math

import pytest

from tornado_rate_limiter.limiter import Policy
from tornado_rate_limiter.limiter.bucket import BucketState, decide, refill, take, validate_cost, validate_now


class TestPolicy:
    @pytest.mark.parametrize("field", ["capacity", "refill_rate"])
    @pytest.mark.parametrize("bad", [0, -1, math.inf, -math.inf, math.nan, "10", None, True])
    def test_rejects_non_positive_or_non_finite_values_naming_the_field(self, field: str, bad: object) -> None:
        """A value that is not a finite positive number raises ValueError naming the field."""
        arguments: dict[str, object] = {"capacity": 10, "refill_rate": 1.0, field: bad}
        with pytest.raises(ValueError, match=field):
            Policy(**arguments)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", ["", "has space", 'quo"te', "x" * 65, None])
    def test_rejects_names_unfit_for_headers_and_keys(self, bad: object) -> None:
        """A policy name must be 1-64 characters that are safe in a header and a Redis key."""
        with pytest.raises(ValueError, match="name"):
            Policy(10, 1.0, name=bad)  # type: ignore[arg-type]

    def test_is_immutable(self) -> None:
        """A Policy cannot be changed after it is made."""
        policy = Policy(10, 1.0)
        with pytest.raises(AttributeError):
            policy.capacity = 5  # type: ignore[misc]

    def test_stores_floats_and_defaults_its_name(self) -> None:
        """Integers are accepted and kept as floats; the default name is "default"."""
        policy = Policy(capacity=100, refill_rate=10)
        assert (policy.capacity, policy.refill_rate, policy.name) == (100.0, 10.0, "default")
        assert isinstance(policy.capacity, float)


class TestValidation:
    @pytest.mark.parametrize("bad", [0, -1, 10.5, math.nan, math.inf, "1"])
    def test_cost_must_be_positive_and_at_most_capacity(self, bad: object) -> None:
        """cost <= 0, above capacity or not a number raises ValueError naming cost."""
        with pytest.raises(ValueError, match="cost"):
            validate_cost(bad, Policy(10, 1.0))

    def test_cost_equal_to_capacity_is_valid(self) -> None:
        """A request may take the whole bucket."""
        assert validate_cost(10, Policy(10, 1.0)) == 10.0

    @pytest.mark.parametrize("bad", [math.nan, math.inf, "now", None])
    def test_now_must_be_a_finite_number(self, bad: object) -> None:
        """An explicit now that is not a finite number raises ValueError naming now."""
        with pytest.raises(ValueError, match="now"):
            validate_now(bad)


class TestTake:
    policy = Policy(capacity=10, refill_rate=2.0)

    def test_new_bucket_starts_full(self) -> None:
        """A key never seen is a full bucket."""
        allowed, state = take(None, 100.0, self.policy, 3)
        assert allowed and state == BucketState(7.0, 100.0)

    def test_refills_continuously_up_to_capacity(self) -> None:
        """Tokens grow at refill_rate per second and stop at capacity."""
        assert refill(BucketState(0.0, 100.0), 101.5, self.policy) == BucketState(3.0, 101.5)
        assert refill(BucketState(9.0, 100.0), 200.0, self.policy) == BucketState(10.0, 200.0)

    def test_time_going_backwards_adds_nothing_and_keeps_the_stamp(self) -> None:
        """A now before the stamp adds no tokens and never moves the stamp back."""
        assert refill(BucketState(4.0, 100.0), 90.0, self.policy) == BucketState(4.0, 100.0)

    def test_denial_consumes_nothing(self) -> None:
        """A request for more than the bucket holds is denied and takes nothing."""
        allowed, state = take(BucketState(2.0, 100.0), 100.0, self.policy, 3)
        assert not allowed and state == BucketState(2.0, 100.0)


class TestDecide:
    policy = Policy(capacity=10, refill_rate=2.0)

    def test_allowed_decision(self) -> None:
        """Allowed: retry_after is 0, remaining is what is left, reset_after is the time to refill it."""
        decision = decide(True, BucketState(7.0, 100.0), 100.0, self.policy, 3)
        assert decision == (True, 7.0, 0.0, 1.5, 10.0, False)

    def test_denied_decision_says_when_to_retry(self) -> None:
        """Denied: retry_after is the time until cost tokens are there."""
        decision = decide(False, BucketState(1.0, 100.0), 100.0, self.policy, 3)
        assert decision.retry_after == pytest.approx(1.0)
        assert decision.reset_after == pytest.approx(4.5)

    def test_retry_after_is_exact_at_epoch_timestamps(self) -> None:
        """A request made exactly retry_after later passes, even where the closed form rounds short."""
        policy = Policy(capacity=3, refill_rate=0.1)
        now = 1_764_000_000.123
        state = BucketState(0.7, now)
        decision = decide(False, state, now, policy, 1)
        assert take(state, now + decision.retry_after, policy, 1)[0]
        assert not take(state, now + decision.retry_after * 0.99, policy, 1)[0]
