"""deploy/nginx/nginx.conf as shipped, end to end: a real nginx (auth_request) in front of a real
application process, asking the service on a real Redis. Clients connect from distinct loopback
addresses (127.0.0.2, 127.0.0.3), so nginx sees them as different clients and says so in
X-Forwarded-For, as it would for clients on the internet."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nginx_process import CONFIG, Nginx
from tests.redis_process import RedisProcess
from tests.service_process import ROOT, ServiceProcess

pytestmark = pytest.mark.process


def get(
    port: int, source: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET through the proxy from the loopback address ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert found, "nginx is missing: scripts/ensure-nginx installs it (make test runs it)"
    return found


@pytest.fixture
def stack(tmp_path: Path, nginx_binary: str) -> Iterator[tuple[Nginx, ServiceProcess, RedisProcess]]:
    """Redis, the application (python -m http.server), the limiter (3 tokens per client) and nginx."""
    redis_server = RedisProcess().start()
    (tmp_path / "index.html").write_text("hello from the application\n")
    app = ServiceProcess()
    app.command = [
        sys.executable,
        "-m",
        "http.server",
        str(app.port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    limiter = ServiceProcess(
        {
            "REDIS_URL": redis_server.url,
            "RATE_LIMIT_CAPACITY": "3",
            "RATE_LIMIT_REFILL_RATE": "0.001",
            "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1",
        }
    )
    proxy_dir = tmp_path / "nginx"
    proxy_dir.mkdir()
    started: list[object] = []
    try:
        app.start()
        started.append(app)
        limiter.start()
        started.append(limiter)
        proxy = Nginx(proxy_dir, limiter.port, app.port).start()
        started.append(proxy)
        yield proxy, limiter, redis_server
    finally:
        for process in reversed(started):
            process.stop()  # type: ignore[attr-defined]
        redis_server.stop()


def test_allowed_then_a_real_429_with_the_headers(stack: tuple[Nginx, ServiceProcess, RedisProcess]) -> None:
    """Through nginx: three 200s from the application with the rate-limit headers, then a 429 with
    Retry-After, the headers and a problem body."""
    proxy, _, _ = stack
    answers = [get(proxy.port, "127.0.0.2") for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    _, headers, body = answers[0]
    assert body == b"hello from the application\n"
    assert headers["ratelimit-policy"] == '"ip";q=3;w=3000' and headers["x-ratelimit-remaining"] == "2"
    assert headers["ratelimit"].startswith('"ip";r=2;')
    _, denied, problem = answers[3]
    assert int(denied["retry-after"]) >= 1 and denied["x-ratelimit-remaining"] == "0"
    assert denied["ratelimit-policy"] == '"ip";q=3;w=3000' and denied["x-ratelimit-limit"] == "3"
    assert json.loads(problem)["status"] == 429 and denied["content-type"] == "application/problem+json"


def test_two_clients_have_a_limit_each_and_a_forged_address_changes_nothing(
    stack: tuple[Nginx, ServiceProcess, RedisProcess],
) -> None:
    """127.0.0.2 spends its 3; 127.0.0.3 still has its own. 127.0.0.2 claiming to be someone else in its
    own X-Forwarded-For is still itself: nginx appends the real address, the limiter reads that."""
    proxy, _, _ = stack
    for _ in range(3):
        get(proxy.port, "127.0.0.2")
    assert get(proxy.port, "127.0.0.3")[0] == 200
    assert get(proxy.port, "127.0.0.2", headers={"X-Forwarded-For": "203.0.113.99"})[0] == 429


def test_with_redis_killed_requests_pass_marked_degraded(stack: tuple[Nginx, ServiceProcess, RedisProcess]) -> None:
    """Redis killed: the limiter decides from its fallback (fail-open), and nginx passes the marking on."""
    proxy, _, redis_server = stack
    redis_server.kill()
    status, headers, _ = get(proxy.port, "127.0.0.4")
    assert status == 200 and headers["x-ratelimit-degraded"] == "true"


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_with_the_limiter_stopped_nginx_answers_as_configured(
    stack: tuple[Nginx, ServiceProcess, RedisProcess], tmp_path: Path, fail_closed: bool
) -> None:
    """The limiter stopped: as shipped (fail-open) the application answers, marked degraded; with the
    documented fail-closed variant, 503 with Retry-After."""
    proxy, limiter, _ = stack
    limiter.stop()
    if fail_closed:
        proxy.stop()
        directory = tmp_path / "closed"
        directory.mkdir()
        closed = Nginx(directory, limiter.port, int(proxy_app_port(proxy)), fail_closed=True).start()
        try:
            status, headers, _ = get(closed.port, "127.0.0.5")
        finally:
            closed.stop()
        assert status == 503 and headers["retry-after"] == "1"
    else:
        status, headers, body = get(proxy.port, "127.0.0.5")
        assert status == 200 and body == b"hello from the application\n" and headers["x-ratelimit-degraded"] == "true"


def proxy_app_port(proxy: Nginx) -> str:
    """The application's port, as written into the proxy's config."""
    text = (proxy.directory / "nginx.conf").read_text()
    return text.split("upstream application {")[1].split("server 127.0.0.1:")[1].split(";")[0]


def test_the_readme_shows_the_shipped_config() -> None:
    """Every line of the README's nginx block is in deploy/nginx/nginx.conf, in the same order."""
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("```nginx\n", 1)[1].split("```", 1)[0].splitlines()
    shipped = iter(CONFIG.read_text().splitlines())
    for line in (line for line in shown if line.strip()):
        assert any(line == candidate for candidate in shipped), line
