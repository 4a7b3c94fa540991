"""Tornado integration: the rate-limited handler base class and the service's own routes."""

from __future__ import annotations

from handlers.health import HealthHandler

__all__ = ["HealthHandler"]
