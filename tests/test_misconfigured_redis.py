"""A Redis that cannot serve for a reason of configuration: each case against a real server (ACL users,
``--rename-command``, TLS, a listening socket that is not Redis), named in words a user can act on; the
service still starts, says degraded from its first request and never logs a traceback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.redis_process import RedisProcess, free_port
from tests.service_process import ServiceProcess
from tests.test_tls import make_certificates
from tornado_rate_limiter.limiter import (
    BackendError,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    LimiterMetrics,
    Policy,
    RateLimiter,
    RedisBackend,
)


class NotRedis:
    """A listening socket that answers every connection like a web server: not the Redis protocol."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test module is done
                return
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.listener.close()


@dataclass
class Servers:
    plain: RedisProcess  # no password; a hash at rl:probe, the key the readiness probe decides on
    acl: RedisProcess  # default user with a password; users "noset" (-set) and "noevalsha" (-evalsha)
    renamed: RedisProcess  # EVALSHA renamed away
    tls: RedisProcess  # TLS only, a certificate from a CA of its own
    not_redis: NotRedis


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    certificates = make_certificates(tmp_path_factory.mktemp("tls"))
    tls_options = ("--tls-cert-file", str(certificates["server.crt"]),
                   "--tls-key-file", str(certificates["server.key"]),
                   "--tls-ca-cert-file", str(certificates["ca.crt"]), "--tls-auth-clients", "no")  # fmt: skip
    plain = RedisProcess().start()
    acl = RedisProcess().start()
    renamed = RedisProcess(extra_args=("--rename-command", "EVALSHA", "")).start()
    tls = RedisProcess(extra_args=tls_options, tls=True).start()
    not_redis = NotRedis()
    plain.client().hset("rl:probe", "not", "a bucket")
    admin = acl.client()
    admin.execute_command("ACL", "SETUSER", "noset", "on", ">pw", "~*", "+@all", "-set")
    admin.execute_command("ACL", "SETUSER", "noevalsha", "on", ">pw", "~*", "+@all", "-evalsha")
    admin.execute_command("ACL", "SETUSER", "default", "on", ">secret")
    yield Servers(plain, acl, renamed, tls, not_redis)
    not_redis.close()
    for server in (plain, acl, renamed, tls):
        server.stop()


# (id, the REDIS_URL for the servers, the words the cause is named with)
CASES: list[tuple[str, Callable[[Servers], str], str]] = [
    ("cluster-node-down", lambda s: f"redis+cluster://127.0.0.1:{free_port()}", "connection refused"),
    ("cluster-url-to-plain-redis", lambda s: f"redis+cluster://127.0.0.1:{s.plain.port}", "not a cluster"),
    ("sentinel-url-to-plain-redis", lambda s: f"redis+sentinel://127.0.0.1:{s.plain.port}/mymaster", "not a sentinel"),
    ("db-out-of-range", lambda s: f"redis://127.0.0.1:{s.plain.port}/99", "DB index out of range"),
    ("user-without-set", lambda s: f"redis://noset:pw@127.0.0.1:{s.acl.port}/0", "may not run SET (grant"),
    ("user-without-evalsha", lambda s: f"redis://noevalsha:pw@127.0.0.1:{s.acl.port}/0", "may not run EVALSHA"),
    ("wrongtype-at-probe-key", lambda s: f"redis://127.0.0.1:{s.plain.port}/0", "another type (read by GET)"),
    ("evalsha-renamed", lambda s: f"redis://127.0.0.1:{s.renamed.port}/0", "the server has no command EVALSHA"),
    ("not-redis", lambda s: f"redis://127.0.0.1:{s.not_redis.port}/0", "protocol error"),
    ("wrong-password", lambda s: f"redis://default:wrong@127.0.0.1:{s.acl.port}/0", "authentication failed"),
    ("no-password", lambda s: f"redis://127.0.0.1:{s.acl.port}/0", "wants a password and the URL gives none"),
    ("unix-socket-missing", lambda s: f"unix://{s.plain.workdir}/no-such.sock", "no such socket file"),
    ("tls-to-plain-redis", lambda s: f"rediss://127.0.0.1:{s.plain.port}/0", "does not speak TLS"),
    ("plain-to-tls-redis", lambda s: f"redis://127.0.0.1:{s.tls.port}/0", "if it expects TLS, use rediss://"),
    ("untrusted-certificate", lambda s: f"rediss://127.0.0.1:{s.tls.port}/0", "TLS certificate not trusted"),
    ("connection-refused", lambda s: f"redis://127.0.0.1:{free_port()}/0", "connection refused"),
    ("unknown-host", lambda s: "redis://nosuchhost.invalid:6379/0", "the host name does not resolve"),
]  # fmt: skip
CASE_IDS = [case[0] for case in CASES]


class TestConnect:
    @pytest.mark.parametrize(("name", "url_for", "cause"), CASES, ids=CASE_IDS)
    def test_connect_names_the_cause(
        self, servers: Servers, name: str, url_for: Callable[[Servers], str], cause: str
    ) -> None:
        """RedisBackend.connect() raises BackendError whose one-line message names the cause."""

        async def scenario() -> str:
            async with RedisBackend.from_url(url_for(servers)) as backend:
                with pytest.raises(BackendError) as raised:
                    await backend.connect()
                return str(raised.value)

        message = asyncio.run(scenario())
        assert cause in message and "\n" not in message, message

    def test_a_limiter_that_fails_to_connect_is_degraded_at_once(self, servers: Servers) -> None:
        """RateLimiter.connect() failing opens the breaker: health says degraded before any request fails,
        and the first decision is the fallback's."""

        async def scenario() -> None:
            limiter = RateLimiter(
                RedisBackend.from_url(f"redis://127.0.0.1:{servers.plain.port}/99"), metrics=LimiterMetrics()
            )
            async with limiter:
                assert limiter.breaker.state is BreakerState.OPEN
                assert limiter.health()["degraded"] is True
                assert (await limiter.acquire("k", Policy(5, 1.0, name="p"))).degraded

        asyncio.run(scenario())


class TestFallbackShare:
    def test_a_policy_the_share_cannot_scale_is_used_whole_rather_than_failing(self) -> None:
        """Redis down, a share of 1e-6 and 1e-4 tokens per second (scaled, 1e10 s a token: no Policy): the
        fallback decides with the policy unscaled (it used to raise ValueError, a 500 for every request)."""

        async def scenario() -> None:
            backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
            async with RateLimiter(backend, fallback_share=1e-6, metrics=LimiterMetrics()) as limiter:
                decision = await limiter.acquire("k", Policy(60, 1e-4, name="slow"))  # scaled: 1e10 s a token
            assert decision.degraded and decision.allowed and decision.limit == 60

        asyncio.run(scenario())

    def test_a_share_below_one_in_a_million_is_refused(self) -> None:
        """RateLimiter(fallback_share=1e-7): ValueError naming the field, at construction."""
        with pytest.raises(ValueError, match="fallback_share"):
            RateLimiter(RedisBackend.from_url("redis://127.0.0.1:1/0"), fallback_share=1e-7)


class TestAtRunTime:
    def test_an_acl_that_stops_the_script_opens_the_breaker(self) -> None:
        """`ACL SETUSER default -set` while serving: NOPERM inside the script is an outage (the breaker
        opens, health says degraded, errors are counted); granted again, the probe closes the breaker."""
        server = RedisProcess().start()

        async def scenario() -> None:
            config = BreakerConfig(consecutive_failures=3, cooldown=0.05, max_cooldown=0.05)
            metrics = LimiterMetrics()
            limiter = RateLimiter(
                RedisBackend.from_url(server.url, timeout=2.0), breaker=CircuitBreaker(config), metrics=metrics
            )
            async with limiter:
                policy = Policy(100, 1.0, name="acl")
                assert not (await limiter.acquire("k", policy)).degraded
                server.client().execute_command("ACL", "SETUSER", "default", "-set")
                decisions = [await limiter.acquire("k", policy) for _ in range(3)]
                assert all(decision.degraded and decision.allowed for decision in decisions)
                assert limiter.breaker.state is BreakerState.OPEN and limiter.health()["degraded"] is True
                assert metrics.registry.get_sample_value("rate_limit_errors_total") == 3
                server.client().execute_command("ACL", "SETUSER", "default", "+set")
                await asyncio.sleep(0.1)  # past the cool-down: the next request starts the probe
                await limiter.acquire("k", policy)
                for _ in range(100):
                    if limiter.breaker.state is BreakerState.CLOSED:
                        break
                    await asyncio.sleep(0.02)
                assert not (await limiter.acquire("k", policy)).degraded

        try:
            asyncio.run(scenario())
        finally:
            server.stop()


def get_json(url: str) -> tuple[dict[str, object], dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read()), {name.lower(): value for name, value in response.headers.items()}


@pytest.mark.process
class TestServiceStarts:
    @pytest.mark.parametrize(("name", "url_for", "cause"), CASES, ids=CASE_IDS)
    def test_the_service_serves_degraded_and_logs_the_cause_in_one_line(
        self, servers: Servers, name: str, url_for: Callable[[Servers], str], cause: str
    ) -> None:
        """The service starts whatever keeps Redis from serving: /health says degraded from the first
        request, requests are served by the fallback, and the log names the cause in one line, no traceback."""
        service = ServiceProcess({"REDIS_URL": url_for(servers)}).start()
        try:
            health, _ = get_json(service.url + "/health")
            assert health["degraded"] is True  # the breaker may read half-open once its cool-down passed
            body, headers = get_json(service.url + "/api/whoami")
            assert body == {"identity": "ip:127.0.0.1"} and headers["x-ratelimit-degraded"] == "true"
            log = service.log()
        finally:
            service.stop()
        lines = [line for line in log.splitlines() if "Redis is not ready" in line]
        assert len(lines) == 1 and cause in lines[0], log
        assert "Traceback" not in log, log
