"""Limits as configuration: a policy file (TOML) read into an immutable PolicySet (tiers, routes, costs,
several limits per request, shadow mode, exemptions), and the PolicyStore that reloads it."""

from __future__ import annotations

from tornado_rate_limiter.limiter.policies.loader import PolicyFileError, load_policy_file, parse_policies
from tornado_rate_limiter.limiter.policies.model import Limits, PolicySet, Route
from tornado_rate_limiter.limiter.policies.paths import AmbiguousPath, MalformedPath, normalize_path
from tornado_rate_limiter.limiter.policies.store import FixedPolicies, PolicyStore

__all__ = [
    "AmbiguousPath",
    "FixedPolicies",
    "Limits",
    "MalformedPath",
    "PolicyFileError",
    "PolicySet",
    "PolicyStore",
    "Route",
    "load_policy_file",
    "normalize_path",
    "parse_policies",
]
