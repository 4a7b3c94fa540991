"""HTTP requests per second and latency: the service against bare Tornado and a Tornado app using limits.

Each server is a child process on a free port (tests/service_process.py), loaded over loopback by wrk
(one thread, 64 keep-alive connections) after a short warm-up, and stopped by its PID. Without wrk, a
Python keep-alive client (tests/load.py) loads it instead; it is slower than wrk, so the report says which
one ran. Limits are so high that every request is allowed, except in the row made to be denied.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any, NamedTuple

from tests.load import Load, Sample
from tests.service_process import ServiceProcess

Row = dict[str, Any]
CONNECTIONS = 64
HIGH = str(10**9)  # the largest RATE_LIMIT_CAPACITY / RATE_LIMIT_REFILL_RATE the service accepts
# The service's own 50 ms would be the right deadline in production; here a decision queued behind 64
# busy connections must not fall back to memory and be counted as a Redis one.
REDIS_TIMEOUT = "1.0"
# Server errors only, as bench/apps.py logs: the same for every server, whatever the service's default.
ACCESS_LOG = {"ACCESS_LOG": "errors"}

SERVICE = [sys.executable, "-m", "tornado_rate_limiter"]
ALLOW_ALL = {"RATE_LIMIT_CAPACITY": HIGH, "RATE_LIMIT_REFILL_RATE": HIGH}


class Server(NamedTuple):
    id: str
    label: str
    command: list[str]
    env: dict[str, str]
    path: str
    redis: bool  # given REDIS_URL


# The service's own route, allowing everything, on each backend (the cpu section runs them too).
SERVICE_LOCAL = Server(
    "service_local", "service, GET /api/whoami, local backend", SERVICE, ALLOW_ALL, "/api/whoami", False
)
SERVICE_REDIS = Server(
    "service_redis",
    "service, GET /api/whoami, Redis backend",
    SERVICE,
    {**ALLOW_ALL, "RATE_LIMIT_REDIS_TIMEOUT": REDIS_TIMEOUT},
    "/api/whoami",
    True,
)

SERVERS = [
    Server("tornado_bare", "bare Tornado hello world", [sys.executable, "-m", "bench.apps", "bare"], {}, "/", False),
    SERVICE_LOCAL,
    SERVICE_REDIS,
    Server(
        "tornado_limits",
        "Tornado + limits (async moving window, Redis) in prepare()",
        [sys.executable, "-m", "bench.apps", "limits"],
        {"RATE_LIMIT_CAPACITY": HIGH},
        "/",
        True,
    ),
    Server(
        "ours_local",
        "Tornado hello world as a RateLimitedHandler, local backend",
        [sys.executable, "-m", "bench.apps", "ours"],
        {"RATE_LIMIT_CAPACITY": HIGH},
        "/",
        False,
    ),
    Server(
        "ours_redis",
        "Tornado hello world as a RateLimitedHandler, Redis backend",
        [sys.executable, "-m", "bench.apps", "ours"],
        {"RATE_LIMIT_CAPACITY": HIGH},
        "/",
        True,
    ),
    *(
        Server(
            f"service_redis_{name}",
            f"service, GET /api/whoami, Redis backend, policy file: {name.replace('_', ' ')}",
            SERVICE,
            {"RATE_LIMIT_CONFIG": f"bench/policies/{name}.toml", "RATE_LIMIT_REDIS_TIMEOUT": REDIS_TIMEOUT},
            "/api/whoami",
            True,
        )
        for name in ("one_limit", "three_limits")
    ),
    Server(
        "service_redis_denied",
        "service, GET /api/whoami, Redis backend, mostly denied (10 at 1/s)",
        SERVICE,
        {"RATE_LIMIT_CAPACITY": "10", "RATE_LIMIT_REFILL_RATE": "1", "RATE_LIMIT_REDIS_TIMEOUT": REDIS_TIMEOUT},
        "/api/whoami",
        True,
    ),
]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _milliseconds(text: str) -> float:
    """A wrk duration such as 850.00us or 1.20s, in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        message = f"not a wrk duration: {text!r}"
        raise ValueError(message)
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Row:
    """The figures of `wrk --latency` output."""

    def find(pattern: str) -> str | None:
        match = re.search(pattern, output)
        return match.group(1) if match else None

    socket_errors = find(r"Socket errors: (.*)")
    return {
        "requests_per_s": float(find(r"Requests/sec:\s+([\d.]+)") or 0),
        "p50_ms": _milliseconds(find(r"\n\s+50%\s+(\S+)") or "0ms"),
        "p99_ms": _milliseconds(find(r"\n\s+99%\s+(\S+)") or "0ms"),
        "requests": int(find(r"(\d+) requests in") or 0),
        "non_2xx": int(find(r"Non-2xx or 3xx responses: (\d+)") or 0),
        "socket_errors": socket_errors.strip() if socket_errors else "",
    }


def run_wrk(url: str, seconds: float, headers: dict[str, str] | None = None, connections: int = CONNECTIONS) -> Row:
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    extra = [option for name, value in (headers or {}).items() for option in ("-H", f"{name}: {value}")]
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(output)


def run_python_load(port: int, path: str, seconds: float) -> Row:
    """The same load from tests/load.py's keep-alive clients, in this process."""

    async def load() -> tuple[list[Sample], float]:
        clients = Load(port, clients=CONNECTIONS, path=path, max_requests=10**9, max_seconds=seconds + 5)
        started = time.monotonic()
        clients.start()
        await asyncio.sleep(seconds)
        samples = await clients.stop()
        return samples, time.monotonic() - started

    samples, elapsed = asyncio.run(load())
    latencies = sorted(sample.latency * 1e3 for sample in samples if sample.status)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    failures = len(samples) - len(latencies)  # status 0: the connection failed
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "requests": len(samples),
        "non_2xx": sum(1 for sample in samples if sample.status and not 200 <= sample.status < 300),
        "socket_errors": f"{failures} failed connections" if failures else "",
    }


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def measure(port: int, path: str, seconds: float) -> Row:
    if load_generator() == "wrk":
        return run_wrk(f"http://127.0.0.1:{port}{path}", seconds)
    return run_python_load(port, path, seconds)


def limiter_counters(base_url: str) -> dict[str, float]:
    """The service's own count of its decisions (warm-up included), to show they were what was meant."""
    text = urllib.request.urlopen(base_url + "/metrics", timeout=5).read().decode()
    counters: dict[str, float] = {}
    for name in ("allowed", "blocked", "degraded", "errors"):
        values = re.findall(rf"^rate_limit_{name}_total(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.MULTILINE)
        counters[name] = sum(float(value) for value in values)
    return counters


def run_http(redis_url: str, seconds: float, warmup: float, flush: Callable[[], object]) -> list[Row]:
    """Every server in turn, measured with the same load; ``flush`` empties the Redis between them."""
    rows: list[Row] = []
    for spec in SERVERS:
        flush()
        redis = {"REDIS_URL": redis_url} if spec.redis else {}
        server = ServiceProcess(env={**ACCESS_LOG, **spec.env, **redis}, command=spec.command)
        row: Row = {"id": spec.id, "label": spec.label, "path": spec.path, "generator": load_generator()}
        try:
            server.start()
            measure(server.port, spec.path, warmup)
            row.update(measure(server.port, spec.path, seconds))
            if spec.command is SERVICE:
                row["counters"] = limiter_counters(server.url)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            server.stop()
        rows.append(row)
    return rows
