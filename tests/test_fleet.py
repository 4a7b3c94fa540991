"""One limit for a fleet: several `python -m tornado_rate_limiter` processes share one Redis (or Cluster) and admit,
together, exactly what one bucket allows, even when their clocks disagree."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load import Load, Sample
from tests.redis_process import RedisProcess
from tests.redis_topologies import RedisCluster
from tests.service_process import ROOT, ServiceProcess

CAPACITY, REFILL_RATE = 20, 10.0
PROCESSES, CLIENTS_EACH, SECONDS = 3, 4, 4.0
SKEW = 300.0  # seconds one process's clock is ahead
pytestmark = pytest.mark.process  # real service processes or Redis topologies: slow

# Imported at start by a process whose PYTHONPATH holds it: shifts time.time for the whole process.
SKEWED_CLOCK = f"""
import time
_real_time = time.time
time.time = lambda: _real_time() + {SKEW}
"""


@pytest.fixture(params=["one-redis", "skewed-clocks", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "cluster":
        cluster = RedisCluster().start()
        yield cluster.url
        cluster.stop()
    else:
        server = RedisProcess().start()
        yield server.url
        server.stop()


@pytest.fixture
def fleet(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Three service processes on one Redis; with skewed-clocks, the first one's clock is 5 minutes ahead."""
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_CAPACITY": str(CAPACITY), "RATE_LIMIT_REFILL_RATE": str(REFILL_RATE)}
    (tmp_path / "sitecustomize.py").write_text(SKEWED_CLOCK)
    skewed = request.node.callspec.params["redis_url"] == "skewed-clocks"
    processes = []
    for index in range(PROCESSES):
        process_env = dict(env)
        if skewed and index == 0:
            process_env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
        processes.append(ServiceProcess(process_env).start())
    yield processes
    for process in processes:
        process.stop()


def test_the_fleet_admits_what_one_bucket_allows(fleet: list[ServiceProcess], request: pytest.FixtureRequest) -> None:
    """Clients spread over three processes, one identity, several seconds: admitted is at most
    capacity + refill_rate * elapsed and not more than one request below it."""
    topology = request.node.callspec.params["redis_url"]
    if topology == "skewed-clocks":
        date = urllib.request.urlopen(fleet[0].url + "/health", timeout=5).headers["Date"]
        ahead = email.utils.parsedate_to_datetime(date).timestamp() - time.time()
        assert ahead > SKEW - 5  # the skew really is in force in that process

    async def scenario() -> list[Sample]:
        loads = [Load(process.port, clients=CLIENTS_EACH) for process in fleet]
        for load in loads:
            load.start()
        await asyncio.sleep(SECONDS)
        return [sample for load in loads for sample in await load.stop()]

    samples = asyncio.run(scenario())
    assert not [s for s in samples if s.status not in (200, 429)]
    admitted = sum(s.status == 200 for s in samples)
    outer = max(s.finished for s in samples) - min(s.started for s in samples)  # holds every decision
    inner = max(s.started for s in samples) - min(s.finished for s in samples)  # held by the decisions
    upper = CAPACITY + REFILL_RATE * outer
    lower = math.floor(CAPACITY + REFILL_RATE * inner) - 1
    degraded = sum(s.degraded for s in samples)
    print(
        f"\nFLEET {topology}: requests={len(samples)} admitted={admitted} bound={upper:.2f} (lower {lower}) {degraded=}"
    )
    assert lower <= admitted <= upper
