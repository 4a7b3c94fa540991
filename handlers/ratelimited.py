"""RateLimitedHandler: a tornado RequestHandler whose ``prepare()`` checks the rate limit.

Subclass it and write ``get()``/``post()``/... as usual; a denied request is answered 429 in ``prepare()``
and never reaches them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

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
    rate_limit_headers,
    retry_after_seconds,
    several_exceeded_problem,
    several_limits_headers,
)
from tornado_rate_limiter.handlers.identity import IP, USER, Identity
from tornado_rate_limiter.limiter import Decision, LocalBackend, Policy, RateLimiter
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.policies import Limits, PolicySet
from tornado_rate_limiter.limiter.policies.store import FixedPolicies, PolicyStore
from tornado_rate_limiter.limiter.verdict import Charge, Verdict

SETTINGS_KEY = "rate_limit"  # where the Application's settings hold the RateLimitConfig


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

    def __post_init__(self) -> None:
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
_NOT_LIMITED = Limits(1.0, ())


@lru_cache(maxsize=256)
def _limits_of(policy: AnyPolicy | None) -> Limits:
    """The Limits of a handler that names its policy in code (None: not limited)."""
    return Limits(1.0, (policy,)) if policy is not None else _NOT_LIMITED


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
        if body is not None and self._gathers_body:
            # Added before Tornado's _execute awaits the same future, so it runs first (callbacks run in the
            # order added): the method finds the whole body, as Tornado gives it to a handler that does
            # not stream. Here rather than in prepare(), so a subclass's own prepare() cannot lose it.
            body.add_done_callback(self._body_complete)

    async def prepare(self) -> None:
        """Runs once the headers are in, before the body is read: checks the limit and finishes the request
        itself when it is denied (a body it has is then never read). An allowed request's body is read into
        ``self.request.body`` (and its arguments parsed) before the HTTP method runs, as for any handler; a
        subclass that overrides ``data_received`` streams it instead."""
        await self.check_rate_limit()

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
            return policy_set.limits_for(identity.kind, method, path, tier)
        return _limits_of(chosen)

    def rate_limit_target(self) -> tuple[str, str]:
        """The method and path the route table is matched against: this request's (a forward-auth
        endpoint gives the original request's instead)."""
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

    async def check_rate_limit(self) -> None:
        """Ask the limiter, set the headers, and answer 429 (or 401 for a bad token) without the handler."""
        config = self.rate_limit_config
        policy_set = config.policy_set  # read once: a reload in the middle never mixes two configurations
        try:
            identity, token_error = self.rate_limit_identity(), None
        except InvalidToken as exc:  # counted against the address, so bad tokens cannot dodge the limit
            identity, token_error = Identity(IP, self.client_ip()), exc
        self.rate_limit_identity_used = identity
        limits = self.rate_limit_limits = self.rate_limit_limits_for(identity, policy_set)
        if limits.enforced or limits.shadow:
            if self.rate_limit_exempt(identity, policy_set):
                config.limiter.metrics.exempt.inc()
            else:
                await self._apply_limits(config.limiter, identity, limits)
        if token_error is not None:
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            problem = {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": str(token_error)}
            await self._before_answering_from_the_head()
            self.finish_with_problem(401, problem)

    async def _apply_limits(self, limiter: RateLimiter, identity: Identity, limits: Limits) -> None:
        """Decide ``limits`` for ``identity``, set the headers of the enforced policies, and answer 429 when
        one denies. One enforced policy alone takes the single-limit path (and its cache of denials)."""
        key, cost = self.rate_limit_key(identity), self.rate_limit_cost()
        enforced, shadow = limits.enforced, limits.shadow
        if shadow and cost != limits.cost:  # a cost of the handler's own, which a shadow policy may not admit:
            shadow = tuple(policy for policy in shadow if algorithm_for(policy).quota(policy) >= cost)  # left out
        if len(enforced) == 1 and not shadow:
            decision = await limiter.acquire(key, enforced[0], cost, identity_kind=identity.kind)
            self.rate_limit_decision = decision
            headers = rate_limit_headers(enforced[0], decision)
            decisions: Sequence[Decision] = (decision,)
        else:
            charges = [Charge(key, policy, cost) for policy in enforced]
            charges += [Charge(key, policy, cost, enforced=False) for policy in shadow]
            verdict = self.rate_limit_verdict = await limiter.acquire_all(charges, identity_kind=identity.kind)
            if not enforced:  # shadow policies only: never in a header, never a denial
                return
            decisions = verdict.decisions[: len(enforced)]
            decision = self.rate_limit_decision = decisions[most_restrictive(decisions)]
            headers = several_limits_headers(enforced, decisions)
        for name, value in headers.items():
            self.set_header(name, value)
        if not decision.allowed:
            self.set_header("Retry-After", str(retry_after_seconds(decision)))
            await self._before_answering_from_the_head()
            self.finish_with_problem(self.rate_limit_denied_status(), several_exceeded_problem(enforced, decisions))

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
