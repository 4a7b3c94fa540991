"""`python -m bench [--quick] [--only library|algorithms|cpu|http|memory|profile] [--output PATH]`

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

SECTIONS = ["library", "algorithms", "cpu", "http", "profile", "memory"]
FULL = {
    "cpu_seconds": 2.0,
    "cpu_rounds": 9,
    "library_seconds": 3.0,
    "http_seconds": 8.0,
    "http_warmup": 2.0,
    "profile_seconds": 8.0,
    "memory_keys": 1_000_000,
}
QUICK = {
    "cpu_seconds": 2.0,
    "cpu_rounds": 2,
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
    from bench.cpu import run_cpu
    from bench.http import run_http
    from bench.instructions import run_instructions
    from bench.memory import run_memory
    from bench.profile import run_profile
    from bench.proxy import run_proxy
    from bench.redis_floor import run_redis_floor

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
        if "algorithms" in sections:
            log(started, f"algorithms: what Redis spends per key, {settings['memory_keys']:,} keys per layout")
            results["redis_floor"] = run_redis_floor(redis.port, settings["memory_keys"], flush)
        if "cpu" in sections:
            rounds, seconds = settings["cpu_rounds"], settings["cpu_seconds"]
            log(started, f"cpu: server CPU per request, {rounds} interleaved rounds of {seconds:g} s per server")
            cpu = run_cpu(redis.url, redis.port, seconds, settings["http_warmup"], rounds, flush)
            results["cpu"] = cpu.pop("rows")
            results["cpu_derived"] = derived_cpu_rows(results["cpu"], cpu)
            results["cpu_meta"] = cpu
            log(started, "cpu: instructions per request under callgrind (~2.5 min)")
            results["instructions"] = run_instructions(redis.url)
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


def derived_cpu_rows(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The differences the targets name, from the cpu section's medians (rows a server failed are left out)."""
    by_id = {row["id"]: row for row in rows if "cpu_us_per_request" in row}
    derived = []
    base = by_id.get("bare_headers")
    for server in ("ours_local", "ours_redis", "service_local", "service_redis"):
        if base is not None and server in by_id:
            added = by_id[server]["cpu_us_per_request"] - base["cpu_us_per_request"]
            derived.append({"id": f"{server}_added_cpu", "value": added})
    bare, redis_route = by_id.get("bare"), by_id.get("ours_redis")
    if bare is not None and redis_route is not None:
        lone = redis_route["c1_p50_ms"] - bare["c1_p50_ms"] - meta["redis_round_trip_ms"]
        derived.append({"id": "ours_redis_c1_p50_over_bare_and_round_trip_ms", "value": lone})
        derived.append(
            {"id": "ours_redis_c64_p99_over_bare_ms", "value": redis_route["c64_p99_ms"] - bare["c64_p99_ms"]}
        )
    return derived


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
