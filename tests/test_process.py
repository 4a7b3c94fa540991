"""`python -m tornado_rate_limiter` as a platform runs it: environment in, $PORT bound, clean exit on SIGTERM."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.redis_process import RedisProcess
from tests.service_process import ROOT, ServiceProcess

pytestmark = pytest.mark.process  # real service processes or Redis topologies: slow


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def local_service() -> Iterator[ServiceProcess]:
    service = ServiceProcess().start()
    yield service
    service.stop()


class TestStart:
    def test_runs_on_the_local_backend_without_redis_url_and_says_so_once(self, local_service: ServiceProcess) -> None:
        """No REDIS_URL: /health says backend local, and the log says it once however many requests come."""
        for _ in range(3):
            assert get_json(local_service.url + "/health")["backend"] == "local"
        get_json(local_service.url + "/api/whoami")
        assert local_service.log().count("REDIS_URL is not set") == 1

    def test_runs_on_redis_with_redis_url(self, redis_server: RedisProcess) -> None:
        """REDIS_URL set: decisions are kept in that Redis."""
        service = ServiceProcess({"REDIS_URL": redis_server.url}).start()
        try:
            assert get_json(service.url + "/health")["backend"] == "redis"
            assert get_json(service.url + "/api/whoami") == {"identity": "ip:127.0.0.1"}
            keys = subprocess.run(
                ["redis-cli", "-p", str(redis_server.port), "--scan", "--pattern", "rl:{ip:127.0.0.1}:ip"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert keys == ["rl:{ip:127.0.0.1}:ip"]
        finally:
            service.stop()

    @pytest.mark.parametrize(
        ("name", "value"), [("PORT", "eighty"), ("RATE_LIMIT_FAILURE_STRATEGY", "sometimes"), ("JWT_SECRET", "abc")]
    )
    def test_an_invalid_setting_exits_2_with_one_line_naming_it(self, name: str, value: str) -> None:
        """A bad value stops the process at start: exit code 2 and one line that names the variable."""
        result = subprocess.run(
            [sys.executable, "-m", "tornado_rate_limiter"],
            env={"PATH": "/usr/bin:/bin", name: value, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], result.stderr


class TestSigterm:
    def test_finishes_requests_in_flight_then_exits_0(self, local_service: ServiceProcess) -> None:
        """SIGTERM mid-request: new connections are refused, the request in flight completes, exit 0."""
        client = socket.create_connection(("127.0.0.1", local_service.port))
        head = b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        client.sendall(head + b"hello")  # half the body: the request is in flight
        time.sleep(0.3)
        local_service.terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the listener closes first
            try:
                socket.create_connection(("127.0.0.1", local_service.port), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                break
        else:
            pytest.fail("the service still accepts connections after SIGTERM")
        client.sendall(b"world")
        response = client.recv(65536).decode()
        client.close()
        assert response.startswith("HTTP/1.1 200")
        assert '"body": "helloworld"' in response
        started = time.monotonic()
        assert local_service.wait(timeout=25) == 0
        assert time.monotonic() - started < 10
        assert "stopped" in local_service.log()

    def test_readyz_answers_503_during_the_drain_while_livez_answers_200(self, local_service: ServiceProcess) -> None:
        """A balancer polling /readyz on a kept-alive connection sees 200 before SIGTERM and 503 during the
        drain (a request still in flight keeps the process draining); /livez stays 200 throughout."""
        in_flight = socket.create_connection(("127.0.0.1", local_service.port))
        in_flight.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        balancer = http.client.HTTPConnection("127.0.0.1", local_service.port, timeout=5)

        def probe(path: str) -> tuple[int, dict[str, object]]:
            balancer.request("GET", path)
            response = balancer.getresponse()
            return response.status, json.loads(response.read())

        assert probe("/readyz") == (200, {"status": "ready", "degraded": False})
        local_service.terminate()
        deadline = time.monotonic() + 5
        while probe("/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe("/readyz") == (503, {"status": "draining"})
        assert probe("/livez") == (200, {"status": "ok"})
        in_flight.sendall(b"world")
        assert in_flight.recv(65536).startswith(b"HTTP/1.1 200")
        in_flight.close()
        balancer.close()
        assert local_service.wait(timeout=25) == 0
