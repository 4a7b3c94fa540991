"""The rate-limit response headers and the 429 body, as pure functions of a policy and a decision.

Draft IETF fields (``RateLimit-Policy``, ``RateLimit``) and the common ``X-RateLimit-*`` ones, for any
algorithm: the quota (``q``), the seconds it is counted over (``w``) and the time until quota comes back
(``t``) are the algorithm's to say (``Algorithm.quota``, ``.period``, ``.next_reset``).
"""

from __future__ import annotations

import math
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
    policy_field, limit = _policy_fields(policy)
    remaining = math.floor(decision.remaining)
    headers = {
        "RateLimit-Policy": policy_field,
        "RateLimit": f'"{policy.name}";r={remaining};t={next_token_after(policy, decision)}',
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(whole_seconds(decision.reset_after)),
    }
    if decision.degraded:
        headers["X-RateLimit-Degraded"] = "true"
    return headers


def retry_after_seconds(decision: Decision) -> int:
    """The ``Retry-After`` of a denial: whole seconds, rounded up, at least 1."""
    return max(1, whole_seconds(decision.retry_after))


def quota_exceeded_problem(policy: AnyPolicy, decision: Decision) -> dict[str, Any]:
    """The RFC 9457 problem details body of a 429."""
    retry_after = retry_after_seconds(decision)
    return {
        "type": QUOTA_EXCEEDED,
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit {policy.name!r} exceeded: retry in {retry_after} s.",
        "retry_after": retry_after,
        "violated-policies": [policy.name],
    }
