"""Settings from the environment (12-factor): every variable, its default and its check, in one place."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from tornado_rate_limiter.app.connections import default_max_connections
from tornado_rate_limiter.handlers.forward_auth import ORIGINAL_REQUEST_HEADERS
from tornado_rate_limiter.handlers.ratelimited import FORWARDED_HEADERS, ROUTE_CASES
from tornado_rate_limiter.limiter import Policy
from tornado_rate_limiter.limiter.algorithms import BY_NAME, AnyPolicy
from tornado_rate_limiter.limiter.algorithms.window import MIN_WINDOW
from tornado_rate_limiter.limiter.breaker import BreakerConfig
from tornado_rate_limiter.limiter.bucket import MAX_REFILL_SECONDS
from tornado_rate_limiter.limiter.limiter import MIN_FALLBACK_SHARE
from tornado_rate_limiter.limiter.redis_url import check_url

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# RATE_LIMIT_ALGORITHM and its USER_ form: the algorithm's name, and the variables that shape its policy
# (RATE_LIMIT_CAPACITY for a token bucket's capacity, ...).
ALGORITHM_CHOICES = tuple(BY_NAME)
_SHAPE_VARIABLES = {name: tuple(field.upper() for field in algorithm.fields) for name, algorithm in BY_NAME.items()}
# The variables that make the policies when there is no policy file.
_POLICY_VARIABLES = tuple(
    f"RATE_LIMIT_{family}{shape}"
    for family in ("", "USER_")
    for shape in ("ALGORITHM", *sorted({shape for shapes in _SHAPE_VARIABLES.values() for shape in shapes}))
)

# ACCESS_LOG: every request, server errors (5xx) only, or none. Not "all" by default: one log line per
# request, 429s included, costs a tenth of a request's time and floods the log in an attack.
ACCESS_LOG_CHOICES = ("all", "errors", "off")
# RATE_LIMIT_FORWARD_AUTH: the proxy in front of /check, which says which headers carry the original request.
FORWARD_AUTH_CHOICES = tuple(ORIGINAL_REQUEST_HEADERS)
# RATE_LIMIT_ROUTE_CASE: whether the route table's paths match letters of either case.
ROUTE_CASE_CHOICES = ROUTE_CASES


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use; the message names it."""


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _fail(name: str, raw: str, expected: str) -> SettingsError:
    return SettingsError(f"{name}={raw!r} is not valid: expected {expected}")


def _integer(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _raw(environ, name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise _fail(name, raw, f"a whole number from {low} to {high}")
    return int(raw)


def _number(environ: Mapping[str, str], name: str, default: float, low: float, high: float, unit: str) -> float:
    """A number in (low, high] (a positive low bound is exclusive: rates and times of 0 make no sense)."""
    raw = _raw(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value <= high):
        raise _fail(name, raw, f"{unit} greater than {low:g} and at most {high:g}")
    return value


def _share(environ: Mapping[str, str], name: str, default: float) -> float:
    """A share in (0, 1], as a decimal (0.25) or a fraction (1/4, as for one of N processes)."""
    raw = _raw(environ, name)
    if raw is None:
        return default
    numerator, slash, denominator = raw.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(raw)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not (math.isfinite(value) and MIN_FALLBACK_SHARE <= value <= 1):
        raise _fail(name, raw, f"a share from {MIN_FALLBACK_SHARE:g} to 1, such as 0.25 or 1/4")
    return value


def _rate(environ: Mapping[str, str], name: str, default: float) -> float:
    return _number(environ, name, default, 0, 1e9, "a number of tokens per second, such as 0.5 or 10,")


def _window(environ: Mapping[str, str], name: str, default: float) -> float:
    window = _number(environ, name, default, 0, MAX_REFILL_SECONDS, "a number of seconds, such as 60 or 86400,")
    if window < MIN_WINDOW:
        raise _fail(name, environ[name].strip(), f"a number of seconds from {MIN_WINDOW:g} to {MAX_REFILL_SECONDS:g}")
    return window


def _choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(environ, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise _fail(name, raw, " or ".join(choices))
    return raw.lower()


def _networks(environ: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    raw = _raw(environ, name)
    if raw is None:
        return ()
    networks = []
    for part in raw.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise _fail(name, raw, "a comma-separated list of addresses or CIDRs, such as 10.0.0.0/8,::1") from None
    return tuple(networks)


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(environ, name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise _fail(name, raw, "true or false")
    return raw.lower() in ("true", "1", "yes")


def _redis_url(environ: Mapping[str, str]) -> str | None:
    """REDIS_TLS_URL when set (Heroku sets both, the TLS one being the one to use), else REDIS_URL."""
    name = "REDIS_TLS_URL" if _raw(environ, "REDIS_TLS_URL") else "REDIS_URL"
    raw = _raw(environ, name)
    if raw is None:
        return None
    try:
        check_url(raw)
    except ValueError as exc:  # the URL itself is not echoed: it may hold a password
        message = f"{name} is not valid: {exc} (expected a URL such as redis://host:6379/0)"
        raise SettingsError(message) from None
    return raw


def _algorithm(environ: Mapping[str, str], family: str, default: str) -> str:
    """RATE_LIMIT_{family}ALGORITHM, refusing the variables of another algorithm's shape: a limit that is
    set but silently unused is worse than a start that says so."""
    name = f"RATE_LIMIT_{family}ALGORITHM"
    algorithm = _choice(environ, name, default, ALGORITHM_CHOICES)
    chosen_by = name if _raw(environ, name) is not None or not family else f"{name} (RATE_LIMIT_ALGORITHM's)"
    for other in {shape for shapes in _SHAPE_VARIABLES.values() for shape in shapes} - set(_SHAPE_VARIABLES[algorithm]):
        variable = f"RATE_LIMIT_{family}{other}"
        if _raw(environ, variable) is not None:
            wanted = " and ".join(f"RATE_LIMIT_{family}{shape}" for shape in _SHAPE_VARIABLES[algorithm])
            message = (
                f"{variable} is set, but {chosen_by} is {algorithm}, which uses {wanted} instead: "
                f"unset {variable} or choose the algorithm it belongs to"
            )
            raise SettingsError(message)
    return algorithm


def _policy_file(environ: Mapping[str, str]) -> str | None:
    """RATE_LIMIT_CONFIG, refusing the variables of the policies it replaces (the file is read later, at
    start, where its own errors name its lines)."""
    path = _raw(environ, "RATE_LIMIT_CONFIG")
    if path is None:
        return None
    for variable in _POLICY_VARIABLES:
        if _raw(environ, variable) is not None:
            message = (
                f"{variable} is set, but RATE_LIMIT_CONFIG={path!r} gives the policies: unset {variable} or "
                "write the limit in the policy file"
            )
            raise SettingsError(message)
    return path


def _check_interval(environ: Mapping[str, str]) -> float:
    """RATE_LIMIT_CONFIG_INTERVAL: seconds between checks of the policy file, or 0 for SIGHUP only."""
    name = "RATE_LIMIT_CONFIG_INTERVAL"
    raw = _raw(environ, name)
    if raw is None:
        return Settings.policy_check_interval
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value == 0 or 0.1 <= value <= 3600):  # checks more often than 10 a second only burn CPU
        raise _fail(name, raw, "0 (reload on SIGHUP only) or a number of seconds from 0.1 to 3600")
    return value


def _max_connections(environ: Mapping[str, str]) -> int | None:
    """MAX_CONNECTIONS, at most what the descriptor limit leaves (raise `ulimit -n` to allow more)."""
    if _raw(environ, "MAX_CONNECTIONS") is None:
        return None
    available = default_max_connections()
    return _integer(environ, "MAX_CONNECTIONS", available, 1, available)


def _secret(environ: Mapping[str, str], name: str) -> str | None:
    raw = _raw(environ, name)
    if raw is not None and len(raw.encode("utf-8")) < 32:
        # Not echoed back: it is a secret, even a bad one.
        message = f"{name} is not valid: expected at least 32 bytes (an HS256 key shorter than its hash is weak)"
        raise SettingsError(message)
    return raw


# Every variable in one line each, for `--help` (the README's settings table says more; a test holds the
# two to the same names).
SETTINGS_HELP = (
    ("PORT", "8080", "TCP port to listen on (1-65535)"),
    ("HOST", "0.0.0.0", "address to bind"),
    ("REDIS_URL", "unset", "redis://, rediss://, unix://, redis+cluster://, redis+sentinel://; unset: in memory"),
    ("REDIS_TLS_URL", "unset", "preferred over REDIS_URL when both are set"),
    ("REDIS_TLS_VERIFY", "true", "false accepts a self-signed certificate on rediss://"),
    ("RATE_LIMIT_CONFIG", "unset", "a policy file (TOML): tiers, routes, several limits; replaces the 10 below"),
    ("RATE_LIMIT_CONFIG_INTERVAL", "2", "seconds between checks of the policy file's content; 0: on SIGHUP only"),
    ("RATE_LIMIT_ALGORITHM", "token_bucket", "token_bucket, sliding_window or fixed_window for client addresses"),
    ("RATE_LIMIT_CAPACITY", "60", "token bucket: burst of each client address (ip:), whole tokens"),
    ("RATE_LIMIT_REFILL_RATE", "1.0", "token bucket: tokens per second each address gets back"),
    ("RATE_LIMIT_LIMIT", "60", "windows: requests each address may make per window, whole units"),
    ("RATE_LIMIT_WINDOW", "60", "windows: the window in seconds (aligned to the Unix epoch, UTC)"),
    ("RATE_LIMIT_USER_ALGORITHM", "as for addresses", "the algorithm for authenticated users (user:)"),
    ("RATE_LIMIT_USER_CAPACITY", "120", "token bucket: burst of each authenticated user"),
    ("RATE_LIMIT_USER_REFILL_RATE", "2.0", "token bucket: tokens per second each user gets back"),
    ("RATE_LIMIT_USER_LIMIT", "120", "windows: requests each user may make per window"),
    ("RATE_LIMIT_USER_WINDOW", "60", "windows: the users' window in seconds"),
    ("RATE_LIMIT_FAILURE_STRATEGY", "open", "when Redis fails: open (decide in memory) or closed (429)"),
    ("RATE_LIMIT_TRUSTED_PROXIES", "unset", "addresses or CIDRs whose forwarding header is believed"),
    ("RATE_LIMIT_TRUSTED_HOPS", "0", "number of proxies in front that append the address they saw"),
    ("RATE_LIMIT_FORWARDED_HEADER", "X-Forwarded-For", "X-Forwarded-For or Forwarded"),
    ("RATE_LIMIT_FORWARD_AUTH", "nginx", "the proxy asking /check: nginx, traefik or envoy (whose headers are read)"),
    ("RATE_LIMIT_ROUTE_CASE", "sensitive", "route paths match letters of one case (sensitive) or either"),
    ("RATE_LIMIT_IPV6_PREFIX", "64", "IPv6 clients are grouped per network of this many bits (32-128)"),
    ("JWT_SECRET", "unset", "HS256 key (32+ bytes) for Authorization: Bearer tokens"),
    ("RATE_LIMIT_FALLBACK_SHARE", "1", "share (0-1], or 1/N, of each limit a process allows while Redis is down"),
    ("RATE_LIMIT_REDIS_TIMEOUT", "0.05", "seconds one decision may wait for Redis"),
    ("RATE_LIMIT_BREAKER_FAILURES", "5", "Redis failures in a row that open the circuit breaker"),
    ("RATE_LIMIT_BREAKER_COOLDOWN", "2", "seconds the open breaker makes no Redis call before a probe"),
    ("RATE_LIMIT_BREAKER_MAX_COOLDOWN", "30", "cap of the cool-down, which doubles with each failed probe"),
    ("ACCESS_LOG", "errors", "requests logged: all, errors (5xx only) or off"),
    ("MAX_CONNECTIONS", "unset", "open client connections at most; unset: ulimit -n less 64 kept in reserve"),
    ("HEADER_TIMEOUT", "10", "seconds a new connection has to send its request head"),
    ("IDLE_TIMEOUT", "60", "seconds a keep-alive connection may stay idle between requests"),
    ("BODY_TIMEOUT", "15", "seconds a request body has to arrive"),
    ("RESPONSE_TIMEOUT", "30", "seconds from a request's head until its response is sent (read by the client)"),
    ("MAX_BODY_BYTES", "65536", "the largest request body accepted (400 beyond, unread)"),
    ("MAX_HEADERS", "100", "header lines a request head may have (431 beyond, before they are parsed)"),
    ("MAX_HEADER_BYTES", "16384", "bytes a request head may have, its request line included (431 beyond)"),
)


@dataclass(frozen=True)
class Settings:
    """What the service is told by its environment. Defaults are those of an unset variable."""

    port: int = 8080  # PORT
    host: str = "0.0.0.0"  # HOST
    redis_url: str | None = None  # REDIS_TLS_URL or REDIS_URL; unset: the in-memory backend
    redis_tls_verify: bool = True  # REDIS_TLS_VERIFY: false accepts a self-signed certificate
    ip_algorithm: str = "token_bucket"  # RATE_LIMIT_ALGORITHM: token_bucket, sliding_window or fixed_window
    ip_capacity: int = 60  # RATE_LIMIT_CAPACITY: burst per client address
    ip_refill_rate: float = 1.0  # RATE_LIMIT_REFILL_RATE: tokens per second per client address
    ip_limit: int = 60  # RATE_LIMIT_LIMIT: requests per window per client address
    ip_window: float = 60.0  # RATE_LIMIT_WINDOW: seconds
    user_algorithm: str = "token_bucket"  # RATE_LIMIT_USER_ALGORITHM; unset: RATE_LIMIT_ALGORITHM's
    user_capacity: int = 120  # RATE_LIMIT_USER_CAPACITY: burst per authenticated user
    user_refill_rate: float = 2.0  # RATE_LIMIT_USER_REFILL_RATE: tokens per second per user
    user_limit: int = 120  # RATE_LIMIT_USER_LIMIT: requests per window per user
    user_window: float = 60.0  # RATE_LIMIT_USER_WINDOW: seconds
    policy_file: str | None = None  # RATE_LIMIT_CONFIG: a policy file; unset: the policies above
    policy_check_interval: float = 2.0  # RATE_LIMIT_CONFIG_INTERVAL: seconds between content checks; 0: none
    failure_strategy: str = "open"  # RATE_LIMIT_FAILURE_STRATEGY: "open" or "closed" when Redis fails
    trusted_proxies: tuple[IPNetwork, ...] = ()  # RATE_LIMIT_TRUSTED_PROXIES
    trusted_hops: int = 0  # RATE_LIMIT_TRUSTED_HOPS
    forwarded_header: str = "x-forwarded-for"  # RATE_LIMIT_FORWARDED_HEADER: or "forwarded"
    forward_auth: str = "nginx"  # RATE_LIMIT_FORWARD_AUTH: "nginx", "traefik" or "envoy", the proxy asking /check
    route_case: str = "sensitive"  # RATE_LIMIT_ROUTE_CASE: "sensitive" or "insensitive"
    ipv6_prefix: int = 64  # RATE_LIMIT_IPV6_PREFIX
    jwt_secret: str | None = None  # JWT_SECRET; unset: every client is anonymous
    fallback_share: float = 1.0  # RATE_LIMIT_FALLBACK_SHARE: share of each limit a process allows alone
    redis_timeout: float = 0.05  # RATE_LIMIT_REDIS_TIMEOUT: seconds a decision may wait for Redis
    breaker_failures: int = 5  # RATE_LIMIT_BREAKER_FAILURES: failures in a row that open the breaker
    breaker_cooldown: float = 2.0  # RATE_LIMIT_BREAKER_COOLDOWN: seconds without Redis calls once open
    breaker_max_cooldown: float = 30.0  # RATE_LIMIT_BREAKER_MAX_COOLDOWN: cap of the growing cool-down
    access_log: str = "errors"  # ACCESS_LOG: which requests are logged: "all", "errors" (5xx) or "off"
    max_connections: int | None = None  # MAX_CONNECTIONS; None: what the descriptor limit leaves (ulimit -n - 64)
    header_timeout: float = 10.0  # HEADER_TIMEOUT: seconds a new connection has to send a request head
    idle_timeout: float = 60.0  # IDLE_TIMEOUT: seconds a keep-alive connection may idle between requests
    body_timeout: float = 15.0  # BODY_TIMEOUT: seconds a request body has to arrive
    response_timeout: float = 30.0  # RESPONSE_TIMEOUT: seconds from a request's head to its response sent
    max_body_bytes: int = 65536  # MAX_BODY_BYTES: the largest request body accepted (400 beyond)
    max_headers: int = 100  # MAX_HEADERS: header lines of a request head at most (431 beyond)
    max_header_bytes: int = 16384  # MAX_HEADER_BYTES: bytes of a request head at most (431 beyond)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read and check every variable; raises SettingsError naming the first bad one."""
        policy_file = _policy_file(environ)  # first: with a policy file, the policy variables are refused as such
        ip_algorithm = _algorithm(environ, "", cls.ip_algorithm)
        return cls(
            port=_integer(environ, "PORT", cls.port, 1, 65535),
            host=(_raw(environ, "HOST") or cls.host).removeprefix("[").removesuffix("]"),  # [::1] is ::1
            redis_url=_redis_url(environ),
            redis_tls_verify=_boolean(environ, "REDIS_TLS_VERIFY", cls.redis_tls_verify),
            ip_algorithm=ip_algorithm,
            ip_capacity=_integer(environ, "RATE_LIMIT_CAPACITY", cls.ip_capacity, 1, 10**9),
            ip_refill_rate=_rate(environ, "RATE_LIMIT_REFILL_RATE", cls.ip_refill_rate),
            ip_limit=_integer(environ, "RATE_LIMIT_LIMIT", cls.ip_limit, 1, 10**9),
            ip_window=_window(environ, "RATE_LIMIT_WINDOW", cls.ip_window),
            user_algorithm=_algorithm(environ, "USER_", ip_algorithm),
            user_capacity=_integer(environ, "RATE_LIMIT_USER_CAPACITY", cls.user_capacity, 1, 10**9),
            user_refill_rate=_rate(environ, "RATE_LIMIT_USER_REFILL_RATE", cls.user_refill_rate),
            user_limit=_integer(environ, "RATE_LIMIT_USER_LIMIT", cls.user_limit, 1, 10**9),
            user_window=_window(environ, "RATE_LIMIT_USER_WINDOW", cls.user_window),
            policy_file=policy_file,
            policy_check_interval=_check_interval(environ),
            failure_strategy=_choice(environ, "RATE_LIMIT_FAILURE_STRATEGY", cls.failure_strategy, ("open", "closed")),
            trusted_proxies=_networks(environ, "RATE_LIMIT_TRUSTED_PROXIES"),
            trusted_hops=_integer(environ, "RATE_LIMIT_TRUSTED_HOPS", cls.trusted_hops, 0, 16),
            forwarded_header=_choice(environ, "RATE_LIMIT_FORWARDED_HEADER", cls.forwarded_header, FORWARDED_HEADERS),
            forward_auth=_choice(environ, "RATE_LIMIT_FORWARD_AUTH", cls.forward_auth, FORWARD_AUTH_CHOICES),
            route_case=_choice(environ, "RATE_LIMIT_ROUTE_CASE", cls.route_case, ROUTE_CASE_CHOICES),
            ipv6_prefix=_integer(environ, "RATE_LIMIT_IPV6_PREFIX", cls.ipv6_prefix, 32, 128),
            jwt_secret=_secret(environ, "JWT_SECRET"),
            fallback_share=_share(environ, "RATE_LIMIT_FALLBACK_SHARE", cls.fallback_share),
            redis_timeout=_number(environ, "RATE_LIMIT_REDIS_TIMEOUT", cls.redis_timeout, 0, 10, "seconds"),
            breaker_failures=_integer(environ, "RATE_LIMIT_BREAKER_FAILURES", cls.breaker_failures, 1, 1000),
            breaker_cooldown=_number(environ, "RATE_LIMIT_BREAKER_COOLDOWN", cls.breaker_cooldown, 0, 3600, "seconds"),
            breaker_max_cooldown=_number(
                environ, "RATE_LIMIT_BREAKER_MAX_COOLDOWN", cls.breaker_max_cooldown, 0, 3600, "seconds"
            ),
            access_log=_choice(environ, "ACCESS_LOG", cls.access_log, ACCESS_LOG_CHOICES),
            max_connections=_max_connections(environ),
            header_timeout=_number(environ, "HEADER_TIMEOUT", cls.header_timeout, 0, 3600, "seconds"),
            idle_timeout=_number(environ, "IDLE_TIMEOUT", cls.idle_timeout, 0, 86400, "seconds"),
            body_timeout=_number(environ, "BODY_TIMEOUT", cls.body_timeout, 0, 3600, "seconds"),
            response_timeout=_number(environ, "RESPONSE_TIMEOUT", cls.response_timeout, 0, 3600, "seconds"),
            max_body_bytes=_integer(environ, "MAX_BODY_BYTES", cls.max_body_bytes, 0, 1 << 30),
            max_headers=_integer(environ, "MAX_HEADERS", cls.max_headers, 1, 10000),
            max_header_bytes=_integer(environ, "MAX_HEADER_BYTES", cls.max_header_bytes, 1024, 1 << 20),
        ).checked()

    def checked(self) -> Settings:
        """Checks that involve more than one variable, and of values given in code rather than read."""
        for value, name, choices in (
            (self.access_log, "ACCESS_LOG", ACCESS_LOG_CHOICES),
            (self.forward_auth, "RATE_LIMIT_FORWARD_AUTH", FORWARD_AUTH_CHOICES),
            (self.route_case, "RATE_LIMIT_ROUTE_CASE", ROUTE_CASE_CHOICES),
        ):
            if value not in choices:
                message = f"{name}={value!r} is not valid: expected {' or '.join(choices)}"
                raise SettingsError(message)
        for algorithm, name in (
            (self.ip_algorithm, "RATE_LIMIT_ALGORITHM"),
            (self.user_algorithm, "RATE_LIMIT_USER_ALGORITHM"),
        ):
            if algorithm not in ALGORITHM_CHOICES:
                message = f"{name}={algorithm!r} is not valid: expected {' or '.join(ALGORITHM_CHOICES)}"
                raise SettingsError(message)
        share = self.fallback_share
        for capacity, refill_rate, names in (
            (self.ip_capacity, self.ip_refill_rate, "RATE_LIMIT_CAPACITY and RATE_LIMIT_REFILL_RATE"),
            (self.user_capacity, self.user_refill_rate, "RATE_LIMIT_USER_CAPACITY and RATE_LIMIT_USER_REFILL_RATE"),
            (self.ip_capacity * share, self.ip_refill_rate * share, "RATE_LIMIT_FALLBACK_SHARE and the ip policy"),
            (
                self.user_capacity * share,
                self.user_refill_rate * share,
                "RATE_LIMIT_FALLBACK_SHARE and the user policy",
            ),
        ):
            try:
                Policy(capacity, refill_rate)
            except ValueError as exc:
                message = f"{names} are not valid together: {exc} (expected a larger refill rate)"
                raise SettingsError(message) from None
        if self.breaker_max_cooldown < self.breaker_cooldown:
            message = (
                f"RATE_LIMIT_BREAKER_MAX_COOLDOWN={self.breaker_max_cooldown:g} is not valid: "
                f"expected at least RATE_LIMIT_BREAKER_COOLDOWN ({self.breaker_cooldown:g})"
            )
            raise SettingsError(message)
        return self

    @property
    def connection_cap(self) -> int:
        """MAX_CONNECTIONS, or what the descriptor limit leaves when it is unset."""
        return self.max_connections or default_max_connections()

    @property
    def address(self) -> str:
        """HOST:PORT as one writes it in a URL (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def breaker_config(self) -> BreakerConfig:
        """The Redis circuit breaker's rules."""
        return BreakerConfig(
            consecutive_failures=self.breaker_failures,
            cooldown=self.breaker_cooldown,
            max_cooldown=self.breaker_max_cooldown,
        )

    @property
    def ip_policy(self) -> AnyPolicy:
        """The limit of each anonymous client."""
        return self._policy("ip")

    @property
    def user_policy(self) -> AnyPolicy:
        """The limit of each authenticated user."""
        return self._policy("user")

    def _policy(self, family: str) -> AnyPolicy:
        """The policy of ``family`` (ip or user): its algorithm's class, given the settings of its shape
        (capacity and refill_rate, or limit and window). SettingsError for an algorithm not known."""
        name = getattr(self, f"{family}_algorithm")
        algorithm = BY_NAME.get(name)
        if algorithm is None:  # Settings made in code, unchecked: never a token bucket by default
            variable = "RATE_LIMIT_ALGORITHM" if family == "ip" else "RATE_LIMIT_USER_ALGORITHM"
            message = f"{variable}={name!r} is not valid: expected {' or '.join(ALGORITHM_CHOICES)}"
            raise SettingsError(message)
        policy: AnyPolicy = algorithm.policy_type(
            *(getattr(self, f"{family}_{field}") for field in algorithm.fields), name=family
        )
        return policy
