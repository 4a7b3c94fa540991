"""The decision endpoint for proxies (nginx ``auth_request``, Traefik ``ForwardAuth``, Envoy ``ext_authz``
in HTTP mode): the proxy asks before each request, sending the original request's method, URI, client
address and ``Authorization``, and gets the limiter's answer with the rate-limit headers.

The check is RateLimitedHandler's, through the same code: the policy file's routes, tiers, costs,
exemptions and shadow policies apply to the original request, never to /check itself.
"""

from __future__ import annotations

import logging

from tornado_rate_limiter.handlers.ratelimited import RateLimitedHandler
from tornado_rate_limiter.limiter.policies import normalize_path

# One line per request at most every few seconds (app/log_limits.py limits this logger).
log = logging.getLogger("tornado_rate_limiter.forward_auth")
CHECK_PATH = "/check"
DENY_STATUS_HEADER = "X-RateLimit-Deny-Status"
# Which headers carry the original request's method and URI, by the proxy asking (RATE_LIMIT_FORWARD_AUTH).
# Envoy's ext_authz asks with the original method, at /check followed by the original path: None.
ORIGINAL_REQUEST_HEADERS: dict[str, tuple[str, str] | None] = {
    "nginx": ("X-Original-Method", "X-Original-URI"),  # as deploy/nginx/nginx.conf sets them
    "traefik": ("X-Forwarded-Method", "X-Forwarded-Uri"),  # as ForwardAuth sets them
    "envoy": None,
}


class ForwardAuthHandler(RateLimitedHandler):
    """Any method on ``/check`` (or ``/check/<original path>``, as Envoy appends it): 200 with the
    rate-limit headers when the original request is allowed; when denied, 429 (or the 4xx the proxy asks
    for in ``X-RateLimit-Deny-Status``) with ``Retry-After``, the headers and the problem body; 400 for an
    original path that is malformed or ambiguous (limiter/policies/paths.py).

    What the proxy says of the original request (its method and URI, in the headers of the one proxy
    ``proxy`` names; nginx's deny status) is believed only from a trusted proxy (the configuration's
    resolver); anyone else is limited on this request's own method and path."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, proxy: str = "nginx") -> None:
        if proxy not in ORIGINAL_REQUEST_HEADERS:
            message = f"proxy={proxy!r} is not valid: expected {' or '.join(ORIGINAL_REQUEST_HEADERS)}"
            raise ValueError(message)
        self.original_request_headers = ORIGINAL_REQUEST_HEADERS[proxy]
        # Only nginx needs a denial in another status (Traefik and Envoy pass the 429 on as it is), and a
        # proxy that forwards a client's headers would let the client choose it.
        self.deny_status_asked = proxy == "nginx"

    _from_trusted_proxy: bool | None = None

    def from_trusted_proxy(self) -> bool:
        """Whether the peer is one of the proxies whose word on the original request is believed."""
        if self._from_trusted_proxy is None:
            self._from_trusted_proxy = self.rate_limit_config.is_trusted_peer(self.request.remote_ip or "")
        return self._from_trusted_proxy

    def rate_limit_target(self) -> tuple[str, str]:
        """The original request, from the configured proxy's headers when a trusted proxy sent them, else
        this request's own method and its path after ``/check``. MalformedPath (a 400) when the path's
        percent-encoding is malformed; the route table normalizes it (and refuses it as ambiguous)."""
        request = self.request
        method, uri = request.method or "GET", request.path.removeprefix(CHECK_PATH) or "/"
        names = self.original_request_headers
        if names is not None and self.from_trusted_proxy():
            method_header, uri_header = names
            method = request.headers.get(method_header) or method
            original_uri = request.headers.get(uri_header)
            if original_uri is None:  # the proxy is not the one configured, or not configured as documented
                log.warning("a trusted proxy asked /check without %s: is RATE_LIMIT_FORWARD_AUTH right?", uri_header)
            uri = original_uri or uri
        normalize_path(uri)  # a malformed encoding is a 400 (MalformedPath) even where no route is to match
        return method.upper(), uri  # as given: the route table reads it as servers may, normalized and not

    def rate_limit_denied_status(self) -> int:
        """429, or the 4xx (ASCII digits) a trusted nginx asks for: its auth_request takes only 401 and 403
        as "deny", so its config asks for 403 and answers the client a 429 itself."""
        if not self.deny_status_asked:
            return 429
        asked = self.request.headers.get(DENY_STATUS_HEADER, "").strip()
        if len(asked) == 3 and asked.isascii() and asked.isdigit() and asked[0] == "4" and self.from_trusted_proxy():
            return int(asked)
        return 429

    def compute_etag(self) -> None:
        """No ETag, so no 304: a proxy takes only a 2xx as "allowed" (``If-None-Match: *`` made nginx fail open)."""
        return None

    def allow(self, *args: str) -> None:
        """The original request may go on: 200, no body (the rate-limit headers are set)."""
        self.set_status(200)

    get = head = post = put = patch = delete = options = allow
