"""Server CPU per request, and latency at one and at 64 connections, for every server of SERVERS.

Requests per second on 2 shared cores mostly measure who else is running; what a server spends on each
request does not: the server process's own CPU time (user + sys, from /proc/PID/stat) before and after a
wrk run, divided by the requests wrk completed. Every server runs at once (an idle one costs nothing) and
the rounds are interleaved (round 1 for every server, then round 2, ...), so a noisy minute touches each
server alike; the report takes the median of the rounds. Each round also measures p50 at one connection
(no batching can help a lone request) and req/s and p99 at 64.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.http import ACCESS_LOG, HIGH, SERVICE_LOCAL, SERVICE_REDIS, Server, run_wrk
from tests.service_process import ServiceProcess
from tornado_rate_limiter.limiter import Policy, RateLimiter, RedisBackend

Row = dict[str, Any]
CPU_CONNECTIONS = 32
APPS = [sys.executable, "-m", "bench.apps"]
_HIGH_CAPACITY = {"RATE_LIMIT_CAPACITY": HIGH}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


SERVERS = [
    Server("bare", "bare Tornado hello world", [*APPS, "bare"], {}, "/", False),
    Server("bare_headers", "bare, setting the five rate-limit headers", [*APPS, "bare_headers"], {}, "/", False),
    Server(
        "bare_streamed",
        "bare + headers, in streaming mode (stream_request_body)",
        [*APPS, "bare_streamed"],
        {},
        "/",
        False,
    ),
    Server("ours_local", "RateLimitedHandler hello world, local backend", [*APPS, "ours"], _HIGH_CAPACITY, "/", False),
    Server("ours_redis", "RateLimitedHandler hello world, Redis backend", [*APPS, "ours"], _HIGH_CAPACITY, "/", True),
    SERVICE_LOCAL,
    SERVICE_REDIS,
    Server("limits", "Tornado + limits (async moving window, Redis)", [*APPS, "limits"], _HIGH_CAPACITY, "/", True),
    Server(
        "throttled", "Tornado + throttled-py (token bucket, Redis)", [*APPS, "throttled"], _HIGH_CAPACITY, "/", True
    ),
]


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (its threads included, its children not)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime and stime: fields 14 and 15 of stat(5)


def cpu_per_request(server: ServiceProcess, path: str, seconds: float) -> Row:
    """One wrk run at CPU_CONNECTIONS, with the server's CPU time around it."""
    assert server.process is not None
    before = cpu_seconds(server.process.pid)
    figures = run_wrk(f"http://127.0.0.1:{server.port}{path}", seconds, connections=CPU_CONNECTIONS)
    used = cpu_seconds(server.process.pid) - before
    requests = max(1, figures["requests"])
    return {"cpu_us_per_request": used / requests * 1e6, "cpu_requests": figures["requests"]}


def one_round(server: ServiceProcess, path: str, seconds: float) -> Row:
    url = f"http://127.0.0.1:{server.port}{path}"
    row = cpu_per_request(server, path, seconds)
    lone = run_wrk(url, max(1.0, seconds / 2), connections=1)
    crowd = run_wrk(url, seconds, connections=64)
    row.update(
        c1_p50_ms=lone["p50_ms"],
        c1_p99_ms=lone["p99_ms"],
        c64_requests_per_s=crowd["requests_per_s"],
        c64_p50_ms=crowd["p50_ms"],
        c64_p99_ms=crowd["p99_ms"],
        non_2xx=lone["non_2xx"] + crowd["non_2xx"],
    )
    return row


def redis_round_trip_ms(port: int, count: int = 2000) -> float:
    """The median time of one PING on a kept connection: what a decision on Redis adds at the least."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            connection.sendall(b"PING\r\n")
            connection.recv(64)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def lone_decision_ms(redis_url: str, count: int = 3000) -> float:
    """The median time of one RateLimiter.acquire on Redis with nobody else asking (no batch to share)."""

    async def measure() -> float:
        async with RateLimiter(RedisBackend.from_url(redis_url, timeout=1.0)) as limiter:
            policy = Policy(1e9, 1e9, name="lone")
            times = []
            for _ in range(count):
                started = time.perf_counter()
                await limiter.acquire("ip:127.0.0.1", policy)
                times.append(time.perf_counter() - started)
        return statistics.median(times[count // 10 :]) * 1e3

    return asyncio.run(measure())


def run_cpu(
    redis_url: str,
    redis_port: int,
    seconds: float,
    warmup: float,
    rounds: int,
    flush: Callable[[], object],
    servers_run: Sequence[Server] = SERVERS,
) -> Row:
    """Every server started at once, warmed up, then ``rounds`` interleaved rounds; medians per server."""
    flush()
    servers = {
        spec.id: ServiceProcess(
            env={**ACCESS_LOG, **spec.env, **({"REDIS_URL": redis_url} if spec.redis else {})}, command=spec.command
        )
        for spec in servers_run
    }
    measured: dict[str, list[Row]] = {spec.id: [] for spec in servers_run}
    errors: dict[str, str] = {}
    try:
        for spec in servers_run:
            try:
                servers[spec.id].start()
                run_wrk(f"http://127.0.0.1:{servers[spec.id].port}{spec.path}", warmup, connections=CPU_CONNECTIONS)
            except Exception as exc:
                errors[spec.id] = f"{type(exc).__name__}: {exc}"
        for _ in range(rounds):
            for spec in servers_run:
                if spec.id in errors:
                    continue
                try:
                    measured[spec.id].append(one_round(servers[spec.id], spec.path, seconds))
                except Exception as exc:
                    errors[spec.id] = f"{type(exc).__name__}: {exc}"
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for spec in servers_run:
        row: Row = {"id": spec.id, "label": spec.label, "rounds": measured[spec.id]}
        if spec.id in errors:
            row["error"] = errors[spec.id]
        if measured[spec.id]:
            for name in measured[spec.id][0]:
                row[name] = statistics.median(entry[name] for entry in measured[spec.id])
        rows.append(row)
    return {
        "rows": rows,
        "redis_round_trip_ms": redis_round_trip_ms(redis_port),
        "lone_decision_ms": lone_decision_ms(redis_url),
        "seconds": seconds,
        "rounds": rounds,
    }


def main() -> None:
    """python -m bench.cpu [server ids]: a quick look, on a redis-server of its own (SECONDS, ROUNDS)."""
    from tests.redis_process import RedisProcess

    redis = RedisProcess().start()
    try:
        result = run_cpu(
            redis.url,
            redis.port,
            float(os.environ.get("SECONDS", "4")),
            1.0,
            int(os.environ.get("ROUNDS", "3")),
            redis.client().flushall,
            [spec for spec in SERVERS if spec.id == "bare" or spec.id in sys.argv[1:] or len(sys.argv) == 1],
        )
    finally:
        redis.stop()
    bare = next(row for row in result["rows"] if row["id"] == "bare")
    for row in result["rows"]:
        if "cpu_us_per_request" not in row:
            print(row["id"], row.get("error"))
            continue
        cpu, added = row["cpu_us_per_request"], row["cpu_us_per_request"] - bare["cpu_us_per_request"]
        print(f"{row['id']:14} cpu {cpu:6.1f} us (+{added:5.1f})", end="")
        print(f"  c64 {row['c64_requests_per_s']:7.0f} req/s p99 {row['c64_p99_ms']:6.2f} ms", end="")
        print(f"  c1 p50 {row['c1_p50_ms']:.3f} ms")
    print(f"redis round trip {result['redis_round_trip_ms']:.3f} ms, lone decision {result['lone_decision_ms']:.3f} ms")


if __name__ == "__main__":
    main()
