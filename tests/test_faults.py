"""Fault tests: a real `python -m tornado_rate_limiter` under concurrent load while its real redis-server is killed,
frozen, restarted or made to refuse; what the clients saw is measured, not assumed."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.load import Load, Sample
from tests.redis_process import RedisProcess
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.process  # real service processes or Redis topologies: slow

TIMEOUT = 0.05  # RATE_LIMIT_REDIS_TIMEOUT of the service under test
COOLDOWN = 1.0  # RATE_LIMIT_BREAKER_COOLDOWN (and its cap): at most 1.2 s with jitter
# What may come on top of the timeout: inside the service (a decision, per its latency histogram), and
# as the clients measure it (their own event loop shares 2 cores with the service and Redis).
DECISION_SLACK = 0.05
CLIENT_SLACK = 0.45
STORM_RATIO = 2.0  # a storm multiplies the command rate; closed-loop clients vary it by up to ~1.5x
CLIENTS = 16


def service_env(redis_server: RedisProcess, strategy: str = "open") -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "RATE_LIMIT_FAILURE_STRATEGY": strategy,
        "RATE_LIMIT_CAPACITY": "1000000000",  # only faults, never the limit itself, deny here
        "RATE_LIMIT_REFILL_RATE": "1000000000",
        "RATE_LIMIT_REDIS_TIMEOUT": str(TIMEOUT),
        "RATE_LIMIT_BREAKER_COOLDOWN": str(COOLDOWN),
        "RATE_LIMIT_BREAKER_MAX_COOLDOWN": str(COOLDOWN),
    }


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture(params=["open"])
def service(request: pytest.FixtureRequest, own_redis: RedisProcess) -> Iterator[ServiceProcess]:
    process = ServiceProcess(service_env(own_redis, request.param)).start()
    yield process
    process.stop()


def assert_back_on_redis(samples: list[Sample], since: float, within: float) -> None:
    """Redis decides again within ``within`` seconds of ``since``: the first Redis decision comes by then
    and at least 99% after it are Redis decisions (a lone timeout on a busy machine may still degrade one)."""
    later = after(samples, since)
    first_back = min((s.started for s in later if not s.degraded), default=float("inf"))
    assert first_back <= since + within, f"no Redis decision within {within} s"
    settled = after(samples, since + within)
    assert settled and sum(not s.degraded for s in settled) >= 0.99 * len(settled)


def assert_requests_stay_fast(service: ServiceProcess, samples: list[Sample]) -> None:
    """Every decision took at most the timeout plus a little, in the service and as clients saw it."""
    slowest = max(s.latency for s in samples)
    assert slowest <= TIMEOUT + CLIENT_SLACK, f"slowest request took {slowest:.3f} s"
    seen = metrics(service)
    within = seen[f"rate_limit_decision_seconds_bucket:{TIMEOUT + DECISION_SLACK:g}"]
    assert within == seen["rate_limit_decision_seconds_count"], "some decisions took longer than timeout + slack"


def metrics(service: ServiceProcess) -> dict[str, float]:
    with urllib.request.urlopen(service.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels:  # histogram buckets as name:upper-bound
                values[f"{sample.name}:{float(sample.labels['le']):g}"] = sample.value
            elif not sample.labels or sample.labels.get("identity") == "ip":
                values[sample.name] = sample.value
    return values


def run_with_fault(service: ServiceProcess, steps: Callable[[], object]) -> list[Sample]:
    """Run CLIENTS clients against the service while ``steps()`` (a coroutine) does its faults."""

    async def scenario() -> list[Sample]:
        load = Load(service.port, clients=CLIENTS)
        load.start()
        try:
            await steps()  # type: ignore[misc]
        finally:
            samples = await load.stop()
        return samples

    return asyncio.run(scenario())


def report(scenario: str, samples: list[Sample], **figures: float) -> None:
    """One line of figures per scenario (shown with pytest -s; the closing notes quote them)."""
    degraded = sum(s.degraded for s in samples)
    slowest = max(s.latency for s in samples)
    extra = " ".join(f"{name}={value:.3g}" for name, value in figures.items())
    print(f"\nFAULT {scenario}: responses={len(samples)} degraded={degraded} slowest={slowest * 1000:.1f}ms {extra}")


def after(samples: list[Sample], moment: float) -> list[Sample]:
    return [s for s in samples if s.started >= moment]


def assert_no_server_errors(samples: list[Sample]) -> None:
    failed = [s for s in samples if s.status == 0 or s.status >= 500]
    assert not failed, f"{len(failed)} of {len(samples)} responses were 5xx or dropped connections"


def assert_metrics_match(service: ServiceProcess, samples: list[Sample]) -> None:
    """rate_limit_degraded_total equals the degraded responses the clients saw; totals add up."""
    seen = metrics(service)
    assert seen["rate_limit_degraded_total"] == sum(s.degraded for s in samples)
    decided = seen["rate_limit_allowed_total"] + seen["rate_limit_blocked_total"]
    assert decided == len(samples)


class TestKill:
    def test_fail_open_serves_every_request_and_marks_them_degraded(
        self, service: ServiceProcess, own_redis: RedisProcess
    ) -> None:
        """kill -9 under load (fail-open): zero 5xx; every request after Redis died is degraded, and allowed."""
        samples, dead = kill_under_load(service, own_redis)
        assert_no_server_errors(samples)
        before = [s for s in samples if s.finished < dead]
        outage = after(samples, dead)
        assert before and not any(s.degraded for s in before)
        assert len(outage) > 100 and all(s.degraded and s.status == 200 for s in outage)
        assert_metrics_match(service, samples)
        report("kill-9 fail-open", samples, after_death=len(outage))
        health = metrics(service)
        assert health["rate_limit_breaker_state"] in (1, 2)  # open, or half-open once a cool-down has passed
        assert health["rate_limit_errors_total"] >= 1

    @pytest.mark.parametrize("service", ["closed"], indirect=True)
    def test_fail_closed_answers_429_with_retry_after(self, service: ServiceProcess, own_redis: RedisProcess) -> None:
        """kill -9 under load (fail-closed): zero 5xx; every request after Redis died is a degraded 429."""
        samples, dead = kill_under_load(service, own_redis)
        assert_no_server_errors(samples)
        outage = after(samples, dead)
        assert len(outage) > 100
        assert all(s.status == 429 and s.degraded and int(s.retry_after or 0) >= 1 for s in outage)
        assert_metrics_match(service, samples)
        report("kill-9 fail-closed", samples, denied_after_death=len(outage))


def kill_under_load(service: ServiceProcess, own_redis: RedisProcess) -> tuple[list[Sample], float]:
    """1 s of steady load, kill -9, 2 s more; returns the samples and when Redis was dead (reaped)."""
    moments = {}

    async def steps() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_redis.kill)
        moments["dead"] = time.monotonic()
        await asyncio.sleep(2.0)

    samples = run_with_fault(service, steps)
    return samples, moments["dead"]


class TestFreeze:
    def test_no_request_waits_longer_than_the_timeout_and_decisions_return(
        self, service: ServiceProcess, own_redis: RedisProcess
    ) -> None:
        """SIGSTOP: no request takes longer than the timeout plus slack; SIGCONT: Redis decides again
        within a cool-down plus 1 s, having opened only a few connections meanwhile."""
        moments = {}
        control = own_redis.client()

        async def steps() -> None:
            await asyncio.sleep(1.0)
            moments["connections"] = int(control.info("stats")["total_connections_received"])
            await asyncio.to_thread(own_redis.freeze)
            moments["frozen"] = time.monotonic()
            await asyncio.sleep(2.0)
            await asyncio.to_thread(own_redis.thaw)
            moments["thawed"] = time.monotonic()
            await asyncio.sleep(COOLDOWN * 1.2 + 1.5)

        samples = run_with_fault(service, steps)
        assert_no_server_errors(samples)
        assert_requests_stay_fast(service, samples)
        assert_back_on_redis(samples, moments["thawed"], COOLDOWN * 1.2 + 1.0)
        assert any(s.degraded for s in after(samples, moments["frozen"]))
        opened = int(control.info("stats")["total_connections_received"]) - moments["connections"]
        assert opened <= 2 * CLIENTS + 4, f"{opened} connections opened around a 2 s freeze"
        assert_metrics_match(service, samples)
        report("SIGSTOP", samples, connections_opened=opened)


class TestRestart:
    def test_an_empty_restarted_redis_decides_again_without_a_storm(
        self, service: ServiceProcess, own_redis: RedisProcess
    ) -> None:
        """Restarted on its port with no keys and no script: Redis decides again within a cool-down + 1 s,
        no client sees an error, and the command rate back is close to the steady rate."""
        moments: dict[str, float] = {}
        steady: dict[str, float] = {}
        back: list[tuple[float, int]] = []

        def evalsha_calls() -> int:
            stats = own_redis.client().info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        async def steps() -> None:
            await asyncio.sleep(0.5)
            steady_counts = []
            for _ in range(9):  # 2 s of steady load, sampled like the recovery below
                steady_counts.append((time.monotonic(), evalsha_calls()))
                await asyncio.sleep(0.25)
            steady["rate"] = peak_rate(steady_counts)
            await asyncio.to_thread(own_redis.kill)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(own_redis.start)
            moments["restarted"] = time.monotonic()
            for _ in range(int((COOLDOWN * 1.2 + 3.0) / 0.25)):
                back.append((time.monotonic(), evalsha_calls()))
                await asyncio.sleep(0.25)

        samples = run_with_fault(service, steps)
        assert_no_server_errors(samples)
        assert_back_on_redis(samples, moments["restarted"], COOLDOWN * 1.2 + 1.0)
        peak = peak_rate(back)
        assert peak <= STORM_RATIO * steady["rate"], f"peak {peak:.0f}/s against steady {steady['rate']:.0f}/s"
        assert_metrics_match(service, samples)
        report("restart", samples, steady_per_s=steady["rate"], peak_back_per_s=peak)


def peak_rate(counts: list[tuple[float, int]]) -> float:
    """The highest rate over any 1 s window of (time, counter) samples taken every 0.25 s."""
    return max((c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in zip(counts, counts[4:], strict=False))


class TestRedisRefusing:
    def test_out_of_memory_is_counted_and_clients_are_unharmed(
        self, service: ServiceProcess, own_redis: RedisProcess
    ) -> None:
        """maxmemory tiny with noeviction: errors counted, breaker open, clients get degraded 200s;
        memory back: Redis decides again."""
        control = own_redis.client()
        moments = {}
        calls = {}

        def evalsha_attempts() -> int:
            stats = control.info("commandstats").get("cmdstat_evalsha", {})
            return sum(int(stats.get(field, 0)) for field in ("calls", "rejected_calls", "failed_calls"))

        async def steps() -> None:
            await asyncio.sleep(0.5)
            control.config_set("maxmemory-policy", "noeviction")
            control.config_set("maxmemory", 1)
            moments["refusing"] = time.monotonic()
            await asyncio.sleep(0.5)
            calls["open_from"] = evalsha_attempts()  # the breaker has opened by now
            await asyncio.sleep(1.0)
            calls["open_to"] = evalsha_attempts()
            control.config_set("maxmemory", 0)
            moments["healed"] = time.monotonic()
            await asyncio.sleep(COOLDOWN * 1.2 + 1.5)

        samples = run_with_fault(service, steps)
        assert_no_server_errors(samples)
        refusing = [s for s in after(samples, moments["refusing"] + 0.1) if s.finished < moments["healed"]]
        assert refusing and all(s.degraded and s.status == 200 for s in refusing)
        assert_back_on_redis(samples, moments["healed"], COOLDOWN * 1.2 + 1.0)
        assert metrics(service)["rate_limit_errors_total"] >= 5
        open_calls = calls["open_to"] - calls["open_from"]
        assert open_calls <= 2, f"{open_calls} calls reached Redis in 1 s of an open breaker"  # probes only
        assert_metrics_match(service, samples)
        report("OOM", samples, calls_while_open=open_calls)

    def test_client_pause_times_out_and_recovers(self, service: ServiceProcess, own_redis: RedisProcess) -> None:
        """CLIENT PAUSE (Redis answering nobody for 1.5 s): requests stay fast, then Redis decides again."""
        moments = {}

        async def steps() -> None:
            await asyncio.sleep(0.5)
            own_redis.client().execute_command("CLIENT", "PAUSE", 1500, "ALL")
            moments["paused"] = time.monotonic()
            await asyncio.sleep(1.5 + COOLDOWN * 1.2 + 1.5)

        samples = run_with_fault(service, steps)
        assert_no_server_errors(samples)
        assert_requests_stay_fast(service, samples)
        assert any(s.degraded for s in after(samples, moments["paused"]))
        assert_back_on_redis(samples, moments["paused"] + 1.5, COOLDOWN * 1.2 + 1.0)
        assert_metrics_match(service, samples)
        report("CLIENT PAUSE", samples)
