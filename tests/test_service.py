"""The service over HTTP, on both backends: the 429 flow, headers, identities, routes and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPResponse

from tornado_rate_limiter.app import ServiceApplication, Settings
from tornado_rate_limiter.app.service import build_limiter
from tornado_rate_limiter.handlers import RateLimitedHandler
from tornado_rate_limiter.handlers.headers import QUOTA_EXCEEDED
from tornado_rate_limiter.limiter import RateLimiter

Fetch = Callable[..., Awaitable[HTTPResponse]]


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
    message = f"no sample {name}{labels or ''}"
    raise AssertionError(message)


class TestRateLimitFlow:
    @pytest.mark.gen_test
    async def test_allows_capacity_requests_then_answers_429(self, fetch: Fetch) -> None:
        """Three requests pass (capacity 3), the fourth gets 429 and never reaches the handler."""
        statuses = [(await fetch("/api/whoami")).code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]

    @pytest.mark.gen_test
    async def test_requests_answered_from_their_head_leave_nothing_in_flight(
        self, fetch: Fetch, app: ServiceApplication
    ) -> None:
        """Denied POSTs with bodies (answered before the body, their connection closed): the count of
        requests in flight that a shutdown waits on is back to 0, not below (it went to -1 per request)."""
        for _ in range(3):
            await fetch("/api/whoami")
        for _ in range(3):
            response = await fetch("/api/echo", method="POST", body="hello")
            assert response.code in (429, 599)  # the client may see the close before the answer
        await asyncio.sleep(0.1)  # the closes reach the server
        assert app.in_flight == 0

    @pytest.mark.gen_test
    async def test_every_limited_response_carries_the_rate_limit_headers(self, fetch: Fetch) -> None:
        """Allowed or denied, the draft IETF fields and the X-RateLimit-* fields are there and agree."""
        responses = [await fetch("/api/whoami") for _ in range(4)]
        for response, remaining in zip(responses, [2, 1, 0, 0], strict=True):
            headers = response.headers
            assert headers["RateLimit-Policy"] == '"ip";q=3;w=300'
            assert headers["RateLimit"] == f'"ip";r={remaining};t=100'
            assert headers["X-RateLimit-Limit"] == "3"
            assert headers["X-RateLimit-Remaining"] == str(remaining)
            assert 0 < int(headers["X-RateLimit-Reset"]) <= 300
            assert "X-RateLimit-Degraded" not in headers

    @pytest.mark.gen_test
    async def test_a_denial_is_a_problem_json_with_retry_after(self, fetch: Fetch) -> None:
        """The 429 says when to retry, in a header (whole seconds) and an RFC 9457 body."""
        for _ in range(3):
            await fetch("/api/whoami")
        denied = await fetch("/api/whoami")
        assert denied.code == 429
        assert denied.headers["Content-Type"] == "application/problem+json"
        assert 99 <= int(denied.headers["Retry-After"]) <= 100  # 1 token at 0.01/s
        problem = json.loads(denied.body)
        assert problem["type"] == QUOTA_EXCEEDED
        assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
        assert problem["retry_after"] == int(denied.headers["Retry-After"])
        assert problem["violated-policies"] == ["ip"]
        assert "ip" in problem["detail"]

    @pytest.mark.gen_test
    async def test_health_and_metrics_are_never_limited(self, fetch: Fetch) -> None:
        """/health and /metrics answer 200 however often they are asked, without rate-limit headers."""
        for _ in range(10):
            health, metrics = await fetch("/health"), await fetch("/metrics")
            assert (health.code, metrics.code) == (200, 200)
            assert "X-RateLimit-Limit" not in health.headers and "X-RateLimit-Limit" not in metrics.headers

    @pytest.mark.gen_test
    async def test_echo_is_limited_for_every_method(self, fetch: Fetch) -> None:
        """GET, POST, PUT, PATCH, DELETE on /api/echo all spend the same client's tokens."""
        get = await fetch("/api/echo?x=1")
        post = await fetch("/api/echo", method="POST", body="hello")
        put = await fetch("/api/echo", method="PUT", body="")
        patch = await fetch("/api/echo", method="PATCH", body="")
        assert [r.code for r in (get, post, put, patch)] == [200, 200, 200, 429]
        assert json.loads(get.body)["query"] == {"x": ["1"]}
        assert json.loads(post.body)["body"] == "hello"


class TestHealthAndMetrics:
    @pytest.mark.gen_test
    async def test_health_reports_backend_breaker_and_degradation(
        self, fetch: Fetch, service_limiter: RateLimiter
    ) -> None:
        """/health is JSON: status ok, which backend decides, the breaker state, whether degraded."""
        health = json.loads((await fetch("/health")).body)
        expected = {"status": "ok", "backend": service_limiter.backend_name, "breaker": "closed", "degraded": False}
        if service_limiter.backend_name == "redis":
            expected["redis_evicts_keys"] = None  # not connected in this test: not asked yet
        assert health == expected

    @pytest.mark.gen_test
    async def test_probes_are_never_limited_and_say_ok_and_ready(self, fetch: Fetch) -> None:
        """/livez says ok and /readyz ready (not degraded) however often they are asked, never limited."""
        for _ in range(10):
            livez, readyz = await fetch("/livez"), await fetch("/readyz")
            assert (livez.code, readyz.code) == (200, 200)
            assert json.loads(livez.body) == {"status": "ok"}
            assert json.loads(readyz.body) == {"status": "ready", "degraded": False}
            assert "X-RateLimit-Limit" not in livez.headers and "X-RateLimit-Limit" not in readyz.headers

    @pytest.mark.gen_test
    async def test_readyz_stays_ready_while_degraded(self, fetch: Fetch, service_limiter: RateLimiter) -> None:
        """With the breaker open (Redis taken for down), /readyz is still 200 and says degraded: fail-open
        keeps serving, so the balancer must keep the replica; /livez is unaffected."""
        if service_limiter.backend_name != "redis":
            pytest.skip("only a Redis backend degrades")
        service_limiter.breaker.trip()
        readyz = await fetch("/readyz")
        assert readyz.code == 200
        assert json.loads(readyz.body) == {"status": "ready", "degraded": True}
        assert (await fetch("/livez")).code == 200

    @pytest.mark.gen_test
    async def test_readyz_answers_503_while_draining(self, fetch: Fetch, app: ServiceApplication) -> None:
        """Once a shutdown drains the process (SIGTERM sets draining), /readyz says 503 draining; /livez
        and /health still answer 200 (the process is alive, finishing requests)."""
        app.draining = True
        readyz = await fetch("/readyz")
        assert readyz.code == 503
        assert json.loads(readyz.body) == {"status": "draining"}
        assert (await fetch("/livez")).code == 200 and (await fetch("/health")).code == 200

    @pytest.mark.gen_test
    async def test_metrics_count_allowed_and_blocked_per_identity_kind(self, fetch: Fetch) -> None:
        """After 3 allowed and 2 blocked anonymous requests, the counters say exactly that."""
        for _ in range(5):
            await fetch("/api/whoami")
        text = (await fetch("/metrics")).body.decode()
        assert metric(text, "rate_limit_allowed_total", {"identity": "ip"}) == 3
        assert metric(text, "rate_limit_blocked_total", {"identity": "ip"}) == 2
        assert metric(text, "rate_limit_allowed_total", {"identity": "user"}) == 0
        assert metric(text, "rate_limit_degraded_total") == 0
        assert metric(text, "rate_limit_errors_total") == 0
        assert metric(text, "rate_limit_decision_seconds_count") == 5

    @pytest.mark.gen_test
    async def test_metrics_count_denial_cache_hits(self, fetch: Fetch, service_limiter: RateLimiter) -> None:
        """Capacity 3, six requests: Redis denies the 4th and the cache answers the 5th and 6th (2 hits, 1
        key); the local backend has no cache and exports zeros."""
        for _ in range(6):
            await fetch("/api/whoami")
        text = (await fetch("/metrics")).body.decode()
        on_redis = service_limiter.backend_name == "redis"
        assert metric(text, "rate_limit_denial_cache_hits_total") == (2 if on_redis else 0)
        assert metric(text, "rate_limit_denial_cache_keys") == (1 if on_redis else 0)
        assert metric(text, "rate_limit_redis_timeout_seconds") == (2.0 if on_redis else 0)  # the fixture's

    def test_the_service_limiter_exports_the_process_and_python_info(self, service_settings: Settings) -> None:
        """The limiter the service builds exports the process's CPU, memory and start time (the dashboard's
        process health) and python_info beside its own metrics."""
        text = generate_latest(build_limiter(service_settings).metrics.registry).decode()
        assert metric(text, "process_cpu_seconds_total") > 0
        assert metric(text, "process_resident_memory_bytes") > 0
        assert metric(text, "process_start_time_seconds") > 0
        assert "python_info{" in text

    @pytest.mark.gen_test
    async def test_metric_labels_never_carry_an_address(self, fetch: Fetch) -> None:
        """No label value in /metrics is a client address or key."""
        await fetch("/api/whoami")
        text = (await fetch("/metrics")).body.decode()
        assert "127.0.0.1" not in text

    @pytest.mark.gen_test
    async def test_unknown_paths_get_a_json_404(self, fetch: Fetch) -> None:
        """A path the service does not serve is a 404 problem body, not an HTML page."""
        response = await fetch("/nope")
        assert response.code == 404
        assert json.loads(response.body)["status"] == 404


class TestForwardedClients:
    @pytest.fixture
    def service_settings(self) -> Settings:
        return Settings(ip_capacity=3, ip_refill_rate=0.01, trusted_proxies=_networks("127.0.0.0/8"))

    @pytest.mark.gen_test
    async def test_a_trusted_proxy_names_the_client(self, fetch: Fetch) -> None:
        """From a trusted peer, the rightmost untrusted X-Forwarded-For address is the client."""
        response = await fetch("/api/whoami", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        assert json.loads(response.body) == {"identity": "ip:203.0.113.7"}

    @pytest.mark.gen_test
    async def test_clients_behind_one_proxy_have_separate_buckets(self, fetch: Fetch) -> None:
        """Draining one forwarded client's bucket leaves another's untouched."""
        for _ in range(4):
            last = await fetch("/api/whoami", headers={"X-Forwarded-For": "203.0.113.7"})
        other = await fetch("/api/whoami", headers={"X-Forwarded-For": "203.0.113.8"})
        assert (last.code, other.code) == (429, 200)

    @pytest.mark.gen_test
    async def test_ipv6_clients_in_one_64_share_a_bucket(self, fetch: Fetch) -> None:
        """Rotating addresses inside one /64 does not escape the limit."""
        codes = []
        for host in range(1, 5):
            response = await fetch("/api/whoami", headers={"X-Forwarded-For": f"2001:db8:1:2::{host}"})
            codes.append(response.code)
        assert codes == [200, 200, 200, 429]
        neighbour = await fetch("/api/whoami", headers={"X-Forwarded-For": "2001:db8:1:3::1"})
        assert json.loads(neighbour.body) == {"identity": "ip:2001:db8:1:3::/64"}

    @pytest.mark.gen_test
    async def test_a_malformed_header_falls_back_to_the_peer(self, fetch: Fetch) -> None:
        """A forwarding header that is not an address is ignored, never a 500."""
        response = await fetch("/api/whoami", headers={"X-Forwarded-For": "not-an-ip"})
        assert json.loads(response.body) == {"identity": "ip:127.0.0.1"}


def _networks(text: str) -> Any:
    return Settings.from_env({"RATE_LIMIT_TRUSTED_PROXIES": text}).trusted_proxies


class TestUntrustedPeer:
    @pytest.mark.gen_test
    async def test_a_forged_header_from_an_untrusted_peer_changes_nothing(self, fetch: Fetch) -> None:
        """Without trusted proxies, X-Forwarded-For and Forwarded are ignored: the peer is the client."""
        headers = {"X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.8", "X-Real-Ip": "203.0.113.9"}
        codes = []
        for _ in range(4):
            response = await fetch("/api/whoami", headers=headers)
            codes.append(response.code)
        assert codes == [200, 200, 200, 429]
        first = await fetch("/api/whoami")
        assert first.code == 429  # the same bucket: the peer's


class TestHerokuRouter:
    @pytest.fixture
    def service_settings(self) -> Settings:
        return Settings(ip_capacity=3, ip_refill_rate=0.01, trusted_hops=1)

    @pytest.mark.gen_test
    async def test_one_trusted_hop_reads_the_address_the_router_appended(self, fetch: Fetch) -> None:
        """RATE_LIMIT_TRUSTED_HOPS=1: the last X-Forwarded-For entry (the router's) is the client."""
        response = await fetch("/api/whoami", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
        assert json.loads(response.body) == {"identity": "ip:203.0.113.7"}


class TestForwardedHeader:
    @pytest.fixture
    def service_settings(self) -> Settings:
        env = {"RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1/32", "RATE_LIMIT_FORWARDED_HEADER": "Forwarded"}
        return Settings.from_env(env)

    @pytest.mark.gen_test
    async def test_rfc7239_forwarded_names_the_client(self, fetch: Fetch) -> None:
        """With RATE_LIMIT_FORWARDED_HEADER=Forwarded, the for= of RFC 7239 is read (IPv6 in brackets)."""
        headers = {
            "Forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"',
            "X-Forwarded-For": "1.1.1.1",
        }
        response = await fetch("/api/whoami", headers=headers)
        assert json.loads(response.body) == {"identity": "ip:2001:db8:cafe::/64"}


class _Broken(RateLimitedHandler):
    rate_limit_policy = None

    def get(self) -> None:
        raise RuntimeError("a bug in a handler")


@pytest.mark.parametrize(
    ("access_log", "logged"),
    [("all", [200, 429, 500]), ("errors", [500]), ("off", [])],
)
class TestAccessLog:
    @pytest.fixture
    def service_settings(self, access_log: str) -> Settings:
        return Settings(ip_capacity=1, ip_refill_rate=0.01, access_log=access_log)

    @pytest.fixture
    def extra_routes(self) -> list[Any]:
        return [(r"/broken", _Broken)]

    @pytest.mark.gen_test
    async def test_logs_what_access_log_asks_for(
        self, fetch: Fetch, caplog: pytest.LogCaptureFixture, logged: list[int]
    ) -> None:
        """ACCESS_LOG=all logs every request; errors (the default) only 5xx, so a flood of 429s stays out of
        the log; off logs none."""
        with caplog.at_level(logging.INFO, logger="tornado.access"):
            statuses = [(await fetch(path)).code for path in ("/api/whoami", "/api/whoami", "/broken")]
        assert statuses == [200, 429, 500]
        lines = [record.getMessage() for record in caplog.records if record.name == "tornado.access"]
        assert [int(line.split()[0]) for line in lines] == logged


YEAR = 31_536_000  # a window no test run crosses the end of (windows are aligned to the Unix epoch)


class TestWindowPolicies:
    @pytest.fixture(params=["fixed_window", "sliding_window"])
    def service_settings(self, request: pytest.FixtureRequest) -> Settings:
        environ = {"RATE_LIMIT_ALGORITHM": request.param, "RATE_LIMIT_LIMIT": "3", "RATE_LIMIT_WINDOW": str(YEAR)}
        return Settings.from_env(environ)

    @pytest.mark.gen_test
    async def test_the_headers_describe_the_window(self, fetch: Fetch, service_settings: Settings) -> None:
        """RATE_LIMIT_ALGORITHM=fixed_window or sliding_window: 3 per window, then 429; q is the limit, w the
        window, r the whole units left, t the time until the quota is whole again (for the fixed window the
        window's end, for the sliding one a window later), and Retry-After when it passes again."""
        responses = [await fetch("/api/whoami") for _ in range(4)]
        now = time.time()
        assert [response.code for response in responses] == [200, 200, 200, 429]
        assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
        first = responses[0].headers
        assert first["RateLimit-Policy"] == f'"ip";q=3;w={YEAR}' and first["X-RateLimit-Limit"] == "3"
        window_end = (math.floor(now / YEAR) + 1) * YEAR - now
        sliding = service_settings.ip_algorithm == "sliding_window"
        reset = window_end + (YEAR if sliding else 0)
        shown = re.fullmatch(r'"ip";r=2;t=(\d+)', first["RateLimit"])
        assert shown is not None and abs(int(shown.group(1)) - reset) <= 2
        assert first["X-RateLimit-Reset"] == shown.group(1)
        # The sliding window's 3 weigh less as the next window goes on: 1 passes once they weigh 2.
        retry_after = window_end + (YEAR / 3 if sliding else 0)
        assert abs(int(responses[-1].headers["Retry-After"]) - retry_after) <= 2
