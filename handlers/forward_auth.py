"""The decision endpoint for proxies (nginx ``auth_request``, Traefik ``ForwardAuth``, Envoy ``ext_authz``
in HTTP mode): the proxy asks before each request, sending the original request's method, URI, client
address and ``Authorization``, and gets the limiter's answer with the rate-limit headers.

The check is RateLimitedHandler's, through the same code: the policy file's routes, tiers, costs,
exemptions and shadow policies apply to the original request, never to /check itself.
"""

from __future__ import annotations

from tornado_rate_limiter.handlers.ratelimited import RateLimitedHandler

CHECK_PATH = "/check"
# What a proxy may ask a denial to be answered with: nginx's auth_request takes 401 and 403 as "deny"
# and any other status as an error, so its config asks for one of them and maps it back to a 429.
DENY_STATUSES = frozenset({401, 403, 429})
DENY_STATUS_HEADER = "X-RateLimit-Deny-Status"


class ForwardAuthHandler(RateLimitedHandler):
    """Any method on ``/check`` (or ``/check/<original path>``, as Envoy appends it): 200 with the
    rate-limit headers when the original request is allowed; when denied, 429 (or the status the proxy
    asks for in ``X-RateLimit-Deny-Status``: 401 or 403) with ``Retry-After``, the headers and the
    problem body."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def rate_limit_target(self) -> tuple[str, str]:
        """The original request: nginx's ``X-Original-Method``/``X-Original-URI`` (as the shipped config
        sets them), Traefik's ``X-Forwarded-Method``/``X-Forwarded-Uri``, or, from Envoy, this request's
        own method and the path after ``/check``."""
        headers = self.request.headers
        method = headers.get("X-Original-Method") or headers.get("X-Forwarded-Method") or self.request.method
        uri = headers.get("X-Original-URI") or headers.get("X-Forwarded-Uri")
        if uri is None:
            uri = self.request.path.removeprefix(CHECK_PATH) or "/"
        return (method or "GET").upper(), uri.partition("?")[0] or "/"  # the path as given: routes match it

    def rate_limit_denied_status(self) -> int:
        asked = self.request.headers.get(DENY_STATUS_HEADER, "").strip()
        return int(asked) if asked.isdigit() and int(asked) in DENY_STATUSES else 429

    def allow(self, *args: str) -> None:
        """The original request may go on: 200, no body (the rate-limit headers are set)."""
        self.set_status(200)

    get = head = post = put = patch = delete = options = allow
