"""The Algorithm interface: everything the limiter needs to know about one algorithm, in one place.

Backends, the auto-pipeline, the breaker, the fallback, the cache of denials and the handler's headers
call these methods and never ask which algorithm a policy has. An algorithm is its reference model
(``take`` and ``decide``, pure functions over its stored state) plus what the rest derives from it: the Lua
script that mirrors the model, how a script reply becomes a Decision, the local step, its scaling for the
fallback share, and the numbers its headers show. ``limiter/algorithms/__init__.py`` maps each policy
class to its algorithm.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from tornado_rate_limiter.limiter.bucket import Decision
from tornado_rate_limiter.lua import read_script

P = TypeVar("P")  # the algorithm's policy class
S = TypeVar("S")  # the state it stores per key


class Script:
    """One Lua script: its text and the SHA1 that EVALSHA names it by."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()

    @classmethod
    def several(cls, functions: dict[str, str]) -> Script:
        """The script of several limits at once (``lua/limits.lua``): every algorithm's function (name to
        fragment file), numbered in that order for the driver's ``steps``."""
        parts = [read_script(fragment) for fragment in functions.values()]
        steps = f"local steps = {{ {', '.join(functions)} }}"
        return cls("limits.lua", "\n".join([*parts, steps, "", read_script("limits.lua")]))

    @classmethod
    def single(cls, fragment: str, function: str) -> Script:
        """The one-limit script of an algorithm: its function (``lua/<fragment>``) run by ``lua/single.lua``."""
        text = f"{read_script(fragment)}\nlocal step = {function}\n\n{read_script('single.lua')}"
        return cls(fragment, text)

    def __repr__(self) -> str:
        return f"Script({self.name!r})"


class Algorithm(ABC, Generic[P, S]):
    """One rate-limiting algorithm. Its scripts take ``(*script_args(policy, cost), now, slack_ms)`` with
    one key, ``now`` being "" for Redis's clock, and reply with the state as stored after the decision and
    the time decided at (the caller's ``now`` as given, or Redis's)."""

    name: ClassVar[str]  # as RATE_LIMIT_ALGORITHM and the policy file name it
    policy_type: ClassVar[type]
    fields: ClassVar[tuple[str, str]]  # its policy's numbers, in the order its class takes them
    script: ClassVar[Script]  # its one-limit script
    fragment: ClassVar[str]  # its function in lua/, named as ``name``: the several-limits script calls it
    state_fields: ClassVar[int]  # how many numbers its scripts reply as its state

    # The reference model: every backend decides exactly as these do.

    @abstractmethod
    def validate_cost(self, cost: object, policy: P) -> float:
        """``cost`` as a float, or ValueError unless 0 < cost <= the policy's quota."""

    @abstractmethod
    def take(self, state: S | None, now: float, policy: P, cost: float) -> tuple[bool, S | None]:
        """Whether ``cost`` is admitted at ``now``, and the state to keep (the stored one when denied)."""

    @abstractmethod
    def decide(self, allowed: bool, kept: S | None, now: float, policy: P, cost: float) -> Decision:
        """The Decision for the outcome of ``take`` at ``now``, from the state it kept."""

    # Redis

    @abstractmethod
    def script_args(self, policy: P, cost: float) -> tuple[str, ...]:
        """The script's arguments before ``now`` and ``slack_ms``: exact (repr) numbers."""

    @abstractmethod
    def parse_reply(self, reply: Any) -> tuple[bool, S, float]:
        """Whether the script allowed, the state it stored (or left), and the time it decided at."""

    # The local backend

    def local_step(self, stored: Any, now: float, policy: P, cost: float) -> tuple[Decision, Any]:
        """Decide on the state kept in memory (None for a fresh key): the Decision, and what to store
        (None: keep what was stored, as after a denial). Stored values are the model's states unless an
        algorithm overrides this with a more compact form."""
        allowed, kept = self.take(stored, now, policy, cost)
        return self.decide(allowed, kept, now, policy, cost), kept if allowed else None

    @abstractmethod
    def fresh_at(self, stored: Any, policy: P) -> float:
        """When a value ``local_step`` stored stops mattering (the key reads fresh from then on)."""

    def state_of(self, stored: Any) -> S | None:
        """The model state of a value ``local_step`` stored (None stays None: a fresh key)."""
        return stored  # type: ignore[no-any-return]

    def stored_form(self, state: S | None) -> Any:
        """The value ``local_step`` would store for a model state."""
        return state

    def fresh(self, now: float, policy: P) -> S | None:
        """The state of a fresh key at ``now``, as ``decide`` takes it."""
        return None

    # The cache of denials

    def cached_denial(self, state: S, now: float, policy: P, cost: float) -> Decision | None:
        """The denial Redis gives at ``now`` (or later) for a key it stored ``state`` in, or None when
        Redis may allow. Exact for any algorithm in which, with no traffic, passing time only frees quota
        and traffic only uses it: then a denial at an estimate of ``now`` never too early holds."""
        allowed, _ = self.take(state, now, policy, cost)
        return None if allowed else self.decide(False, state, now, policy, cost)

    # The fallback share

    @abstractmethod
    def scaled(self, policy: P, share: float) -> P:
        """``policy`` with its quota scaled by ``share`` (ValueError if that makes no valid policy)."""

    @abstractmethod
    def admitting(self, policy: P, cost: float) -> P:
        """``policy``, or one with just enough quota that ``cost`` can pass (a scaled quota below it)."""

    # Headers

    @abstractmethod
    def quota(self, policy: P) -> float:
        """The ``q`` of ``RateLimit-Policy`` and ``X-RateLimit-Limit``: units a fresh key admits at once."""

    @abstractmethod
    def period(self, policy: P) -> float:
        """The ``w`` of ``RateLimit-Policy``: the seconds the quota is counted over."""

    @abstractmethod
    def next_reset(self, policy: P, decision: Decision) -> float:
        """The ``t`` of ``RateLimit``: seconds until quota comes back."""

    @abstractmethod
    def describe(self, policy: P) -> str:
        """The policy in words, for ``--check`` and logs."""
