"""Choose the limiter's backend from the settings: Redis when REDIS_URL is set, memory otherwise."""

from __future__ import annotations

import logging

from app.settings import Settings
from limiter import LocalBackend, RedisBackend

log = logging.getLogger("app")


def build_backend(settings: Settings) -> LocalBackend | RedisBackend:
    """The backend the service runs on; says once in the log which one it is."""
    if settings.redis_url is None:
        log.info("REDIS_URL is not set: limits are kept in this process's memory (LocalBackend)")
        return LocalBackend()
    log.info("limits are kept in Redis (RedisBackend)")
    return RedisBackend.from_url(settings.redis_url)
