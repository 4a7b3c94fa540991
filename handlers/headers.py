"""The rate-limit response headers and the 429 body, as pure functions of a policy and a decision.

Draft IETF fields (``RateLimit-Policy``, ``RateLimit``) and the common ``X-RateLimit-*`` ones, for any
algorithm: the quota (``q``), the seconds it is counted over (``w``) and the time until quota comes back
(``t``) are the algorithm's to say (``Algorithm.quota``, ``.period``, ``.next_reset``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from tornado_rate_limiter.limiter import Decision
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def whole_seconds(seconds: float) -> int:
    """Seconds rounded up, so a client that waits that long is never early."""
    return max(0, math.ceil(seconds))


def next_token_after(policy: AnyPolicy, decision: Decision) -> int:
    """The ``t`` of ``RateLimit`` in whole seconds: for a token bucket the time until the next whole
    token (0 when full), for a window the time until its quota is whole again."""
    return whole_seconds(algorithm_for(policy).next_reset(policy, decision))


@lru_cache(maxsize=256)
def _policy_fields(policy: AnyPolicy) -> tuple[str, str]:
    """What the headers say of the policy alone: the ``RateLimit-Policy`` and ``X-RateLimit-Limit`` values."""
    algorithm = algorithm_for(policy)
    quota = math.floor(algorithm.quota(policy))
    return f'"{policy.name}";q={quota};w={whole_seconds(algorithm.period(policy))}', str(quota)


def rate_limit_headers(policy: AnyPolicy, decision: Decision) -> dict[str, str]:
    """Headers for every limited response, allowed or denied."""
    return dict(rate_limit_header_items(policy, decision))


def rate_limit_header_items(policy: AnyPolicy, decision: Decision) -> tuple[tuple[str, str], ...]:
    """``rate_limit_headers`` as (name, value) pairs, in order: what a handler sets on every request."""
    policy_field, limit = _policy_fields(policy)
    remaining = math.floor(decision.remaining)
    reset_after = decision.reset_after
    items = (
        ("RateLimit-Policy", policy_field),
        ("RateLimit", f'"{policy.name}";r={remaining};t={next_token_after(policy, decision)}'),
        ("X-RateLimit-Limit", limit),
        ("X-RateLimit-Remaining", str(remaining)),
        ("X-RateLimit-Reset", str(math.ceil(reset_after) if reset_after > 0 else 0)),  # whole_seconds, inline
    )
    if decision.degraded:
        return (*items, ("X-RateLimit-Degraded", "true"))
    return items


def most_restrictive(decisions: Sequence[Decision]) -> int:
    """The index of the decision the ``X-RateLimit-*`` fields describe: of those that deny, the one with
    the longest wait (the request is allowed again only once every limit allows it), else the one with
    the fewest units remaining; the first on a tie."""
    denials = [number for number, decision in enumerate(decisions) if not decision.allowed]
    if denials:
        return max(denials, key=lambda number: decisions[number].retry_after)
    return min(range(len(decisions)), key=lambda number: decisions[number].remaining)


def several_limits_headers(policies: Sequence[AnyPolicy], decisions: Sequence[Decision]) -> dict[str, str]:
    """Headers of a request checked against several enforced policies: each one in ``RateLimit-Policy``
    and ``RateLimit`` (lists, in the policies' order), the most restrictive in ``X-RateLimit-*``."""
    if len(policies) == 1:
        return rate_limit_headers(policies[0], decisions[0])
    strictest = most_restrictive(decisions)
    headers = rate_limit_headers(policies[strictest], decisions[strictest])
    headers["RateLimit-Policy"] = ", ".join(_policy_fields(policy)[0] for policy in policies)
    headers["RateLimit"] = ", ".join(
        f'"{policy.name}";r={math.floor(decision.remaining)};t={next_token_after(policy, decision)}'
        for policy, decision in zip(policies, decisions, strict=True)
    )
    return headers


def retry_after_seconds(decision: Decision) -> int:
    """The ``Retry-After`` of a denial: whole seconds, rounded up, at least 1."""
    return max(1, whole_seconds(decision.retry_after))


def several_exceeded_problem(policies: Sequence[AnyPolicy], decisions: Sequence[Decision]) -> dict[str, Any]:
    """The 429 body of a request denied by one or more of ``policies``: ``violated-policies`` names every
    one that denied; ``retry_after`` is the longest of their waits."""
    violated = [policy.name for policy, decision in zip(policies, decisions, strict=True) if not decision.allowed]
    retry_after = retry_after_seconds(decisions[most_restrictive(decisions)])
    names = ", ".join(repr(name) for name in violated)
    return {
        "type": QUOTA_EXCEEDED,
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit{'s' if len(violated) > 1 else ''} {names} exceeded: retry in {retry_after} s.",
        "retry_after": retry_after,
        "violated-policies": violated,
    }
