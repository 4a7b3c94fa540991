"""Settings from the environment (12-factor): every variable, its default and its check, in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use; the message names it."""


def _integer(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        message = f"{name}={raw!r} is not valid: expected a whole number from {low} to {high}"
        raise SettingsError(message)
    return value


def _text(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    return raw or None


@dataclass(frozen=True)
class Settings:
    """What the service is told by its environment. Defaults are those of an unset variable."""

    port: int = 8080  # PORT
    host: str = "0.0.0.0"  # HOST
    redis_url: str | None = None  # REDIS_URL; unset: the in-memory backend

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read and check every variable; raises SettingsError naming the first bad one."""
        return cls(
            port=_integer(environ, "PORT", cls.port, 1, 65535),
            host=_text(environ, "HOST") or cls.host,
            redis_url=_text(environ, "REDIS_URL"),
        )
