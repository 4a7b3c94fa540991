"""What a policy file says, as immutable values: the policies by name, which apply to whom (tiers), the
route table, and who is exempt. ``PolicySet.limits_for`` answers the one question a request asks of it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tornado_rate_limiter.limiter.algorithms import AnyPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ENFORCE, SHADOW = "enforce", "shadow"
IDENTITY_KINDS = ("ip", "user")


@dataclass(frozen=True)
class Route:
    """A rule of the route table: requests whose path matches ``path`` (and whose method is in ``methods``,
    when given) cost ``cost`` and, when ``policies`` names a list for the identity kind, use that list."""

    path: re.Pattern[str]
    methods: frozenset[str] | None = None
    cost: float = 1.0
    policies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method.upper() in self.methods) and self.path.search(path) is not None


@dataclass(frozen=True)
class Limits:
    """What applies to one request: its cost, and the policies it is checked against (enforced first,
    then shadow ones, each in the order the file lists them)."""

    cost: float
    enforced: tuple[AnyPolicy, ...]
    shadow: tuple[AnyPolicy, ...]


@dataclass(frozen=True)
class PolicySet:
    """A whole configuration. ``ip_policies`` apply to anonymous clients; users get their tier's list
    (``tiers``, the tier read from the JWT claim ``tier_claim``; absent or unknown: ``default_tier``), or
    ``user_policies`` when there are no tiers. The first route that matches wins."""

    policies: Mapping[str, AnyPolicy]
    modes: Mapping[str, str]  # policy name -> ENFORCE or SHADOW
    ip_policies: tuple[str, ...] = ()
    user_policies: tuple[str, ...] = ()
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tier_claim: str | None = None
    default_tier: str | None = None
    routes: tuple[Route, ...] = ()
    exempt_networks: tuple[IPNetwork, ...] = ()
    exempt_users: frozenset[str] = frozenset()
    sha256: str = ""  # of the file it was read from ("" when built in code)

    def tier_of(self, claims: Mapping[str, object] | None) -> str | None:
        """The user's tier: the claim's value when it names a tier, else the default tier."""
        if not self.tiers:
            return None
        value = (claims or {}).get(self.tier_claim or "")
        return value if isinstance(value, str) and value in self.tiers else self.default_tier

    def limits_for(self, kind: str, method: str, path: str, tier: str | None = None) -> Limits:
        """The cost and the policies of a request by an identity of ``kind`` (``ip`` or ``user``)."""
        if kind == "ip":
            names = self.ip_policies
        else:
            names = self.tiers[tier] if tier is not None and tier in self.tiers else self.user_policies
        cost = 1.0
        for route in self.routes:
            if route.matches(method, path):
                cost = route.cost
                names = route.policies.get(kind, names)
                break
        chosen = [self.policies[name] for name in names]
        return Limits(
            cost,
            tuple(policy for policy in chosen if self.modes[policy.name] == ENFORCE),
            tuple(policy for policy in chosen if self.modes[policy.name] == SHADOW),
        )

    def is_exempt_address(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.exempt_networks)

    def is_exempt_user(self, user_id: str) -> bool:
        return user_id in self.exempt_users
