"""RateLimitedHandler: a tornado RequestHandler whose ``prepare()`` checks the rate limit.

Subclass it and write ``get()``/``post()``/... as usual; a denied request is answered 429 in ``prepare()``
and never reaches them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import jwt
import tornado.httputil
import tornado.log
import tornado.web

from tornado_rate_limiter.handlers.client_ip import (
    ClientAddressResolver,
    client_label,
    forwarded_for,
    parse_address,
    x_forwarded_for,
)
from tornado_rate_limiter.handlers.headers import (
    most_restrictive,
    rate_limit_header_items,
    retry_after_seconds,
    several_exceeded_problem,
    several_limits_headers,
)
from tornado_rate_limiter.handlers.identity import IP, USER, Identity
from tornado_rate_limiter.limiter import Decision, LocalBackend, Policy, RateLimiter
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.policies import Limits, MalformedPath, PolicySet
from tornado_rate_limiter.limiter.policies.store import FixedPolicies, PolicyStore
from tornado_rate_limiter.limiter.verdict import Charge, Verdict

SETTINGS_KEY = "rate_limit"  # where the Application's settings hold the RateLimitConfig
ROUTE_CASES = ("sensitive", "insensitive")
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")  # which forwarding header trusted proxies append to


def default_policies() -> dict[str, Policy]:
    """The service's defaults: 60 tokens and 1/s per address, 120 and 2/s per user."""
    return {IP: Policy(60, 1.0, name=IP), USER: Policy(120, 2.0, name=USER)}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per application
class RateLimitConfig:
    """What every RateLimitedHandler of an Application shares: give it as the Application's ``rate_limit``
    setting, ``tornado.web.Application(routes, rate_limit=RateLimitConfig(...))``.

    ``policies`` is the configuration: one policy per identity kind (``{"ip": ..., "user": ...}``), a
    PolicySet (tiers, routes, several limits, shadow policies, exemptions), or a PolicyStore (a policy
    file, reloaded). Defaults: an in-memory limiter (``RateLimiter(LocalBackend())``) and the service's
    default policies.
    """

    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(LocalBackend()))
    policies: Mapping[str, AnyPolicy] | PolicySet | PolicyStore | FixedPolicies = field(
        default_factory=default_policies
    )
    resolver: ClientAddressResolver = field(default_factory=ClientAddressResolver)
    forwarded_header: str = "x-forwarded-for"  # or "forwarded" (RFC 7239)
    ipv6_prefix: int = 64
    jwt_secret: str | None = None  # None: no client is authenticated by the service
    route_case: str = "sensitive"  # or "insensitive": the routes' paths match letters of either case

    def __post_init__(self) -> None:
        header = self.forwarded_header.lower()  # compared in lower case below: "Forwarded" must mean it too
        if header not in FORWARDED_HEADERS:
            message = (
                f"forwarded_header={self.forwarded_header!r} is not valid: expected {' or '.join(FORWARDED_HEADERS)}"
            )
            raise ValueError(message)
        object.__setattr__(self, "forwarded_header", header)
        if self.route_case not in ROUTE_CASES:
            message = f"route_case={self.route_case!r} is not valid: expected {' or '.join(ROUTE_CASES)}"
            raise ValueError(message)
        object.__setattr__(self, "routes_any_case", self.route_case == "insensitive")
        # Parsing addresses costs more than the rest of the check, and the same peers and headers recur.
        object.__setattr__(self, "_cached_label", lru_cache(maxsize=_CACHED_LABELS)(self._resolve_label))
        policies = self.policies
        if isinstance(policies, PolicySet):
            policies = FixedPolicies(policies)
        elif not isinstance(policies, (PolicyStore, FixedPolicies)):
            policies = FixedPolicies(PolicySet.from_kinds(policies))
        object.__setattr__(self, "policy_source", policies)
        self.limiter.metrics.watch_configuration(policies)

    policy_source: PolicyStore | FixedPolicies = field(init=False)  # what ``policies`` became
    routes_any_case: bool = field(init=False)  # what ``route_case`` says
    _plans: _Plans | None = field(init=False, default=None, repr=False)

    def plans_for(self, policy_set: PolicySet) -> _Plans:
        """The memo of anonymous requests' plans under ``policy_set`` (new for each configuration)."""
        plans = self._plans
        if plans is None or plans.policy_set is not policy_set:
            plans = _Plans(policy_set)
            object.__setattr__(self, "_plans", plans)
        return plans

    @property
    def policy_set(self) -> PolicySet:
        """The configuration in force now (a reload replaces it whole)."""
        return self.policy_source.current

    def client_label(self, peer: str, forwarded: str) -> str:
        """The client's label, from the socket peer and the forwarding header (its values joined by commas,
        which both header formats read as they read separate values). Only short headers are cached, so
        forged long ones cannot fill memory."""
        if len(forwarded) > _CACHED_HEADER_CHARS:
            return self._resolve_label(peer, forwarded)
        label: str = self._cached_label(peer, forwarded)  # type: ignore[attr-defined]
        return label

    def is_trusted_peer(self, peer: str) -> bool:
        """Whether the socket peer ``peer`` is one of the proxies whose headers are believed."""
        peer_address = parse_address(peer)
        return peer_address is not None and self.resolver.is_trusted(peer_address, 0)

    def _resolve_label(self, peer: str, forwarded: str) -> str:
        parse = forwarded_for if self.forwarded_header == "forwarded" else x_forwarded_for
        peer_address = parse_address(peer)
        if forwarded and peer_address is not None and self.resolver.is_trusted(peer_address, 0):
            address = self.resolver.resolve(peer, parse([forwarded]))
        else:  # an untrusted peer's header is never read, not even split
            address = peer_address
        return client_label(address, self.ipv6_prefix) if address is not None else "unknown"


# At most 16,384 labels of headers up to 256 characters: a few MB whatever clients send.
_CACHED_LABELS = 16384
_CACHED_HEADER_CHARS = 256
# Plans of anonymous requests remembered (client, forwarding header, method and path): a few MB at most.
_CACHED_PLANS = 16384


class _Plan(NamedTuple):
    """What the check of an anonymous request finds before deciding: who counts, the limits, exemption,
    the key and the cost."""

    identity: Identity
    limits: Limits
    exempt: bool
    key: str
    cost: float


class _Plans(dict[tuple[Any, ...], _Plan]):
    """The plans of one configuration (a reload starts afresh), forgotten all at once when full."""

    def __init__(self, policy_set: PolicySet) -> None:
        super().__init__()
        self.policy_set = policy_set

    def remember(self, key: tuple[Any, ...], plan: _Plan) -> _Plan:
        if len(self) >= _CACHED_PLANS:
            self.clear()
        self[key] = plan
        return plan


class RateLimitNotConfigured(RuntimeError):
    """A RateLimitedHandler runs in an Application without a RateLimitConfig (a mistake in the app's code)."""


def rate_limit_config_of(handler: tornado.web.RequestHandler) -> RateLimitConfig:
    """The RateLimitConfig of ``handler``'s Application, or RateLimitNotConfigured saying what to add."""
    config = handler.application.settings.get(SETTINGS_KEY)
    if isinstance(config, RateLimitConfig):
        return config
    found = "no rate_limit setting" if config is None else f"a rate_limit setting of type {type(config).__name__}"
    message = (
        f"{type(handler).__name__} needs a RateLimitConfig and its Application has {found}: create it as "
        "tornado.web.Application(routes, rate_limit=RateLimitConfig(...))"
    )
    raise RateLimitNotConfigured(message)


class InvalidToken(Exception):
    """The request carried a bearer token that is not valid; the message says why, safe to show."""


class _AppPolicies:
    """Marker: use the application's policy for each identity kind."""

    def __repr__(self) -> str:
        return "APP_POLICIES"


APP_POLICIES: Any = _AppPolicies()


class _Done:
    """An awaitable already done: what the check returns when it did not wait, so that Tornado, and a
    subclass's ``await super().prepare()``, go on at once."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


_DONE = _Done()
_NOT_LIMITED = Limits(1.0, ())


@lru_cache(maxsize=256)
def _limits_of(policy: AnyPolicy | None) -> Limits:
    """The Limits of a handler that names its policy in code (None: not limited)."""
    return Limits(1.0, (policy,)) if policy is not None else _NOT_LIMITED


# What the plan of an anonymous request is worked out from: a subclass overriding any of these decides
# otherwise, and is checked without the memo of plans.
_PLANNED_METHODS = (
    "rate_limit_identity",
    "rate_limit_user_id",
    "get_current_user",
    "rate_limit_limits_for",
    "rate_limit_target",
    "rate_limit_claims",
    "rate_limit_exempt",
    "client_ip",
    "rate_limit_key",
    "rate_limit_cost",
)


_AS_WRITTEN: dict[type, bool] = {}  # per handler class (classes are few, made by code)


def _decides_as_written(handler_class: type[RateLimitedHandler]) -> bool:
    """Whether ``handler_class`` decides who counts and which limits apply as RateLimitedHandler does."""
    as_written = _AS_WRITTEN.get(handler_class)
    if as_written is None:
        as_written = _AS_WRITTEN[handler_class] = all(
            getattr(handler_class, name) is getattr(RateLimitedHandler, name) for name in _PLANNED_METHODS
        )
    return as_written


@tornado.web.stream_request_body  # prepare() runs once the headers are in: a denial never reads the body
class RateLimitedHandler(tornado.web.RequestHandler):
    """A RequestHandler limited per client: ``ip:<address>``, or ``user:<id>`` once ``current_user`` is set.

    Class attribute ``rate_limit_policy`` chooses the limit: ``APP_POLICIES`` (default) the application's
    policy for each identity kind; a policy of any algorithm (``TokenBucket``, also named ``Policy``,
    ``FixedWindow``, ``SlidingWindow``) for every client; a mapping such as ``{"user": FixedWindow(...)}``
    overriding some kinds (a kind mapped to None is not limited); ``None`` to exempt the handler.

    Override ``rate_limit_identity()``, ``rate_limit_key()`` or ``rate_limit_cost()`` to change who is
    counted and how much a request costs. A subclass with its own ``prepare()`` must call
    ``await super().prepare()`` first. After the check, ``self.rate_limit_identity_used``,
    ``self.rate_limit_limits`` (the policies and cost that applied), ``self.rate_limit_decision`` (the
    most restrictive enforced policy's) and, for several policies, ``self.rate_limit_verdict`` hold what
    was decided.
    """

    rate_limit_policy: ClassVar[AnyPolicy | Mapping[str, AnyPolicy | None] | None] = APP_POLICIES

    rate_limit_decision: Decision | None = None
    rate_limit_verdict: Verdict | None = None
    rate_limit_identity_used: Identity | None = None
    rate_limit_limits: Limits | None = None
    _token_claims: Mapping[str, Any] | None = None

    def __init__(self, application: tornado.web.Application, request: Any, **kwargs: Any) -> None:
        super().__init__(application, request, **kwargs)
        self._body_chunks: list[bytes] = []
        body = getattr(request, "_body_future", None)  # set by Tornado for a handler that streams its body
        # Whether this handler gathers the body for its method (a subclass may stream it itself instead).
        self._gathers_body = body is not None and type(self).data_received is RateLimitedHandler.data_received
        if body is not None and self._gathers_body and (self._has_body() or "Content-Type" in request.headers):
            # Added before Tornado's _execute awaits the same future, so it runs first (callbacks run in the
            # order added): the method finds the whole body, as Tornado gives it to a handler that does
            # not stream. Here rather than in prepare(), so a subclass's own prepare() cannot lose it.
            # Without a body or a type to parse it by (a GET), there is nothing to give: body stays b"".
            body.add_done_callback(self._body_complete)

    def prepare(self) -> Awaitable[None]:
        """Runs once the headers are in, before the body is read: checks the limit and finishes the request
        itself when it is denied (a body it has is then never read). An allowed request's body is read into
        ``self.request.body`` (and its arguments parsed) before the HTTP method runs, as for any handler; a
        subclass that overrides ``data_received`` streams it instead.

        Returns an awaitable (``await super().prepare()`` in a subclass), already done when the check did
        not have to wait (the local backend, a denial known from the cache), so the request goes on in
        the same event-loop turn."""
        return self.check_rate_limit()

    def data_received(self, chunk: bytes) -> None:
        """Keep a piece of an allowed request's body (the whole body is at most the server's max_body_size)."""
        self._body_chunks.append(chunk)

    def _body_complete(self, received: asyncio.Future[None]) -> None:
        """The whole body is in: give it to the method as Tornado would, or answer instead when it is
        malformed (400) or its form's XSRF token is wrong (403), as Tornado does before prepare()."""
        if received.cancelled() or received.exception() is not None:
            return
        self.request.body = b"".join(self._body_chunks)
        self._body_chunks = []
        try:
            self.request._parse_body()
            if self._xsrf_check_waits_for_the_body:
                super().check_xsrf_cookie()
        except tornado.httputil.HTTPInputError as exc:
            tornado.log.gen_log.warning("Invalid body from %s: %s", self.request.remote_ip, exc)  # rate limited
            self._answer_instead_of_the_method(400)
        except tornado.web.HTTPError as exc:
            self._answer_instead_of_the_method(exc.status_code)

    def _answer_instead_of_the_method(self, status: int) -> None:
        """Answer ``status`` now; Tornado calls the HTTP method next (nothing else runs between the body and
        it), so this request's method becomes a no-op."""
        setattr(self, str(self.request.method).lower(), lambda *args, **kwargs: None)
        self.send_error(status)

    _xsrf_check_waits_for_the_body = False

    def check_xsrf_cookie(self) -> None:
        """Tornado checks the XSRF token before prepare(), when a streamed body (and the ``_xsrf`` field of
        a form in it) has not arrived yet: without a token in the headers, the check waits for the body
        this handler gathers. A subclass that streams the body itself gets Tornado's check as it is."""
        try:
            super().check_xsrf_cookie()
        except tornado.web.HTTPError:
            if self._gathers_body and self._has_body():
                self._xsrf_check_waits_for_the_body = True
                return
            raise

    def _has_body(self) -> bool:
        """Whether the request announces a body (a length above 0, or chunks)."""
        headers = self.request.headers
        return headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers

    @property
    def rate_limit_config(self) -> RateLimitConfig:
        """The Application's ``rate_limit`` setting (RateLimitNotConfigured, saying what to add, without it)."""
        return rate_limit_config_of(self)

    def rate_limit_limits_for(self, identity: Identity, policy_set: PolicySet) -> Limits:
        """The policies this request is checked against, and its cost: the handler's own policy when its
        class names one for the identity's kind, else the configuration's for the kind, the user's tier
        and the route (method and path)."""
        chosen = type(self).rate_limit_policy
        if isinstance(chosen, Mapping):
            chosen = chosen.get(identity.kind, APP_POLICIES)
        if chosen is APP_POLICIES:
            tier = policy_set.tier_of(self.rate_limit_claims()) if identity.kind == USER and policy_set.tiers else None
            method, path = self.rate_limit_target()
            any_case = self.rate_limit_config.routes_any_case
            return policy_set.limits_for(identity.kind, method, path, tier, any_case=any_case)
        return _limits_of(chosen)

    def rate_limit_target(self) -> tuple[str, str]:
        """The method and path the route table is matched against (normalized there, so that every spelling
        of a path gets its route): this request's (a forward-auth endpoint gives the original request's)."""
        return self.request.method or "GET", self.request.path

    def rate_limit_denied_status(self) -> int:
        """The status of a denial: 429 (a forward-auth endpoint may answer what its proxy needs)."""
        return 429

    def rate_limit_claims(self) -> Mapping[str, Any] | None:
        """The claims the user's tier is read from: the verified JWT's, or ``current_user`` itself when a
        subclass sets it to a mapping."""
        if self._token_claims is not None:
            return self._token_claims
        user = self.current_user
        return user if isinstance(user, Mapping) else None

    def rate_limit_exempt(self, identity: Identity, policy_set: PolicySet) -> bool:
        """Whether the configuration exempts this request: an exempt user, or a client address (the
        request's, whoever is counted) inside an exempt network."""
        if identity.kind == USER and policy_set.is_exempt_user(identity.value):
            return True
        if not policy_set.exempt_networks:
            return False
        return policy_set.is_exempt_address(identity.value if identity.kind == IP else self.client_ip())

    def rate_limit_identity(self) -> Identity:
        """Who this request counts against: the user when ``current_user`` is set, else the client address.

        Raises InvalidToken when the request carries a bad bearer token.
        """
        user = self.current_user
        if user is not None:
            return Identity(USER, self.rate_limit_user_id(user))
        return Identity(IP, self.client_ip())

    def rate_limit_user_id(self, user: Any) -> str:
        """The id of ``current_user``: itself if a string, else its ``sub``/``id`` key or ``id`` attribute."""
        if isinstance(user, Mapping):
            return str(user.get("sub", user.get("id")))
        if isinstance(user, (str, int)):
            return str(user)
        return str(getattr(user, "id", user))

    def rate_limit_key(self, identity: Identity) -> str:
        """The bucket key for ``identity`` (bounded in length whatever the id holds)."""
        return identity.key

    def rate_limit_cost(self) -> float:
        """Units of quota this request takes: its route's ``cost`` in the configuration (1 without one).
        Override to charge expensive requests more (at most each policy's capacity or limit)."""
        limits = self.rate_limit_limits
        return limits.cost if limits is not None else 1

    def client_ip(self) -> str:
        """The client's address as the limiter names it, read through trusted proxies only."""
        config = self.rate_limit_config
        header = "Forwarded" if config.forwarded_header == "forwarded" else "X-Forwarded-For"
        # The socket's peer: the service never runs with xheaders=True, which would let a client's own
        # X-Real-Ip header choose its address.
        return config.client_label(self.request.remote_ip or "", ",".join(self.request.headers.get_list(header)))

    def get_current_user(self) -> str | None:
        """The ``sub`` of a valid ``Authorization: Bearer`` JWT (HS256), when the service has a JWT secret."""
        secret = self.rate_limit_config.jwt_secret
        if secret is None:
            return None
        scheme, _, token = self.request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            claims = jwt.decode(token.strip(), secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            message = "the token's sub must be a non-empty string"
            raise InvalidToken(message)
        self._token_claims = claims
        return subject

    def check_rate_limit(self) -> Awaitable[None]:
        """Ask the limiter, set the headers, and answer 429 (or 401 for a bad token, 400 for a path that is
        malformed or ambiguous) without the handler. Returns an awaitable to await, done already
        when nothing had to wait."""
        try:  # costs nothing until raised
            config = self.rate_limit_config
            policy_set = config.policy_set  # read once: a reload in the middle never mixes two configurations
            plan = self._anonymous_plan(config, policy_set)
            if plan is not None:  # the common case, decided before for the same client and route
                identity, limits, exempt, key, cost = plan
                self.rate_limit_identity_used, self.rate_limit_limits = identity, limits
                if exempt:
                    config.limiter.metrics.exempt.inc()
                    return _DONE
                if not (limits.enforced or limits.shadow):
                    return _DONE
                waiting = self._apply_limits(config.limiter, identity, limits, key, cost)
                return waiting if waiting is not None else _DONE
            try:
                identity, token_error = self.rate_limit_identity(), None
            except InvalidToken as exc:  # counted against the address, so bad tokens cannot dodge the limit
                identity, token_error = Identity(IP, self.client_ip()), exc
            self.rate_limit_identity_used = identity
            limits = self.rate_limit_limits = self.rate_limit_limits_for(identity, policy_set)
            waiting = None
            if limits.enforced or limits.shadow:
                if self.rate_limit_exempt(identity, policy_set):
                    config.limiter.metrics.exempt.inc()
                else:
                    waiting = self._apply_limits(
                        config.limiter, identity, limits, self.rate_limit_key(identity), self.rate_limit_cost()
                    )
            if token_error is not None:
                return self._answer_bad_token(waiting, token_error)
            return waiting if waiting is not None else _DONE
        except MalformedPath as exc:  # the route table cannot tell which route it is: refused, never passed
            problem = {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": str(exc)}
            return self._answer_from_the_head(400, problem)

    def _anonymous_plan(self, config: RateLimitConfig, policy_set: PolicySet) -> _Plan | None:
        """What ``check_rate_limit`` would find for an anonymous request, from a memo of earlier requests
        from the same peer and forwarding header to the same method and path. None when it must be worked
        out: a subclass that changes how (any of the methods it calls overridden, ``current_user`` set
        already), a bearer token the service would read, an input too long to remember."""
        handler_class = type(self)
        if not _decides_as_written(handler_class) or "_current_user" in self.__dict__:
            return None
        request = self.request
        headers = request.headers
        if config.jwt_secret is not None and "Authorization" in headers:
            return None
        forwarded = ",".join(headers.get_list(config.forwarded_header))
        method, path = request.method or "GET", request.path
        if len(forwarded) > _CACHED_HEADER_CHARS or len(path) > _CACHED_HEADER_CHARS:
            return None
        memo_key = (handler_class, request.remote_ip, forwarded, method, path)
        plans = config.plans_for(policy_set)
        plan = plans.get(memo_key)
        if plan is None:
            identity = Identity(IP, config.client_label(request.remote_ip or "", forwarded))
            limits = self.rate_limit_limits_for(identity, policy_set)
            exempt = bool(limits.enforced or limits.shadow) and self.rate_limit_exempt(identity, policy_set)
            self.rate_limit_limits = limits  # what rate_limit_cost reads
            plan = _Plan(identity, limits, exempt, self.rate_limit_key(identity), self.rate_limit_cost())
            plans.remember(memo_key, plan)
        return plan

    async def _answer_bad_token(self, waiting: Awaitable[None] | None, token_error: InvalidToken) -> None:
        """401 for a bad token, once the limits are decided (a denial by them answers 429 first)."""
        if waiting is not None:
            await waiting
        self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        problem = {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": str(token_error)}
        await self._answer_from_the_head(401, problem)

    def _apply_limits(
        self, limiter: RateLimiter, identity: Identity, limits: Limits, key: str, cost: float
    ) -> Awaitable[None] | None:
        """Decide ``limits`` for ``identity``'s ``key`` at ``cost``, set the headers of the enforced policies,
        and answer 429 when one denies. One enforced policy alone takes the single-limit path (and its
        cache of denials). None when all is done; else what remains to await (Redis, a denial)."""
        enforced, shadow = limits.enforced, limits.shadow
        if shadow and cost != limits.cost:  # a cost of the handler's own, which a shadow policy may not admit:
            shadow = tuple(policy for policy in shadow if algorithm_for(policy).quota(policy) >= cost)  # left out
        if len(enforced) == 1 and not shadow:
            decision = limiter.acquire_now(key, enforced[0], cost, identity_kind=identity.kind)
            if decision is None:
                return self._decide_one_on_primary(limiter, key, enforced[0], cost, identity.kind)
            return self._answer_one(enforced[0], decision)
        charges = [Charge(key, policy, cost) for policy in enforced]
        charges += [Charge(key, policy, cost, enforced=False) for policy in shadow]
        verdict = limiter.acquire_all_now(charges, identity_kind=identity.kind)
        if verdict is None:
            return self._decide_all_on_primary(limiter, charges, enforced, identity.kind)
        return self._answer_all(enforced, verdict)

    async def _decide_one_on_primary(
        self, limiter: RateLimiter, key: str, policy: AnyPolicy, cost: float, kind: str
    ) -> None:
        decision = await limiter.ask_primary(key, policy, cost, identity_kind=kind)
        denied = self._answer_one(policy, decision)
        if denied is not None:
            await denied

    async def _decide_all_on_primary(
        self, limiter: RateLimiter, charges: Sequence[Charge], enforced: Sequence[AnyPolicy], kind: str
    ) -> None:
        verdict = await limiter.acquire_all(charges, identity_kind=kind)
        denied = self._answer_all(enforced, verdict)
        if denied is not None:
            await denied

    def _answer_one(self, policy: AnyPolicy, decision: Decision) -> Awaitable[None] | None:
        """Set the headers of one policy's decision; the 429 to await when it denies."""
        self.rate_limit_decision = decision
        set_header = self.set_header
        for name, value in rate_limit_header_items(policy, decision):
            set_header(name, value)
        if decision.allowed:
            return None
        return self._deny((policy,), (decision,))

    def _answer_all(self, enforced: Sequence[AnyPolicy], verdict: Verdict) -> Awaitable[None] | None:
        """Set the headers of the enforced policies' decisions; the 429 to await when one denies."""
        self.rate_limit_verdict = verdict
        if not enforced:  # shadow policies only: never in a header, never a denial
            return None
        decisions = verdict.decisions[: len(enforced)]
        decision = self.rate_limit_decision = decisions[most_restrictive(decisions)]
        for name, value in several_limits_headers(enforced, decisions).items():
            self.set_header(name, value)
        if decision.allowed:
            return None
        return self._deny(enforced, decisions)

    async def _deny(self, enforced: Sequence[AnyPolicy], decisions: Sequence[Decision]) -> None:
        decision = self.rate_limit_decision
        assert decision is not None
        self.set_header("Retry-After", str(retry_after_seconds(decision)))
        await self._answer_from_the_head(self.rate_limit_denied_status(), several_exceeded_problem(enforced, decisions))

    async def _answer_from_the_head(self, status: int, problem: Mapping[str, Any]) -> None:
        """Answer ``status`` with ``problem`` from prepare(), the body (if any) unread."""
        await self._before_answering_from_the_head()
        self.finish_with_problem(status, problem)

    async def _before_answering_from_the_head(self) -> None:
        """A request answered from prepare(): its body, if it has one, is never read, and its connection is
        closed after the answer (said with ``Connection: close``). One without a body keeps its keep-alive
        connection: Tornado reads a streamed request's (empty) body only once prepare() is done, and would
        close a connection whose request was not read to its end, so prepare() lets it read now."""
        if self._has_body():
            self.set_header("Connection", "close")
            return
        prepared: asyncio.Future[None] | None = getattr(self, "_prepared_future", None)
        body: asyncio.Future[None] | None = getattr(self.request, "_body_future", None)
        if prepared is None or body is None:  # not streamed (a subclass undid it): the body was read
            return
        if not prepared.done():
            prepared.set_result(None)  # the Finish that follows keeps Tornado from setting it again
        await body

    def finish_with_problem(self, status: int, problem: Mapping[str, Any]) -> None:
        """Answer ``status`` with an RFC 9457 problem body, keeping the headers set so far."""
        self.set_status(status)
        self.set_header("Content-Type", "application/problem+json")
        raise tornado.web.Finish(json.dumps(problem))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as problem details too, and never with a stack trace."""
        self.set_header("Content-Type", "application/problem+json")
        self.finish(json.dumps({"type": "about:blank", "title": self._reason, "status": status_code}))
