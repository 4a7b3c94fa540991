"""`python -m bench [--quick] [--only library|algorithms|http|memory|profile] [--output PATH]`

Runs the measurements, each bounded in time, against one redis-server of its own (a free port, no
persistence, stopped by its PID at the end); writes the figures as JSON (benchmarks.json next to the
output) and the report rendered from them. Only a full run writes the committed docs/BENCHMARKS.md by
default; --quick and --only write under build/bench/, so a short run never replaces the published figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import environment, library, report
from tests.redis_process import RedisProcess

SECTIONS = ["library", "algorithms", "http", "profile", "memory"]
FULL = {
    "library_seconds": 3.0,
    "http_seconds": 8.0,
    "http_warmup": 2.0,
    "profile_seconds": 8.0,
    "memory_keys": 1_000_000,
}
QUICK = {
    "library_seconds": 0.5,
    "http_seconds": 2.0,
    "http_warmup": 1.0,
    "profile_seconds": 2.0,
    "memory_keys": 100_000,
}


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


def measure(sections: list[str], settings: dict[str, Any], started: float) -> dict[str, Any]:
    # Imported here so that `--only memory` does not pay for what it does not run.
    from bench.algorithms import run_algorithms
    from bench.http import run_http
    from bench.memory import run_memory
    from bench.profile import run_profile
    from bench.proxy import run_proxy

    results: dict[str, Any] = {}
    redis = RedisProcess().start()
    flush = redis.client().flushall  # our own server: emptied between rows so no row inherits keys
    try:
        if "library" in sections:
            log(started, "library: in memory")
            results["library_local"] = library.run_local(settings["library_seconds"])
            log(started, f"library: Redis on port {redis.port}")
            results["library_redis"] = library.run_redis(redis.url, redis.port, settings["library_seconds"], flush)
        if "algorithms" in sections:
            log(
                started,
                "algorithms: Redis, memory, bytes per key" + ("" if settings["quick"] else ", exactness (~95 s)"),
            )
            results.update(
                run_algorithms(
                    redis.url, settings["library_seconds"], settings["memory_keys"], not settings["quick"], flush
                )
            )
        if "http" in sections:
            log(started, "http")
            results["http"] = run_http(redis.url, settings["http_seconds"], settings["http_warmup"], flush)
            log(started, "http: through nginx")
            results["proxy"] = run_proxy(redis.url, settings["http_seconds"], settings["http_warmup"], flush)
        if "profile" in sections:
            log(started, "profile")
            flush()
            try:
                results["profile"] = run_profile(redis.url, settings["profile_seconds"], settings["http_warmup"])
            except Exception as exc:
                results["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
        if "memory" in sections:
            log(started, f"memory: {settings['memory_keys']:,} keys per implementation")
            results["memory"] = run_memory(settings["memory_keys"])
    finally:
        redis.stop()
    return results


PUBLISHED = Path("docs/BENCHMARKS.md")
SCRATCH = Path("build/bench/BENCHMARKS.md")


def default_output(quick: bool, only: str | None) -> Path:
    """Where the report goes unless --output says: the published page for a full run only."""
    return SCRATCH if quick or only else PUBLISHED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks: writes docs/BENCHMARKS.md.")
    parser.add_argument("--quick", action="store_true", help="short runs and 100,000 keys, for development")
    parser.add_argument("--only", choices=SECTIONS, help="run one section")
    parser.add_argument(
        "--output", type=Path, help=f"the report to write (default: {PUBLISHED} for a full run, else {SCRATCH})"
    )
    arguments = parser.parse_args(argv)
    output: Path = arguments.output or default_output(arguments.quick, arguments.only)
    sections = [arguments.only] if arguments.only else SECTIONS
    settings = {**(QUICK if arguments.quick else FULL), "quick": arguments.quick}
    settings.update(keys=len(library.KEYS), callers=library.CALLERS)

    started = time.monotonic()
    meta = environment.describe()
    results = measure(sections, settings, started)
    meta.update(
        seconds=time.monotonic() - started,
        load_average_end=os.getloadavg(),
        settings=settings,
        sections=sections,
        arguments=sys.argv[1:] if argv is None else argv,
    )
    results = {"meta": meta, **results}

    output.parent.mkdir(parents=True, exist_ok=True)
    figures = output.with_name("benchmarks.json")
    figures.write_text(json.dumps(results, indent=2) + "\n")
    output.write_text(report.render(results))
    log(started, f"wrote {output} and {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
