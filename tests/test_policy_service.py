"""The service run with RATE_LIMIT_CONFIG, as real processes on a real Redis (single server and Cluster):
tiers, routes, shadow policies and exemptions; all-or-nothing charging read back from Redis; reloads on
SIGHUP and on a ConfigMap-style symlink swap under concurrent load; every kind of invalid file at start
(exit 2, one line) and at reload (the old configuration stays)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import JWT_SECRET
from tests.load import Load
from tests.redis_process import RedisProcess
from tests.redis_topologies import RedisCluster
from tests.service_process import ServiceProcess, start_with_policy_file
from tests.test_auth import token
from tests.test_policy_handlers import POLICY_FILE

pytestmark = pytest.mark.process

# burst would admit 4, daily admits 3: from the 4th request daily denies alone. trial (shadow) would deny
# from the 3rd. The same file as the in-process tests'.
POLICIES = POLICY_FILE
OLD_HEADER = '"burst";q=4;w=4000, "daily";q=3;w=86400'


class ConfigMapVolume:
    """A directory laid out as Kubernetes mounts a ConfigMap: ``limits.toml -> ..data/limits.toml`` and
    ``..data -> ..<version>``; an update writes a new version directory and renames a new ``..data`` link
    over the old one, so the file's path never changes and no reader sees half a file."""

    def __init__(self, root: Path, text: str) -> None:
        self.root, self.version = root, 0
        self._publish(text)
        (root / "limits.toml").symlink_to("..data/limits.toml")

    @property
    def path(self) -> Path:
        return self.root / "limits.toml"

    def update(self, text: str) -> None:
        self._publish(text)

    def _publish(self, text: str) -> None:
        self.version += 1
        directory = self.root / f"..v{self.version}"
        directory.mkdir()
        (directory / "limits.toml").write_text(text)
        (self.root / "..data_tmp").symlink_to(directory.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


def request(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    data = b"" if method == "POST" else None
    call = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(call, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def address() -> str:
    return f"203.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def metric(service: ServiceProcess, line_start: str) -> float:
    """The value of the /metrics line that starts with ``line_start`` (0 when absent)."""
    text = request(service.url + "/metrics")[2].decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start + " ")]
    return values[0] if values else 0.0


def service_with(volume_or_path: Path, redis_url: str) -> ServiceProcess:
    env = {
        "RATE_LIMIT_CONFIG": str(volume_or_path),
        "REDIS_URL": redis_url,
        "JWT_SECRET": JWT_SECRET,
        "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1",
        "RATE_LIMIT_REDIS_TIMEOUT": "1",
    }
    return ServiceProcess(env).start()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    return ConfigMapVolume(tmp_path, POLICIES)


@pytest.fixture(params=["single", "cluster"])
def backing(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """A Redis URL and a client of the test's own to read it: a single server, then a Cluster."""
    if request.param == "single":
        server: RedisProcess = request.getfixturevalue("own_redis")
        client: Any = server.client()
        url = server.url
    else:
        nodes: RedisCluster = request.getfixturevalue("cluster")
        client = redis.RedisCluster(host="127.0.0.1", port=nodes.nodes[0].port, decode_responses=True)
        url = nodes.url
    yield url, client
    client.close()


@pytest.fixture
def service(volume: ConfigMapVolume, backing: tuple[str, Any]) -> Iterator[ServiceProcess]:
    running = service_with(volume.path, backing[0])
    yield running
    running.stop()


def charge_until_daily_denies(url: str, client: str) -> list[tuple[int, Message, bytes]]:
    return [request(url + "/api/echo", {"X-Forwarded-For": client}) for _ in range(5)]


class TestConfiguredService:
    def test_a_denying_daily_limit_leaves_the_burst_untouched_in_redis(
        self, service: ServiceProcess, backing: tuple[str, Any]
    ) -> None:
        """3 requests pass, the 4th and 5th are denied by daily alone; in Redis, burst's value after the
        denials is byte for byte what the 3rd request left, and daily still counts 3."""
        client, store = address(), backing[1]
        answers = [request(service.url + "/api/echo", {"X-Forwarded-For": client}) for _ in range(3)]
        burst_key, daily_key = f"rl:{{ip:{client}}}:burst", f"rl:{{ip:{client}}}:daily"
        after_three = store.get(burst_key)
        denied = [request(service.url + "/api/echo", {"X-Forwarded-For": client}) for _ in range(2)]
        assert [status for status, _, _ in answers + denied] == [200, 200, 200, 429, 429]
        assert all(json.loads(body)["violated-policies"] == ["daily"] for _, _, body in denied)
        assert store.get(burst_key) == after_three and after_three is not None
        assert store.get(daily_key).split()[-1] == "3"
        assert store.ttl(burst_key) > 0 and store.ttl(daily_key) > 0

    def test_tiers_routes_shadow_and_exemptions(self, service: ServiceProcess) -> None:
        """pro users get pro-burst, others free's list; POST /api/echo/search costs 5 of search; trial
        never denies nor shows, and is counted; 10.0.0.0/8 and ops-bot pass unlimited, counted."""
        pro = request(service.url + "/api/echo", {"Authorization": f"Bearer {token(sub='pat', tier='pro')}"})
        assert pro[1]["RateLimit-Policy"] == '"pro-burst";q=10;w=10000'
        free = request(service.url + "/api/echo", {"Authorization": f"Bearer {token(sub='fay')}"})
        assert free[1]["RateLimit-Policy"] == OLD_HEADER
        client = address()
        search = [request(service.url + "/api/echo/search", {"X-Forwarded-For": client}, "POST") for _ in range(3)]
        assert [status for status, _, _ in search] == [200, 200, 429]
        assert search[1][1]["X-RateLimit-Remaining"] == "0"
        answers = charge_until_daily_denies(service.url, address())
        assert all("trial" not in str(headers) for _, headers, _ in answers)
        assert metric(service, 'rate_limit_shadow_blocked_total{policy="trial"}') >= 1
        for headers in ({"X-Forwarded-For": "10.1.2.3"}, {"Authorization": f"Bearer {token(sub='ops-bot')}"}):
            exempt = [request(service.url + "/api/echo", headers) for _ in range(6)]
            assert all(status == 200 and "RateLimit" not in str(h) for status, h, _ in exempt)
        assert metric(service, "rate_limit_exempt_total") == 12
        assert "shadow policy 'trial' would have denied ip:" in service.log()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    nodes = RedisCluster().start()
    yield nodes
    nodes.stop()


def test_on_a_cluster_a_denial_charges_none(cluster: RedisCluster, tmp_path: Path) -> None:
    """The same all-or-nothing charging through a service on a Redis Cluster: one identity's three keys
    share a slot (one script call), and the denied requests leave every one of them as it was."""
    volume = ConfigMapVolume(tmp_path, POLICIES)
    service = service_with(volume.path, cluster.url)
    try:
        client = address()
        answers = charge_until_daily_denies(service.url, client)
    finally:
        service.stop()
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    store = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        keys = [f"rl:{{ip:{client}}}:{name}" for name in ("burst", "daily", "trial")]
        assert len({store.keyslot(key) for key in keys}) == 1
        tokens = float(store.get(keys[0]).split()[0])
        assert 1 <= tokens < 1.1  # 4 less 3 charges (and a little refill): the denials took nothing
        assert store.get(keys[1]).split()[-1] == b"3"
        # trial (shadow) was charged by the 2 requests it allowed, not by the 3rd, admitted though it denied
        assert store.get(keys[2]).split()[2] == b"2"
    finally:
        store.close()


# Large limits, so the load is never denied: a reload swaps the policies under it.
RELOAD_BEFORE = """\
[policies.burst]
capacity = 1000000
refill_rate = 10000

[policies.daily]
algorithm = "fixed_window"
limit = 10000000
window = 86400

[identities.ip]
policies = ["burst", "daily"]
"""
RELOAD_AFTER = (
    RELOAD_BEFORE.replace("capacity = 1000000", "capacity = 500000").replace(
        'policies = ["burst", "daily"]', 'policies = ["burst", "hourly"]'
    )
    + '\n[policies.hourly]\nalgorithm = "sliding_window"\nlimit = 9000000\nwindow = 3600\n'
)
HEADER_BEFORE = '"burst";q=1000000;w=100, "daily";q=10000000;w=86400'
HEADER_AFTER = '"burst";q=500000;w=50, "hourly";q=9000000;w=3600'


def reload_under_load(service: ServiceProcess, reload: object) -> None:
    """Load the service from 8 connections for about 4 s, calling ``reload()`` after 1 s: every answer
    is a 200 with the whole configuration before or the whole one after, never a mix, and once one
    request has seen the new one, every request sent after it does."""

    async def run() -> list:  # type: ignore[type-arg]
        load = Load(service.port, clients=8, path="/api/echo", headers={"X-Forwarded-For": address()}, max_seconds=30)
        load.start()
        await asyncio.sleep(1)
        await asyncio.to_thread(reload)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(s.rate_limit_policy == HEADER_AFTER for s in load.samples):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        return await load.stop()

    samples = asyncio.run(run())
    assert len(samples) > 100
    assert {sample.status for sample in samples} == {200}
    assert {sample.rate_limit_policy for sample in samples} == {HEADER_BEFORE, HEADER_AFTER}
    first_new = min(sample.finished for sample in samples if sample.rate_limit_policy == HEADER_AFTER)
    assert all(sample.rate_limit_policy == HEADER_AFTER for sample in samples if sample.started > first_new)


def test_sighup_reloads_under_load(tmp_path: Path, own_redis: RedisProcess) -> None:
    """With the content check off (RATE_LIMIT_CONFIG_INTERVAL=0), SIGHUP alone applies a new file under
    load, with no failed request and no mixed answer; the reload is counted and logged."""
    path = tmp_path / "limits.toml"
    path.write_text(RELOAD_BEFORE)
    env = {"RATE_LIMIT_CONFIG": str(path), "REDIS_URL": own_redis.url, "RATE_LIMIT_CONFIG_INTERVAL": "0"}
    service = ServiceProcess({**env, "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1"}).start()
    try:
        path.write_text(RELOAD_AFTER)
        time.sleep(0.5)
        assert request(service.url + "/api/echo")[1]["RateLimit-Policy"] == HEADER_BEFORE  # nobody looked
        assert service.process is not None
        reload_under_load(service, lambda: service.process.send_signal(signal.SIGHUP))  # type: ignore[union-attr]
        assert metric(service, 'rate_limit_config_reloads_total{result="ok"}') == 1
        assert "reloaded (sha256" in service.log()
    finally:
        service.stop()


def test_a_configmap_update_is_seen_under_load(tmp_path: Path, own_redis: RedisProcess) -> None:
    """A ConfigMap-style symlink swap is found by the content check alone (no signal), under load, with no
    failed request and no mixed answer; rate_limit_config_info then names the new file's sha256."""
    volume = ConfigMapVolume(tmp_path, RELOAD_BEFORE)
    env = {"RATE_LIMIT_CONFIG": str(volume.path), "REDIS_URL": own_redis.url, "RATE_LIMIT_CONFIG_INTERVAL": "0.2"}
    service = ServiceProcess({**env, "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1"}).start()
    try:
        reload_under_load(service, lambda: volume.update(RELOAD_AFTER))
        digest = hashlib.sha256(RELOAD_AFTER.encode()).hexdigest()
        assert metric(service, f'rate_limit_config_info{{sha256="{digest}"}}') == 1
    finally:
        service.stop()


BASE = '[policies.burst]\ncapacity = 20\nrefill_rate = 5\n\n[identities.ip]\npolicies = ["burst"]\n'
INVALID_FILES = {
    "unknown key": (
        BASE.replace("refill_rate = 5", "refill_rate = 5\nburts = 3"),
        "limits.toml:4: policies.burst.burts: unknown key",
    ),
    "undefined policy": (
        BASE.replace('["burst"]', '["burts"]'),
        "limits.toml:6: identities.ip.policies: policy 'burts' is not defined",
    ),
    "bad regex": (BASE + '\n[[routes]]\npath = "^/api/("\n', "limits.toml:9: routes[0].path: is not a valid regular"),
    "bad network": (
        BASE + '\n[exempt]\nnetworks = ["10.0.0.0/33"]\n',
        "limits.toml:9: exempt.networks: '10.0.0.0/33' is not an address or a CIDR",
    ),
    "cost above the limit": (
        BASE + '\n[[routes]]\npath = "^/api/bulk"\ncost = 50\n',
        "limits.toml:10: routes[0].cost: 50 is more than policy 'burst' ever admits at once (20)",
    ),
    "number out of range": (
        BASE.replace("capacity = 20", "capacity = 0"),
        "limits.toml:2: policies.burst.capacity: capacity must be a finite number > 0, got 0",
    ),
    "not TOML": (BASE + "\n[exempt\n", "limits.toml: is not valid TOML: Expected ']'"),
}


@pytest.mark.parametrize(("text", "says"), INVALID_FILES.values(), ids=list(INVALID_FILES))
def test_an_invalid_file_stops_the_start_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    """Exit 2 and one line on stderr naming the file, the line and the field; no traceback."""
    (tmp_path / "limits.toml").write_text(text)
    result = start_with_policy_file(tmp_path / "limits.toml")
    assert result.returncode == 2
    assert result.stderr.startswith(f"configuration error: {says}") and result.stderr.count("\n") == 1, result.stderr


def test_an_invalid_file_at_reload_keeps_the_configuration_before(tmp_path: Path, own_redis: RedisProcess) -> None:
    """Each invalid file, swapped in and signalled: the reload fails (counted, one error line naming the
    file, line and field), and requests keep the policies read before."""
    volume = ConfigMapVolume(tmp_path, BASE)
    env = {"RATE_LIMIT_CONFIG": str(volume.path), "REDIS_URL": own_redis.url, "RATE_LIMIT_CONFIG_INTERVAL": "0"}
    service = ServiceProcess(env).start()
    assert service.process is not None
    try:
        for number, (text, says) in enumerate(INVALID_FILES.values(), start=1):
            volume.update(text)
            service.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while metric(service, 'rate_limit_config_reloads_total{result="error"}') < number:
                assert time.monotonic() < deadline, service.log()
                time.sleep(0.05)
            errors = [line for line in service.log().splitlines() if "keeping the policies read before" in line]
            assert len(errors) == number and says.replace("limits.toml", str(volume.path)) in errors[-1]
            assert request(service.url + "/api/echo")[1]["RateLimit-Policy"] == '"burst";q=20;w=4'
        assert "Traceback" not in service.log()
    finally:
        service.stop()
