"""The rate-limiting algorithms, each behind the one Algorithm interface (``base.py``).

``token_bucket`` (burst and steady rate; its model is ``limiter/bucket.py``), ``fixed_window`` (``limit``
per window aligned to the Unix epoch) and ``sliding_window`` (the sliding-window counter). A policy's class
says which algorithm decides for it; adding an algorithm means a module here, its Lua in ``lua/`` and one
entry in ALGORITHMS.
"""

from __future__ import annotations

from typing import Any

from tornado_rate_limiter.limiter.algorithms.base import Algorithm, Script
from tornado_rate_limiter.limiter.algorithms.fixed_window import FIXED_WINDOW, FixedWindow
from tornado_rate_limiter.limiter.algorithms.sliding_window import SLIDING_WINDOW, SlidingWindow
from tornado_rate_limiter.limiter.algorithms.token_bucket import TOKEN_BUCKET, TokenBucket

AnyPolicy = TokenBucket | FixedWindow | SlidingWindow
ALGORITHMS: tuple[Algorithm[Any, Any], ...] = (TOKEN_BUCKET, FIXED_WINDOW, SLIDING_WINDOW)
BY_NAME: dict[str, Algorithm[Any, Any]] = {algorithm.name: algorithm for algorithm in ALGORITHMS}
POLICY_TYPES: tuple[type, ...] = tuple(algorithm.policy_type for algorithm in ALGORITHMS)
# Several limits of one request in one call: every algorithm's function, numbered from 1 in this order.
SEVERAL_SCRIPT = Script.several({algorithm.name: algorithm.fragment for algorithm in ALGORITHMS})
LUA_NUMBER: dict[str, str] = {algorithm.name: str(number) for number, algorithm in enumerate(ALGORITHMS, 1)}
SCRIPTS: tuple[Script, ...] = (*(algorithm.script for algorithm in ALGORITHMS), SEVERAL_SCRIPT)
_BY_POLICY_TYPE: dict[type, Algorithm[Any, Any]] = {algorithm.policy_type: algorithm for algorithm in ALGORITHMS}


def algorithm_for(policy: object) -> Algorithm[Any, Any]:
    """The algorithm that decides for ``policy`` (TypeError for an object that is no policy)."""
    try:
        return _BY_POLICY_TYPE[policy.__class__]
    except KeyError:
        for kind in type(policy).__mro__:  # a subclass of a policy class
            if kind in _BY_POLICY_TYPE:
                _BY_POLICY_TYPE[policy.__class__] = _BY_POLICY_TYPE[kind]
                return _BY_POLICY_TYPE[kind]
    names = ", ".join(kind.__name__ for kind in POLICY_TYPES)
    message = f"policy must be a {names}; got {policy!r}"
    raise TypeError(message)


__all__ = [
    "ALGORITHMS",
    "BY_NAME",
    "LUA_NUMBER",
    "POLICY_TYPES",
    "SCRIPTS",
    "SEVERAL_SCRIPT",
    "Algorithm",
    "AnyPolicy",
    "FixedWindow",
    "Script",
    "SlidingWindow",
    "TokenBucket",
    "algorithm_for",
]
