"""One limit for a fleet: several service processes share one Redis (or Cluster) and admit, together,
exactly what one bucket allows, even when their clocks disagree or busy loops take every CPU."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load import Load, Sample
from tests.redis_process import RedisProcess, end_process
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
# Imported at start the same way: the event loop stalls (blocked, as by a CPU-bound handler or a GC
# pause) for 80 ms out of every 100, so a round trip often ends while the loop cannot read its reply.
STALLING_LOOP = """
import asyncio, time

_run = asyncio.run


def run(main, **options):
    async def with_stalls():
        loop = asyncio.get_running_loop()

        def stall():
            time.sleep(0.08)
            loop.call_later(0.02, stall)

        loop.call_later(0.02, stall)
        return await main

    return _run(with_stalls(), **options)


asyncio.run = run
"""


def idle_time(samples: list[Sample], start: float, end: float) -> float:
    """Seconds of [start, end] during which no request was in flight."""
    idle, covered_to = 0.0, start
    for sample in sorted(samples, key=lambda s: s.started):
        if sample.started > covered_to:
            idle += min(sample.started, end) - covered_to
        covered_to = max(covered_to, sample.finished)
        if covered_to >= end:
            break
    return idle + max(0.0, end - covered_to)


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """``count`` shell busy loops (one per CPU hogs the machine) for the duration; ended by their PIDs."""
    loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            end_process(loop, grace=1)


@pytest.fixture(params=["one-redis", "skewed-clocks", "cluster", "busy-cpus", "stalled-loops"])
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
    """Three service processes on one Redis; with skewed-clocks, the first one's clock is 5 minutes ahead;
    with stalled-loops, every process's event loop is blocked 80% of the time."""
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_CAPACITY": str(CAPACITY), "RATE_LIMIT_REFILL_RATE": str(REFILL_RATE)}
    topology = request.node.callspec.params["redis_url"]
    (tmp_path / "sitecustomize.py").write_text(STALLING_LOOP if topology == "stalled-loops" else SKEWED_CLOCK)
    processes = []
    for index in range(PROCESSES):
        process_env = dict(env)
        if topology == "stalled-loops" or (topology == "skewed-clocks" and index == 0):
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

    with busy_loops((os.cpu_count() or 2) if topology == "busy-cpus" else 0):
        samples = asyncio.run(scenario())
    assert not [s for s in samples if s.status not in (200, 429)]
    admitted = sum(s.status == 200 for s in samples)
    outer = max(s.finished for s in samples) - min(s.started for s in samples)  # holds every decision
    first_end, last_start = min(s.finished for s in samples), max(s.started for s in samples)
    # Held by the decisions, less any time no request was in flight (a starved client sends nothing, and a
    # full bucket refills no further meanwhile): the lower bound asks only for the refill that was asked for.
    inner = last_start - first_end - idle_time(samples, first_end, last_start)
    upper = CAPACITY + REFILL_RATE * outer
    lower = math.floor(CAPACITY + REFILL_RATE * inner) - 1
    degraded = sum(s.degraded for s in samples)
    print(
        f"\nFLEET {topology}: requests={len(samples)} admitted={admitted} bound={upper:.2f} (lower {lower}) {degraded=}"
        f" idle={idle_time(samples, first_end, last_start):.3f}s"
    )
    assert lower <= admitted <= upper
    # A healthy Redis decides every request, however busy the CPUs: the deadline counts only the time the
    # event loop had (an overloaded process once sent 2,489 of 6,301 decisions to the fallback).
    assert degraded == 0
