"""The Backend protocol: what every store of limits offers, so code written for one runs on another."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

from tornado_rate_limiter.limiter.bucket import Decision, Policy


@runtime_checkable
class Backend(Protocol):
    """A store of token buckets: ``LocalBackend`` (this process) and ``RedisBackend`` (shared)."""

    async def acquire(self, key: str, policy: Policy, cost: float = 1, now: float | None = None) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket under ``policy`` if it has them."""
        ...

    async def connect(self) -> None:
        """Get ready to decide (raises BackendError when the store cannot serve)."""
        ...

    async def close(self) -> None:
        """Release connections; the backend decides no more."""
        ...

    async def __aenter__(self) -> Backend: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None: ...
