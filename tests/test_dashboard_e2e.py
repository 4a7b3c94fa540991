"""The dashboard and the rules against a real Prometheus scraping a real service on a real Redis: after
allowed, blocked, shadow and degraded traffic (Redis killed), every panel's query evaluates through
Prometheus's HTTP API, and the ones about that traffic return the series it made."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_process import RedisProcess, end_process, free_port
from tests.service_process import ROOT, ServiceProcess, http_get

pytestmark = pytest.mark.process

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "rate-limiter.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
POLICY_FILE = """\
[policies.burst]
capacity = 5
refill_rate = 0.01

[policies.trial]
capacity = 2
refill_rate = 0.01
mode = "shadow"

[identities.ip]
policies = ["burst", "trial"]
"""
# What Grafana puts in place of the dashboard's variables, for one job and every instance.
VARIABLES = {"$job": "rate-limiter", "$instance": ".*", "$__rate_interval": "2m", "$__range": "10m"}


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, query) for every target of every panel, variables replaced."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: a variable left unreplaced in {expr}"
            queries.append((panel["title"], expr))
    return queries


class Prometheus:
    """A real Prometheus on a free port, scraping ``target`` every second, evaluating the shipped rules."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: scripts/ensure-prometheus installs it (make test runs it)"
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES}]\n"
            "scrape_configs:\n"
            f"  - job_name: rate-limiter\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if http_get(f"{self.url}/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(self.log.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **parameters: str) -> Any:
        query = urllib.parse.urlencode(parameters)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now; AssertionError with Prometheus's message if it fails."""
        try:
            answer = self.api("query", query=expr)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{expr}: {error.read().decode()}") from None
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr} returned nothing within {timeout} s")

    def stop(self) -> None:
        end_process(self.process, grace=10)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    """Prometheus after the traffic, and the sha256 of the policy file the service serves."""
    directory = tmp_path_factory.mktemp("prometheus")
    policy_file = directory / "limits.toml"
    policy_file.write_text(POLICY_FILE)
    redis = RedisProcess().start()
    service = ServiceProcess(
        {"REDIS_URL": redis.url, "RATE_LIMIT_CONFIG": str(policy_file), "RATE_LIMIT_BREAKER_COOLDOWN": "30"}
    ).start()
    prometheus = Prometheus(directory, f"127.0.0.1:{service.port}")
    try:
        prometheus.wait_for('up{job="rate-limiter"} == 1')
        statuses = [http_get(service.url + "/api/whoami")[0] for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3  # allowed, then blocked (the cache answers the last two)
        time.sleep(3)  # scraped before and after: rates see the change
        redis.kill()
        degraded = [http_get(service.url + "/api/whoami")[1]["X-RateLimit-Degraded"] for _ in range(10)]
        assert degraded[-1] == "true"
        prometheus.wait_for('rate_limit_breaker_state{job="rate-limiter"} == 2')
        prometheus.wait_for('job:rate_limit_degraded:ratio_rate5m{job="rate-limiter"} > 0')
        yield prometheus, hashlib.sha256(POLICY_FILE.encode()).hexdigest()
    finally:
        prometheus.stop()
        service.stop()
        redis.stop()


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_panel_query_evaluates_and_returns_series(scraped: tuple[Prometheus, str], title: str, expr: str) -> None:
    """Each query of each panel evaluates without error and returns at least one series (every metric
    the dashboard reads is exported from the start, zeros included)."""
    prometheus, _ = scraped
    assert prometheus.query(expr), f"{title}: {expr} returned no series"


def values(prometheus: Prometheus, title: str) -> list[dict[str, Any]]:
    """The series of the panel titled ``title``, each as its labels plus its value, by query."""
    found = [expr for panel_title, expr in panel_queries() if panel_title == title]
    assert found, f"no panel titled {title!r}"
    return [
        {**series["metric"], "value": float(series["value"][1])} for expr in found for series in prometheus.query(expr)
    ]


def test_the_panels_about_the_traffic_show_it(scraped: tuple[Prometheus, str]) -> None:
    """Allowed and blocked requests, the shadow policy's would-block, the blocked share by policy, the
    degraded share and availability below 1, the open breaker, Redis errors, the denial cache and the
    configuration hash: each panel returns the series the traffic made."""
    prometheus, sha256 = scraped
    outcomes = values(prometheus, "Requests per second by outcome")
    assert [series["value"] > 0 for series in outcomes] == [True, True, False, True]  # allowed blocked exempt degraded
    decisions = {
        (s["policy"], s["outcome"])
        for s in values(prometheus, "Policy decisions per second by policy and outcome")
        if s["value"] > 0
    }
    assert {("burst", "allowed"), ("burst", "blocked"), ("trial", "shadow_blocked")} <= decisions
    assert 0 < values(prometheus, "Share of requests blocked")[0]["value"] < 1
    by_policy = {s["policy"]: s["value"] for s in values(prometheus, "Share of requests blocked, by policy")}
    assert by_policy["burst"] > 0 and "trial" not in by_policy  # a shadow policy never blocks: no series
    shadow = values(prometheus, "Shadow policies: would have blocked, per second")
    assert [s["policy"] for s in shadow if s["value"] > 0] == ["trial"]
    assert 0 < values(prometheus, "Protection availability")[0]["value"] < 1
    assert values(prometheus, "Share of decisions degraded")[0]["value"] > 0
    assert [s["value"] for s in values(prometheus, "Circuit breaker by instance")] == [2]
    assert values(prometheus, "Redis errors per second")[0]["value"] > 0
    # Requests checked against several limits do not use the denial cache (yet): its series are there, at 0.
    assert [s["value"] for s in values(prometheus, "Denial cache")] == [0, 0]
    latency = values(prometheus, "Decision latency")
    assert len(latency) == 3 and latency[2]["value"] == 0.05  # p50, p99, the deadline (the default)
    assert [s["sha256"] for s in values(prometheus, "Configuration in force")] == [sha256]
    assert values(prometheus, "Instances up")[0]["value"] == 1


def test_every_rule_evaluates_without_error(scraped: tuple[Prometheus, str]) -> None:
    """Prometheus evaluated each recording and alerting rule on the real series without an error."""
    prometheus, _ = scraped
    rules = [rule for group in prometheus.api("rules")["data"]["groups"] for rule in group["rules"]]
    assert len(rules) == 16
    assert [(rule["name"], rule.get("lastError", "")) for rule in rules if rule["health"] != "ok"] == []
