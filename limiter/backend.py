"""The Backend protocol: what every store of limits offers, so code written for one runs on another."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

from tornado_rate_limiter.limiter.algorithms import AnyPolicy
from tornado_rate_limiter.limiter.bucket import Decision


@runtime_checkable
class Backend(Protocol):
    """A store of limits, for any algorithm: ``LocalBackend`` (this process) and ``RedisBackend`` (shared)."""

    async def acquire(self, key: str, policy: AnyPolicy, cost: float = 1, now: float | None = None) -> Decision:
        """Spend ``cost`` of ``key``'s quota under ``policy`` if it has that much left."""
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
