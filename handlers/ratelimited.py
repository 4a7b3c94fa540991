"""RateLimitedHandler: a tornado RequestHandler whose ``prepare()`` checks the rate limit.

Subclass it and write ``get()``/``post()``/... as usual; a denied request is answered 429 in ``prepare()``
and never reaches them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import jwt
import tornado.web

from handlers.client_ip import ClientAddressResolver, client_label, forwarded_for, x_forwarded_for
from handlers.headers import quota_exceeded_problem, rate_limit_headers, retry_after_seconds
from handlers.identity import IP, USER, Identity
from limiter import Decision, Policy, RateLimiter

SETTINGS_KEY = "rate_limit"  # where the Application's settings hold the RateLimitConfig


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per application
class RateLimitConfig:
    """What every RateLimitedHandler of an Application shares; put it in ``settings["rate_limit"]``."""

    limiter: RateLimiter
    policies: Mapping[str, Policy]  # by identity kind: "ip", "user"
    resolver: ClientAddressResolver = field(default_factory=ClientAddressResolver)
    forwarded_header: str = "x-forwarded-for"  # or "forwarded" (RFC 7239)
    ipv6_prefix: int = 64
    jwt_secret: str | None = None  # None: no client is authenticated by the service

    def __post_init__(self) -> None:
        # Parsing addresses costs more than the rest of the check, and the same peers and headers recur.
        object.__setattr__(self, "_cached_label", lru_cache(maxsize=_CACHED_LABELS)(self._resolve_label))

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
        address = self.resolver.resolve(peer, parse([forwarded]) if forwarded else [])
        return client_label(address, self.ipv6_prefix) if address is not None else "unknown"


# At most 16,384 labels of headers up to 256 characters: a few MB whatever clients send.
_CACHED_LABELS = 16384
_CACHED_HEADER_CHARS = 256


class InvalidToken(Exception):
    """The request carried a bearer token that is not valid; the message says why, safe to show."""


class _AppPolicies:
    """Marker: use the application's policy for each identity kind."""

    def __repr__(self) -> str:
        return "APP_POLICIES"


APP_POLICIES: Any = _AppPolicies()


class RateLimitedHandler(tornado.web.RequestHandler):
    """A RequestHandler limited per client: ``ip:<address>``, or ``user:<id>`` once ``current_user`` is set.

    Class attribute ``rate_limit_policy`` chooses the limit: ``APP_POLICIES`` (default) the application's
    policy for each identity kind; a ``Policy`` for every client; a mapping such as ``{"user": Policy(...)}``
    overriding some kinds (a kind mapped to None is not limited); ``None`` to exempt the handler.

    Override ``rate_limit_identity()``, ``rate_limit_key()`` or ``rate_limit_cost()`` to change who is
    counted and how much a request costs. A subclass with its own ``prepare()`` must call
    ``await super().prepare()`` first. After the check, ``self.rate_limit_decision`` and
    ``self.rate_limit_identity_used`` hold what was decided.
    """

    rate_limit_policy: ClassVar[Policy | Mapping[str, Policy | None] | None] = APP_POLICIES

    rate_limit_decision: Decision | None = None
    rate_limit_identity_used: Identity | None = None

    async def prepare(self) -> None:
        """Runs before the HTTP method: checks the limit and finishes the request itself when it is denied."""
        await self.check_rate_limit()

    @property
    def rate_limit_config(self) -> RateLimitConfig:
        config: RateLimitConfig = self.application.settings[SETTINGS_KEY]
        return config

    def rate_limit_policy_for(self, kind: str) -> Policy | None:
        """The policy for clients of ``kind`` on this handler, or None when they are not limited."""
        chosen = type(self).rate_limit_policy
        app_policy = self.rate_limit_config.policies.get(kind)
        if chosen is APP_POLICIES:
            return app_policy
        if chosen is None or isinstance(chosen, Policy):
            return chosen
        return chosen.get(kind, app_policy)

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
        """Tokens this request takes: 1. Override to charge expensive requests more (at most the capacity)."""
        return 1

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
        return subject

    async def check_rate_limit(self) -> None:
        """Ask the limiter, set the headers, and answer 429 (or 401 for a bad token) without the handler."""
        try:
            identity, token_error = self.rate_limit_identity(), None
        except InvalidToken as exc:  # counted against the address, so bad tokens cannot dodge the limit
            identity, token_error = Identity(IP, self.client_ip()), exc
        self.rate_limit_identity_used = identity
        policy = self.rate_limit_policy_for(identity.kind)
        if policy is not None:
            key, cost = self.rate_limit_key(identity), self.rate_limit_cost()
            decision = await self.rate_limit_config.limiter.acquire(key, policy, cost, identity_kind=identity.kind)
            self.rate_limit_decision = decision
            for name, value in rate_limit_headers(policy, decision).items():
                self.set_header(name, value)
            if not decision.allowed:
                self.set_header("Retry-After", str(retry_after_seconds(decision)))
                self.finish_with_problem(429, quota_exceeded_problem(policy, decision))
        if token_error is not None:
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            problem = {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": str(token_error)}
            self.finish_with_problem(401, problem)

    def finish_with_problem(self, status: int, problem: Mapping[str, Any]) -> None:
        """Answer ``status`` with an RFC 9457 problem body, keeping the headers set so far."""
        self.set_status(status)
        self.set_header("Content-Type", "application/problem+json")
        raise tornado.web.Finish(json.dumps(problem))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as problem details too, and never with a stack trace."""
        self.set_header("Content-Type", "application/problem+json")
        self.finish(json.dumps({"type": "about:blank", "title": self._reason, "status": status_code}))
