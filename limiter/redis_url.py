"""Redis clients from URLs: one server, a Cluster, or a Sentinel-managed master, TLS or not.

    redis://[user:pass@]host:port[/db]       rediss://... (TLS)       unix:///path/redis.sock
    redis+cluster://[user:pass@]h1:p1,h2:p2
    redis+sentinel://[:pass@]h1:p1,h2:p2/service[/db]

(the ``redis+cluster`` and ``redis+sentinel`` forms are those of the ``limits`` library). Query
parameters redis-py understands (``ssl_cert_reqs=none``, ``ssl_ca_certs=...``) work in every form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster",)
SENTINEL_SCHEMES = ("redis+sentinel",)
SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES

RedisClient = aioredis.Redis | RedisCluster
# Query parameters passed on to redis-py's connections: anything else would reach them as an unexpected
# keyword argument, a TypeError at the first connection.
QUERY_PARAMETERS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {
    "client_name", "lib_name", "lib_version", "encoding", "encoding_errors", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_ciphers",
}  # fmt: skip
CONNECT_BACKSTOP = 1.0  # seconds: the longest a connect may take, whatever deadline is around it

__all__ = ["SCHEMES", "RedisClient", "RedisCluster", "check_url", "client_from_url", "redacted", "uses_tls"]


def check_url(url: str) -> None:
    """Raise ValueError, saying what is wrong, unless ``url`` is a Redis URL this module can use."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        message = f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
        raise ValueError(message)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - QUERY_PARAMETERS)
    if unknown:
        message = f"unknown query parameter {unknown[0]!r} (known: {', '.join(sorted(QUERY_PARAMETERS))})"
        raise ValueError(message)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket's path")
        parse_url(url)  # checks the values of the query parameters
        return
    hosts = _hosts(parts.netloc)
    if parts.scheme in SINGLE_SCHEMES and len(hosts) != 1:
        raise ValueError("a redis:// URL names one host; use redis+cluster:// or redis+sentinel:// for several")
    if parts.scheme in SENTINEL_SCHEMES:
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise ValueError("a redis+sentinel:// URL needs the service name as its path: /mymaster")
        _check_db(db)
    elif parts.scheme in CLUSTER_SCHEMES:
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: no path after the hosts")
    else:
        _check_db(parts.path.strip("/"))
    if parts.scheme != "rediss" and any(name.startswith("ssl_") for name in query):  # by name: not in values
        raise ValueError("ssl_* parameters need a rediss:// URL (TLS with Cluster or Sentinel is not supported yet)")
    _check_tls_parameters(query)
    if parts.scheme in CLUSTER_SCHEMES and query.get("db", ["0"]) != ["0"]:
        raise ValueError("a Redis Cluster has database 0 only: no ?db=")
    parse_url(_single_host_url(url))  # checks the values of the query parameters


def _check_tls_parameters(query: dict[str, list[str]]) -> None:
    """ssl_cert_reqs among redis-py's words, and the files named by the ssl_* parameters there to read."""
    for reqs in query.get("ssl_cert_reqs", []):
        if reqs not in ("none", "optional", "required"):
            message = f"ssl_cert_reqs must be none, optional or required, got {reqs!r}"
            raise ValueError(message)
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        for path in query.get(name, []):
            if not Path(path).is_file():
                message = f"{name}={path} is no file this process can read"
                raise ValueError(message)


def _check_db(db: str) -> None:
    """A URL's database path: empty, or a whole number (redis-py would silently ignore /abc)."""
    if db and not (db.isascii() and db.isdigit()):
        message = f"the database must be a whole number such as /0, got /{db}"
        raise ValueError(message)


def redacted(url: str) -> str:
    """``url`` with its password (in the credentials or as ``?password=``) replaced by ``***``, fit for a log."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in credentials:
        parts = parts._replace(netloc=f"{credentials.partition(':')[0]}:***@{hosts}")
    query = [(name, "***" if name == "password" else value) for name, value in parse_qsl(parts.query, True)]
    return parts._replace(query=urlencode(query, safe="*/")).geturl()


def client_from_url(url: str, *, timeout: float, max_connections: int, verify_tls: bool = True) -> RedisClient:
    """A redis.asyncio client for ``url``: a short connect timeout, redis-py's retries off.

    ``verify_tls=False`` accepts any server certificate on ``rediss://`` (as a Heroku-style Redis with a
    self-signed certificate needs); it is the same as ``?ssl_cert_reqs=none`` in the URL.
    """
    check_url(url)
    scheme = urlsplit(url).scheme
    if scheme == "rediss" and not verify_tls:
        url = _with_query(url, "ssl_cert_reqs=none")
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url, options, max_connections)
    # RedisBackend bounds every call with a deadline of its own; a socket timeout would add an asyncio
    # timer to every reply read (a tenth of a pipelined decision's cost) and bound nothing more.
    options["socket_timeout"] = None
    # Connecting happens inside those deadlines too, which count only the time the event loop had
    # (limiter/deadline.py); redis-py's own connect timeout counts wall time, so a TLS handshake on a busy
    # process failed at 50 ms as "timed out". It stays as a backstop only, at the readiness deadline.
    options["socket_connect_timeout"] = max(timeout, CONNECT_BACKSTOP)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(url, options, timeout)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,
        **options,  # the caller's deadline bounds the wait
    )
    return aioredis.Redis(connection_pool=pool)


def uses_tls(client: RedisClient) -> bool:
    """Whether ``client`` connects with TLS (a one-server or Sentinel client; Cluster TLS is not supported)."""
    pool = getattr(client, "connection_pool", None)  # a Cluster client has none
    return pool is not None and issubclass(pool.connection_class, SSLConnection)


def _cluster(url: str, options: dict[str, Any], max_connections: int) -> RedisCluster:
    connect = _connect_options(url)
    connect.pop("db", None)
    nodes = [ClusterNode(host, port) for host, port in _hosts(urlsplit(url).netloc)]
    return RedisCluster(
        startup_nodes=nodes,
        max_connections=max_connections,
        **options,  # its retry=0 is the cluster client's policy for cluster errors too: the breaker decides
        **connect,
    )


def _sentinel(url: str, options: dict[str, Any], timeout: float) -> aioredis.Redis:
    parts = urlsplit(url)
    service, _, db = parts.path.strip("/").partition("/")
    connect = _connect_options(url)
    connect.pop("db", None)
    if db:
        connect["db"] = int(db)
    sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}  # asked outside a deadline
    if "password" in connect:
        sentinel_options["password"] = connect["password"]
    sentinel = Sentinel(_hosts(parts.netloc), sentinel_kwargs=sentinel_options, **options, **connect)
    master: aioredis.Redis = sentinel.master_for(unquote(service))
    return master


def _with_query(url: str, parameter: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{parameter}" if parts.query else parameter
    return parts._replace(query=query).geturl()


def _connect_options(url: str) -> dict[str, Any]:
    """Credentials, TLS and query options of a multi-host URL, as redis-py reads them for one host."""
    parsed: dict[str, Any] = dict(parse_url(_single_host_url(url)))
    parsed.pop("host", None)
    parsed.pop("port", None)
    return parsed


def _single_host_url(url: str) -> str:
    """``url`` rewritten as a plain redis:// or rediss:// URL of its first host (for parse_url)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url
    scheme = "rediss" if parts.scheme == "rediss" else "redis"
    credentials, _, hosts = parts.netloc.rpartition("@")
    first = hosts.split(",")[0]
    netloc = f"{credentials}@{first}" if credentials else first
    path = "" if parts.scheme in SENTINEL_SCHEMES else parts.path
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def _hosts(netloc: str) -> list[tuple[str, int]]:
    """``h1:p1,[::1]:p2`` as (host, port) pairs; port 6379 (26379 for sentinels is not guessed)."""
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        parts = urlsplit(f"//{item}")
        if not parts.hostname:
            message = f"{item!r} is not host:port"
            raise ValueError(message)
        hosts.append((parts.hostname, parts.port or 6379))
    return hosts
