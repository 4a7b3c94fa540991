"""Where each route spends its time: the server process under py-spy while wrk loads it.

py-spy starts the service as its child (a parent may trace its child whatever the ptrace scope) and
samples it until the service exits, which the benchmark asks for with SIGTERM to the service's PID.
py-spy pauses the service for each sample: without pausing (--nonblocking) it read about 40% of the
stacks torn, cut off below the coroutine that was running. The raw (collapsed-stack) output is then
summed per function: self samples (the function was on top of the stack) and total samples (it was
anywhere on the stack).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from bench.http import ACCESS_LOG, ALLOW_ALL, REDIS_TIMEOUT, measure
from tests.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
SAMPLES_PER_SECOND = 250
TOP = 12
TRUNK_SHARE = 0.95


def short_frame(frame: str) -> str:
    """`name (path:line)` with the path cut to what identifies it: the package onwards."""
    match = re.fullmatch(r"(.*) \((.*):(\d+)\)", frame)
    if match is None:
        return frame
    name, path, line = match.groups()
    for marker in ("/site-packages/", f"{ROOT}/", f"{STDLIB}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{line})"


def aggregate(raw: str) -> dict[str, Any]:
    """Self and total samples per function from py-spy's raw format (`frame;frame;... count` per line)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "_find_and_load" in stack:  # the imports at start, not serving
            continue
        count = int(count_text)
        frames = [short_frame(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):  # a recursive function counts once per sample
            total[frame] += count
    # The frames under nearly every sample (runpy, asyncio.run, the event loop) say nothing: left out.
    trunk = {frame for frame, count in total.items() if count >= TRUNK_SHARE * samples}
    inclusive = [(frame, count) for frame, count in total.most_common() if frame not in trunk][:TOP]
    return {"samples": samples, "self": own.most_common(TOP), "total": inclusive, "trunk": sorted(trunk)}


def child_pid(pid: int) -> int:
    """The PID of ``pid``'s only child: the service py-spy started."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    message = f"py-spy (PID {pid}) started no service"
    raise RuntimeError(message)


class Route(NamedTuple):
    id: str
    label: str
    command: list[str]  # after the interpreter
    env: dict[str, str]
    path: str
    redis: bool


_APPS_HIGH = {"RATE_LIMIT_CAPACITY": "1000000000"}
ROUTES = [
    Route(
        "bare_headers", "bare Tornado, setting the five headers", ["-m", "bench.apps", "bare_headers"], {}, "/", False
    ),
    Route("ours_local", "RateLimitedHandler, local backend", ["-m", "bench.apps", "ours"], _APPS_HIGH, "/", False),
    Route("ours_redis", "RateLimitedHandler, Redis backend", ["-m", "bench.apps", "ours"], _APPS_HIGH, "/", True),
    Route(
        "service_local",
        "service GET /api/whoami, local backend",
        ["-m", "tornado_rate_limiter"],
        ALLOW_ALL,
        "/api/whoami",
        False,
    ),
    Route(
        "service_redis",
        "service GET /api/whoami, Redis backend",
        ["-m", "tornado_rate_limiter"],
        {**ALLOW_ALL, "RATE_LIMIT_REDIS_TIMEOUT": REDIS_TIMEOUT},
        "/api/whoami",
        True,
    ),
]


def run_profile(redis_url: str, seconds: float, warmup: float) -> dict[str, Any]:
    """Every route of ROUTES profiled in turn; a route that fails says why and the others still run."""
    routes = []
    for route in ROUTES:
        try:
            routes.append({"id": route.id, "label": route.label, **profile_route(route, redis_url, seconds, warmup)})
        except Exception as exc:
            routes.append({"id": route.id, "label": route.label, "error": f"{type(exc).__name__}: {exc}"})
    return {"routes": routes, "samples_per_second": SAMPLES_PER_SECOND}


def profile_route(route: Route, redis_url: str, seconds: float, warmup: float) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        message = "py-spy is not installed: pip install -e '.[bench]'"
        raise RuntimeError(message)
    output = Path(tempfile.mkstemp(prefix="rl-profile-", suffix=".txt")[1])
    command = [py_spy, "record", "--format", "raw", "--function"]
    command += ["--rate", str(SAMPLES_PER_SECOND), "--output", str(output), "--", sys.executable, *route.command]
    env = {**ACCESS_LOG, **route.env, **({"REDIS_URL": redis_url} if route.redis else {})}
    server = ServiceProcess(env=env, command=command)
    service = 0
    try:
        server.start()
        assert server.process is not None
        service = child_pid(server.process.pid)
        measure(server.port, route.path, warmup)
        load = measure(server.port, route.path, seconds)
        os.kill(service, signal.SIGTERM)  # the service drains and exits ...
        server.wait(timeout=30)  # ... and py-spy, its child gone, writes its output and exits
        return {**aggregate(output.read_text()), "requests_per_s": load["requests_per_s"]}
    finally:
        if service:  # after a failure above the service may still run: py-spy does not pass SIGTERM on
            with contextlib.suppress(ProcessLookupError):
                os.kill(service, signal.SIGKILL)
        server.stop()
        output.unlink(missing_ok=True)
