"""Limits as configuration: a policy file (TOML) read into an immutable PolicySet (tiers, routes, costs,
several limits per request, shadow mode, exemptions). Not wired into the service yet (tracker issue 13)."""

from __future__ import annotations

from tornado_rate_limiter.limiter.policies.loader import PolicyFileError, load_policy_file, parse_policies
from tornado_rate_limiter.limiter.policies.model import Limits, PolicySet, Route

__all__ = ["Limits", "PolicyFileError", "PolicySet", "Route", "load_policy_file", "parse_policies"]
