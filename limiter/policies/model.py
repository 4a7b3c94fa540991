"""What a policy file says, as immutable values: the policies by name, which apply to whom (tiers), the
route table, and who is exempt. ``PolicySet.limits_for`` answers the one question a request asks of it.

Code builds the same objects without a file: ``PolicySet.from_kinds({"ip": TokenBucket(...)})`` is the
configuration the environment settings make, one policy per identity kind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.policies.paths import AmbiguousPath, normalize_path, other_readings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ENFORCE, SHADOW = "enforce", "shadow"
# Clients whose exemption is remembered, per PolicySet: the check parses an address, which costs more
# than the rest of it, and clients recur; bounded, since addresses come from clients.
_REMEMBERED_CLIENTS = 16384


@dataclass(frozen=True)
class Route:
    """A rule of the route table: requests whose path matches ``path`` (and whose method is in ``methods``,
    when given) cost ``cost`` and, when ``policies`` names a list for the identity kind, use that list.
    ``path`` is searched in the request's normalized path (paths.normalize_path)."""

    path: re.Pattern[str]  # a string is compiled
    methods: frozenset[str] | None = None  # any iterable of names, in any case
    cost: float = 1.0
    policies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _path_any_case: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.path, str):
            object.__setattr__(self, "path", re.compile(self.path))
        object.__setattr__(self, "_path_any_case", re.compile(self.path.pattern, self.path.flags | re.IGNORECASE))
        if self.methods is not None:  # HEAD is GET without the body: a rule for GET covers it
            methods = {method.upper() for method in self.methods}
            object.__setattr__(self, "methods", frozenset(methods | ({"HEAD"} if "GET" in methods else set())))

    def matches(self, method: str, path: str, *, any_case: bool = False) -> bool:
        """Whether a request of ``method`` to normalized ``path`` is this route's; ``any_case``: letters of
        the path match either case (RATE_LIMIT_ROUTE_CASE=insensitive)."""
        pattern = self._path_any_case if any_case else self.path
        return (self.methods is None or method.upper() in self.methods) and pattern.search(path) is not None


@dataclass(frozen=True)
class Limits:
    """What applies to one request: its cost, and the policies it is checked against (enforced first,
    then shadow ones, each in the order the file lists them)."""

    cost: float
    enforced: tuple[AnyPolicy, ...]
    shadow: tuple[AnyPolicy, ...] = ()


FieldPath = tuple[str | int, ...]  # where in a policy file: ("identities", "ip", "policies"), ("routes", 0, "cost")


def cost_overruns(
    policies: Mapping[str, AnyPolicy],
    ip_policies: tuple[str, ...],
    user_policies: tuple[str, ...],
    tiers: Mapping[str, tuple[str, ...]],
    routes: Sequence[Route],
    kind_policies: Mapping[str, tuple[AnyPolicy, ...]] | None = None,
) -> Iterator[tuple[FieldPath, str, float, float]]:
    """Every (where, policy name, cost, quota) where a policy may be charged more than it ever admits at
    once: 1 on the identities' lists (every tier's) and on ``kind_policies``; a route's cost on its own
    list for an identity kind, else on that kind's lists. ``where`` is the policy file's field."""
    ip_lists: list[tuple[FieldPath, tuple[str, ...]]] = [(("identities", "ip", "policies"), ip_policies)]
    user_lists: list[tuple[FieldPath, tuple[str, ...]]] = [(("identities", "user", "policies"), user_policies)]
    user_lists += [(("identities", "user", "tiers", tier), names) for tier, names in tiers.items()]
    charged = [(where, names, 1.0) for where, names in ip_lists + user_lists]
    for index, route in enumerate(routes):
        for kind, kind_lists in (("ip", ip_lists), ("user", user_lists)):
            lists = [route.policies[kind]] if kind in route.policies else [names for _, names in kind_lists]
            charged += [(("routes", index, "cost"), names, route.cost) for names in lists]
    by_name = dict(policies)
    for kind, kind_list in (kind_policies or {}).items():
        by_name.update((policy.name, policy) for policy in kind_list)
        charged.append((("kind_policies", kind), tuple(policy.name for policy in kind_list), 1.0))
    for where, names, cost in charged:
        for name in names:
            policy = by_name[name]
            quota = algorithm_for(policy).quota(policy)
            if cost > quota:
                yield where, name, cost, quota


@dataclass(frozen=True)
class PolicySet:
    """A whole configuration. ``ip_policies`` apply to anonymous clients; users get their tier's list
    (``tiers``, the tier read from the JWT claim ``tier_claim``; absent or unknown: ``default_tier``), or
    ``user_policies`` when there are no tiers. The first route that matches wins. A policy not in
    ``modes`` is enforced. ``kind_policies`` gives an identity kind (any, such as an application's own
    ``apikey``) its policies directly, whatever the lists and the routes say: what ``from_kinds`` builds.
    ValueError when a list names a policy that ``policies`` does not define, or when a policy cannot admit
    the cost it may be charged (1, or a route's)."""

    policies: Mapping[str, AnyPolicy]
    modes: Mapping[str, str] = field(default_factory=dict)  # policy name -> ENFORCE or SHADOW
    ip_policies: tuple[str, ...] = ()
    user_policies: tuple[str, ...] = ()
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tier_claim: str | None = None
    default_tier: str | None = None
    routes: tuple[Route, ...] = ()
    exempt_networks: tuple[IPNetwork, ...] = ()
    exempt_users: frozenset[str] = frozenset()
    sha256: str = ""  # of the file it was read from ("" when built in code)
    kind_policies: Mapping[str, tuple[AnyPolicy, ...]] = field(default_factory=dict)
    # Limits by (kind, tier, route index): the same few lists for every request.
    _limits: dict[tuple[str, str | None, int], Limits] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _exempt_clients: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, policy in self.policies.items():
            if policy.name != name:
                message = f"policies[{name!r}] is named {policy.name!r}: a policy is listed under its own name"
                raise ValueError(message)
        lists = {"ip_policies": self.ip_policies, "user_policies": self.user_policies}
        lists.update({f"tiers[{tier!r}]": names for tier, names in self.tiers.items()})
        for number, route in enumerate(self.routes):
            lists.update({f"routes[{number}].policies[{kind!r}]": names for kind, names in route.policies.items()})
        for where, names in lists.items():
            undefined = [name for name in names if name not in self.policies]
            if undefined:
                message = f"{where} names {undefined[0]!r}, which is not one of the policies"
                raise ValueError(message)
        if self.tiers and self.default_tier not in self.tiers:
            message = f"default_tier {self.default_tier!r} is not one of the tiers"
            raise ValueError(message)
        overrun = next(
            cost_overruns(
                self.policies, self.ip_policies, self.user_policies, self.tiers, self.routes, self.kind_policies
            ),
            None,
        )
        if overrun is not None:
            field_path, name, cost, quota = overrun
            where_text = ".".join(str(part) for part in field_path)
            message = f"{where_text}: a cost of {cost:g} is more than policy {name!r} ever admits at once ({quota:g})"
            raise ValueError(message)

    @classmethod
    def from_kinds(cls, policies: Mapping[str, AnyPolicy | None]) -> PolicySet:
        """One policy per identity kind (``{"ip": ..., "user": ...}``, or any kind of an application's
        own; a kind absent or None is not limited), as the environment settings configure the service.
        The kinds' keys never meet (``ip:...``, ``user:...``), so two kinds' policies may share a name."""
        return cls(
            policies={},
            kind_policies={kind: (policy,) for kind, policy in policies.items() if policy is not None},
        )

    def tier_of(self, claims: Mapping[str, object] | None) -> str | None:
        """The user's tier: the claim's value when it names a tier, else the default tier."""
        if not self.tiers:
            return None
        value = (claims or {}).get(self.tier_claim or "")
        return value if isinstance(value, str) and value in self.tiers else self.default_tier

    def limits_for(
        self, kind: str, method: str, path: str, tier: str | None = None, *, any_case: bool = False
    ) -> Limits:
        """The cost and the policies of a request by an identity of ``kind`` (``ip`` or ``user``) to ``path``
        (a request target, normalized here: every spelling of a path gets its route); ``any_case`` matches
        the routes' letters in either case. When there are routes to match: MalformedPath for a malformed
        percent-encoding, AmbiguousPath for a path that is another route as some server reads it (its dot
        segments, repeated slashes or parameters kept, as Tornado and Express route; its encoded slashes
        decoded, as WSGI does): any reading could be the one served."""
        matched = -1
        if self.routes:
            normalized = normalize_path(path)
            matched = self._route_of(method, normalized, any_case)
            for reading in other_readings(path, normalized):
                if self._route_of(method, reading, any_case) != matched:
                    message = (
                        f"the path {normalized!r} is another route as {reading!r}, as a server that keeps dot "
                        "segments, repeated slashes or parameters, or decodes encoded slashes, reads it"
                    )
                    raise AmbiguousPath(message)
        memo_key = (kind, tier, matched)
        limits = self._limits.get(memo_key)
        if limits is None:
            limits = self._limits[memo_key] = self._limits_of(kind, tier, matched)
        return limits

    def _route_of(self, method: str, path: str, any_case: bool) -> int:
        """The index of the first route that matches, or -1."""
        return next(
            (number for number, route in enumerate(self.routes) if route.matches(method, path, any_case=any_case)), -1
        )

    def _limits_of(self, kind: str, tier: str | None, matched: int) -> Limits:
        if kind in self.kind_policies:
            return Limits(1.0, self.kind_policies[kind])
        if kind == "ip":
            names = self.ip_policies
        elif kind == "user":
            names = self.tiers[tier] if tier is not None and tier in self.tiers else self.user_policies
        else:  # a kind of an application's own (rate_limit_identity overridden): only routes limit it
            names = ()
        cost = 1.0
        if matched >= 0:
            route = self.routes[matched]
            cost, names = route.cost, route.policies.get(kind, names)
        chosen = [self.policies[name] for name in names]
        return Limits(
            cost,
            tuple(policy for policy in chosen if self.modes.get(policy.name, ENFORCE) == ENFORCE),
            tuple(policy for policy in chosen if self.modes.get(policy.name, ENFORCE) == SHADOW),
        )

    def is_exempt_address(self, client: str) -> bool:
        """Whether the client (an address, or an IPv6 network such as ``2001:db8:1:2::/64``, as the
        limiter labels IPv6 clients) lies inside an exempt network."""
        if not self.exempt_networks:
            return False
        exempt = self._exempt_clients.get(client)
        if exempt is None:
            if len(self._exempt_clients) >= _REMEMBERED_CLIENTS:
                self._exempt_clients.clear()
            exempt = self._exempt_clients[client] = self._inside_exempt_network(client)
        return exempt

    def _inside_exempt_network(self, client: str) -> bool:
        try:
            network = ipaddress.ip_network(client, strict=False)
        except ValueError:
            return False
        return any(
            network.version == exempt.version and network.subnet_of(exempt)  # type: ignore[arg-type]
            for exempt in self.exempt_networks
        )

    def is_exempt_user(self, user_id: str) -> bool:
        return user_id in self.exempt_users
