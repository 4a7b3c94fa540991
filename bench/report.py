"""docs/BENCHMARKS.md from the figures of a run (docs/benchmarks.json); it measures nothing.

`python -m bench.report [--input docs/benchmarks.json] [--output docs/BENCHMARKS.md]` writes the text
again from the JSON, e.g. after changing a table here.
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SECTIONS = ["library", "algorithms", "cpu", "http", "profile", "memory"]  # those of a full run (bench/__main__.py)
Row = dict[str, Any]
Figure = tuple[str, str, str]  # (section, row id, field)

# (what, measured figure, compared with or None for an absolute goal, comparison, goal)
TARGETS: list[tuple[str, Figure, Figure | None, str, float]] = [
    # The limiter's own cost, measured in the server (cpu section): added CPU per request over a bare
    # handler that sets the same headers, and requests per second at 64 connections.
    (
        "added server CPU per request, RateLimitedHandler on the local backend (us)",
        ("cpu_derived", "ours_local_added_cpu", "value"),
        None,
        "<=",
        10.0,
    ),
    (
        "added server CPU per request, RateLimitedHandler on Redis (us)",
        ("cpu_derived", "ours_redis_added_cpu", "value"),
        None,
        "<=",
        30.0,
    ),
    (
        "req/s at -c64, RateLimitedHandler local vs bare Tornado",
        ("cpu", "ours_local", "c64_requests_per_s"),
        ("cpu", "bare", "c64_requests_per_s"),
        ">=",
        0.95,
    ),
    (
        "req/s at -c64, RateLimitedHandler Redis vs bare Tornado",
        ("cpu", "ours_redis", "c64_requests_per_s"),
        ("cpu", "bare", "c64_requests_per_s"),
        ">=",
        0.85,
    ),
    (
        "req/s at -c64, RateLimitedHandler Redis vs Tornado + limits",
        ("cpu", "ours_redis", "c64_requests_per_s"),
        ("cpu", "limits", "c64_requests_per_s"),
        ">=",
        1.5,
    ),
    (
        "req/s at -c64, RateLimitedHandler Redis vs Tornado + throttled-py",
        ("cpu", "ours_redis", "c64_requests_per_s"),
        ("cpu", "throttled", "c64_requests_per_s"),
        ">=",
        3.0,
    ),
    (
        "p50 at -c1 on Redis over bare's p50 and one Redis round trip (ms)",
        ("cpu_derived", "ours_redis_c1_p50_over_bare_and_round_trip_ms", "value"),
        None,
        "<=",
        0.05,
    ),
    (
        "p99 at -c64 on Redis over bare's p99 (ms)",
        ("cpu_derived", "ours_redis_c64_p99_over_bare_ms", "value"),
        None,
        "<=",
        2.0,
    ),
    (
        "Redis decisions/s vs redis-benchmark, same script, 64 in flight on one connection",
        ("library_redis", "ours_redis", "decisions_per_s"),
        ("library_redis", "redis_benchmark_c1_p64", "decisions_per_s"),
        ">=",
        0.9,
    ),
    (
        "Redis bytes per key at the memory keys, token bucket (INFO memory)",
        ("algorithms_memory", "ours_token_bucket", "redis_bytes_per_key"),
        None,
        "<=",
        100.0,
    ),
    (
        "service route on Redis, policy file with three limits vs one: cost (one's req/s over three's)",
        ("http", "service_redis_one_limit", "requests_per_s"),
        ("http", "service_redis_three_limits", "requests_per_s"),
        "<=",
        1.3,
    ),
    (
        "the same in the library alone (RedisBackend.acquire_all, three limits vs acquire, one)",
        ("several_limits", "one_limit", "decisions_per_s"),
        ("several_limits", "three_limits", "decisions_per_s"),
        "<=",
        1.3,
    ),
    (
        "a request with three limits: script calls (round trips' worth) per request",
        ("several_limits", "three_limits", "script_calls_per_request"),
        None,
        "<=",
        1.0,
    ),
    (
        "Redis backend decisions/s vs limits async moving window",
        ("library_redis", "ours_redis", "decisions_per_s"),
        ("library_redis", "limits_moving_redis", "decisions_per_s"),
        ">=",
        3.0,
    ),
    (
        "Redis backend decisions/s vs raw EVALSHA, 64 per pipeline",
        ("library_redis", "ours_redis", "decisions_per_s"),
        ("library_redis", "raw_pipelined", "decisions_per_s"),
        ">=",
        0.8,
    ),
    (
        "rate-limited route on Redis vs bare Tornado, req/s",
        ("http", "service_redis", "requests_per_s"),
        ("http", "tornado_bare", "requests_per_s"),
        ">=",
        0.8,
    ),
    (
        "rate-limited route on the local backend vs bare Tornado, req/s",
        ("http", "service_local", "requests_per_s"),
        ("http", "tornado_bare", "requests_per_s"),
        ">=",
        0.95,
    ),
    (
        "rate-limited route on Redis vs Tornado + limits, req/s",
        ("http", "service_redis", "requests_per_s"),
        ("http", "tornado_limits", "requests_per_s"),
        ">=",
        1.5,
    ),
    (
        "same, with the library's RateLimitedHandler hello world (bare's response + headers): on Redis",
        ("http", "ours_redis", "requests_per_s"),
        ("http", "tornado_bare", "requests_per_s"),
        ">=",
        0.8,
    ),
    (
        "same, RateLimitedHandler hello world on the local backend vs bare Tornado",
        ("http", "ours_local", "requests_per_s"),
        ("http", "tornado_bare", "requests_per_s"),
        ">=",
        0.95,
    ),
    (
        "same, RateLimitedHandler hello world on Redis vs Tornado + limits",
        ("http", "ours_redis", "requests_per_s"),
        ("http", "tornado_limits", "requests_per_s"),
        ">=",
        1.5,
    ),
    (
        "local backend decisions/s (acquire_now) vs token-bucket",
        ("library_local", "ours_acquire_now", "decisions_per_s"),
        ("library_local", "token_bucket", "decisions_per_s"),
        ">=",
        1.0,
    ),
    # Each of our algorithms against the peers' nearest, on one Redis (limits has no token bucket: its nearest
    # is the moving window).
    *(
        (
            f"Redis {ours.removeprefix('ours_').replace('_', ' ')} decisions/s vs {peer.replace('_', ' ', 1)}",
            ("algorithms_redis", ours, "decisions_per_s"),
            ("algorithms_redis", peer, "decisions_per_s"),
            ">=",
            goal,
        )
        for ours, peer, goal in [
            ("ours_token_bucket", "limits_moving", 3.0),
            ("ours_fixed_window", "limits_fixed", 3.0),
            ("ours_sliding_window", "limits_sliding", 3.0),
            ("ours_token_bucket", "throttled_token_bucket", 10.0),
            ("ours_token_bucket", "throttled_gcra", 10.0),
            ("ours_fixed_window", "throttled_fixed_window", 10.0),
            ("ours_sliding_window", "throttled_sliding_window", 10.0),
        ]
    ),
    (
        "local backend bytes per key (tracemalloc, memory section)",
        ("memory", "ours_acquire_now", "traced_bytes_per_key"),
        None,
        "<=",
        200.0,
    ),
]
_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


def figure(results: dict[str, Any], where: Figure) -> float | None:
    section, row_id, field = where
    for row in results.get(section) or []:
        if row.get("id") == row_id and isinstance(row.get(field), (int, float)):
            return float(row[field])
    return None


def number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def target_value(results: dict[str, Any], measured: Figure, base: Figure | None) -> float | None:
    """A target's figure in this run: the measured one, or its ratio to ``base``; None if either is missing."""
    value = figure(results, measured)
    if base is None:
        return value
    reference = figure(results, base)
    return value / reference if value is not None and reference else None


def targets_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for what, measured, base, comparison, goal in TARGETS:
        value = target_value(results, measured, base)
        shown = "-" if value is None else (f"{value:.2f}x" if base is not None else number(value, 1))
        wanted = f"{comparison} {goal:g}{'x' if base is not None else ''}"
        verdict = "not measured" if value is None else ("met" if _COMPARE[comparison](value, goal) else "missed")
        rows.append([what, shown, wanted, verdict])
    return ["## Targets", "", *table(["target", "measured", "goal", ""], rows), ""]


def _difference(
    results: dict[str, Any], section: str, field: str, minuend: str, subtrahend: str, digits: int = 1
) -> str:
    high, low = figure(results, (section, minuend, field)), figure(results, (section, subtrahend, field))
    return "-" if high is None or low is None else f"{high - low:+,.{digits}f}"


def _quotient(results: dict[str, Any], section: str, field: str, numerator: str, denominator: str) -> str:
    return ratio(figure(results, (section, numerator, field)), figure(results, (section, denominator, field)))


def _bounds(results: dict[str, Any]) -> dict[str, str]:
    """For each target this project may miss on this machine: what bounds it, from this run's figures, and
    what would move it. Keyed by the target's first words (TARGETS)."""

    def cpu(high: str, low: str) -> str:
        return _difference(results, "cpu", "cpu_us_per_request", high, low)

    def instructions(high: str, low: str) -> str:
        return _difference(results, "instructions", "instructions_per_request", high, low, digits=0)

    def rps(numerator: str, denominator: str) -> str:
        return _quotient(results, "cpu", "c64_requests_per_s", numerator, denominator)

    meta = results.get("cpu_meta") or {}
    lone, trip = meta.get("lone_decision_ms"), meta.get("redis_round_trip_ms")
    three = figure(results, ("several_limits", "three_limits", "redis_us_per_request"))
    one = figure(results, ("several_limits", "one_limit", "redis_us_per_request"))
    floor = {row["id"]: row["bytes_per_key"] for row in results.get("redis_floor") or []}
    check_before_body = (
        "Tornado's streaming mode, which RateLimitedHandler needs to check before the body is read (DESIGN.md),"
        f" costs {instructions('bare_streamed', 'bare_headers')} instructions per request by itself (bare +"
        " headers in streaming mode, callgrind): `_execute` runs as a task that waits for the body's future, two"
        " event-loop turns more than bare. Under load that is"
        f" {cpu('bare_streamed', 'bare_headers')} us, within the noise of this section (see each round's"
        f" figure). Our own check costs {instructions('ours_local', 'bare_streamed')} instructions more"
        f" ({cpu('ours_local', 'bare_streamed')} us under load): the plan lookup, acquire_now, the header"
        " values. The profile above shows no frame of ours among the top self samples; the rest is Tornado's."
    )
    return {
        "added server CPU per request, RateLimitedHandler on the local backend": check_before_body
        + " What would move it: a Tornado hook that runs before the body is read without streaming mode; or"
        " compiling our path (mypyc on limiter/local.py, algorithms/ and bucket.py took acquire_now from"
        " 516k to 711k decisions/s when tried on 2026-12-03: about 0.5 us per request).",
        "added server CPU per request, RateLimitedHandler on Redis": f"On top of the local path,"
        f" {cpu('ours_redis', 'ours_local')} us ({instructions('ours_redis', 'ours_local')} instructions in-process,"
        " where every request is a round trip of its own): the reply's future, the handler's coroutine waking in a"
        " later loop turn, the socket's write and read (shared by a batch), and parsing. At 32 connections"
        " requests arrive across loop turns, so batches are small. What would move it: bigger batches (a server"
        " with more connections), or a compiled reply path.",
        "req/s at -c64, RateLimitedHandler local vs bare": "Setting the five headers alone gets"
        f" {rps('bare_headers', 'bare')} bare's req/s, and streaming mode {rps('bare_streamed', 'bare')}: the goal"
        " leaves next to nothing for the check itself. " + check_before_body,
        "req/s at -c64, RateLimitedHandler Redis vs bare": "The CPU above: the server is CPU-bound at 64"
        " connections, so req/s follow the CPU per request.",
        "req/s at -c64, RateLimitedHandler Redis vs Tornado + limits": f"A limiter that cost nothing would reach"
        f" {rps('bare', 'limits')} (bare's req/s over this app's); the goal asks for more than"
        " 90% of bare's throughput on Redis. Per request, limits' app adds "
        f"{cpu('limits', 'bare_headers')} us of CPU to ours' {cpu('ours_redis', 'bare_headers')} (cpu section).",
        "req/s at -c64, RateLimitedHandler Redis vs Tornado + throttled": f"Not reachable here: even a limiter"
        f" that cost nothing would reach {rps('bare', 'throttled')} (bare's req/s over this app's). Per request,"
        f" throttled-py's app adds {cpu('throttled', 'bare_headers')} us of CPU to ours'"
        f" {cpu('ours_redis', 'bare_headers')}.",
        "p50 at -c1 on Redis": f"A lone decision in-process takes {lone or 0:.3f} ms against a PING round trip"
        f" of {trip or 0:.3f} ms: the write, epoll waking the loop, the read and the reply handed to the"
        " caller's coroutine, each a loop turn (three per decision). The local route's p50 at -c1 is"
        f" {_difference(results, 'cpu', 'c1_p50_ms', 'ours_local', 'bare', digits=3)} ms over bare's."
        " What would move it: writing a lone call at once instead of at the next loop turn (saves one turn;"
        " to be measured against what it costs batching under load).",
        "p99 at -c64 on Redis": "At 64 connections the server is saturated, so latency follows throughput:"
        f" p50 at -c64 is {_quotient(results, 'cpu', 'c64_p50_ms', 'ours_redis', 'bare')} bare's and the CPU per"
        f" request {_quotient(results, 'cpu', 'cpu_us_per_request', 'ours_redis', 'bare')}; the p99 grows with"
        " them. What would move it: what lowers the CPU per request.",
        "Redis bytes per key": f"Redis 7.0 spends {floor.get('floor', 0):.1f} bytes on a key with a TTL even"
        " with a 7-byte name and a shared integer value ('What Redis spends per key'). Packing a bucket's two"
        f" doubles in 16 bytes takes a key from {floor.get('ours', 0):.1f} to {floor.get('binary_value', 0):.1f}"
        f" there, and a shorter name on top saves nothing ({floor.get('short_key_binary', 0):.1f}: jemalloc's size"
        " classes); neither reaches 100 while each identity is a key with its own TTL. What would move it:"
        " Redis 7.4's per-field TTLs (HPEXPIRE), holding many identities in one hash, or Redis 8's embedded keys.",
        "the same in the library alone": f"Redis itself spends {three or 0:.1f} us per request of three limits"
        f" against {one or 0:.1f} for one (INFO commandstats): each limit reads, decides and writes its own key."
        " Over HTTP (the row above) the rest of the request dilutes it.",
        "local backend decisions/s (acquire_now) vs token-bucket": "token-bucket's consume keeps no bound on"
        " the keys, no expiry and returns a bool; ours keeps the LRU order (a pop and a reinsert), the shard's"
        " lock and a Decision. Compiling ours with mypyc (tried, not adopted) reached 0.57x.",
    }


def bounds_section(results: dict[str, Any]) -> list[str]:
    """The targets missed in this run, each with what bounds it and what would move it."""
    bounds = _bounds(results)
    lines = []
    for what, measured, base, comparison, goal in TARGETS:
        value = target_value(results, measured, base)
        if value is None or _COMPARE[comparison](value, goal):
            continue
        reason = next((text for start, text in bounds.items() if what.startswith(start)), None)
        if reason is not None:
            lines.append(f"- **{what}**: {reason}")
    if not lines:
        return []
    return ["## Targets missed: what bounds them", "", *lines, ""]


def error_cells(row: Row, columns: int) -> list[str]:
    return [f"failed: {row['error']}", *["-"] * (columns - 1)]


def library_section(results: dict[str, Any]) -> list[str]:
    settings = results["meta"]["settings"]
    lines = ["## Library decisions per second", ""]
    local = results.get("library_local")
    if local:
        base = figure(results, ("library_local", "ours_acquire_now", "decisions_per_s"))
        rows = []
        for row in local:
            if "error" in row:
                rows.append([row["label"], *error_cells(row, 3)])
                continue
            rate = row["decisions_per_s"]
            rows.append([row["label"], number(rate), ratio(rate, base), f"{row['allowed_share']:.1%}"])
        lines += [
            f"### In memory, one thread: {settings['keys']:,} keys cycled, {settings['library_seconds']:g} s each",
            "",
            "Capacity 1e9 and refill 1e9/s (or a window of 1e9 per second), so every decision is allowed. Each",
            "figure is the best of three runs of a third of the time (all three are in the JSON).",
            "",
            *table(["implementation", "decisions/s", "vs acquire_now", "allowed"], rows),
            "",
        ]
    remote = results.get("library_redis")
    if remote:
        base = figure(results, ("library_redis", "ours_redis", "decisions_per_s"))
        rows = []
        for row in remote:
            if "error" in row:
                rows.append([row["label"], *error_cells(row, 3)])
                continue
            rate, allowed = row["decisions_per_s"], row.get("allowed_share")
            rows.append([row["label"], number(rate), ratio(rate, base), "-" if allowed is None else f"{allowed:.1%}"])
        lines += [
            f"### Redis: {settings['callers']} concurrent asyncio callers, {settings['keys']:,} keys, "
            f"{settings['library_seconds']:g} s each",
            "",
            "One redis-server started by the run (no persistence), emptied between rows. RedisBackend runs with",
            "`timeout=1.0`: its default 50 ms is a serving deadline, and a call queued behind 63 others must not",
            "be counted as a failure here. The pipelined baselines keep one (or two) pipelines of 64 calls in",
            "flight: one pipeline holds as many decisions outstanding as the 64 callers do. redis-benchmark",
            "runs 64 connections over the same script and 10,000 keys; it shows what the server itself serves.",
            "Best of three runs, as above (redis-benchmark: one run).",
            "",
            *table(["implementation", "decisions/s", "vs RedisBackend", "allowed"], rows),
            "",
        ]
    return lines


def http_section(results: dict[str, Any]) -> list[str]:
    rows_in = results.get("http")
    if not rows_in:
        return []
    settings = results["meta"]["settings"]
    base = figure(results, ("http", "tornado_bare", "requests_per_s"))
    rows, notes = [], []
    for row in rows_in:
        if "error" in row:
            rows.append([row["label"], *error_cells(row, 5)])
            continue
        rate = row["requests_per_s"]
        cells = [number(rate), number(row["p50_ms"], 2), number(row["p99_ms"], 2), ratio(rate, base)]
        rows.append([row["label"], *cells, f"{row['non_2xx']:,} of {row['requests']:,}"])
        if row.get("socket_errors"):
            notes.append(f"- {row['label']}: socket errors: {row['socket_errors']}")
        if "counters" in row:
            counts = ", ".join(f"{name} {value:,.0f}" for name, value in row["counters"].items())
            notes.append(f"- {row['label']}: the service's own counters (warm-up included): {counts}")
    generator = rows_in[0].get("generator", "wrk")
    how = (
        f"`wrk -t1 -c64 -d{settings['http_seconds']:g}s --latency`"
        if generator == "wrk"
        else f"tests/load.py's Python client (64 keep-alive connections, {settings['http_seconds']:g} s; no wrk here)"
    )
    return [
        "## HTTP requests per second",
        "",
        f"Each server is a child process loaded by {how} over loopback after a {settings['http_warmup']:g} s",
        "warm-up, then stopped by its PID. The service is `python -m tornado_rate_limiter` on `GET /api/whoami`",
        "with capacity and refill 1e9 (every request allowed, the path that costs the most) and, on Redis, the bench's",
        "redis-server with `RATE_LIMIT_REDIS_TIMEOUT=1.0`. Every server logs server errors (5xx) only: the",
        "service with `ACCESS_LOG=errors`, the others likewise (bench/apps.py). All requests come from",
        f"127.0.0.1: one key. The load generator, the server and redis-server share {results['meta']['cores']} cores.",
        "",
        *table(["server", "req/s", "p50 ms", "p99 ms", "vs bare Tornado", "non-2xx"], rows),
        "",
        *notes,
        "",
    ]


def algorithms_section(results: dict[str, Any]) -> list[str]:
    settings = results["meta"]["settings"]
    lines = ["## Algorithms", ""]
    for section, title, base_id in (
        (
            "algorithms_redis",
            f"### On Redis: {settings['callers']} concurrent asyncio callers, {settings['keys']:,} keys, "
            f"{settings['library_seconds']:g} s each",
            "ours_token_bucket",
        ),
        ("algorithms_local", "### In memory, one thread (LocalBackend.acquire_now)", "ours_token_bucket"),
    ):
        rows_in = results.get(section)
        if not rows_in:
            continue
        base = figure(results, (section, base_id, "decisions_per_s"))
        rows = [
            [row["label"], *error_cells(row, 2)]
            if "error" in row
            else [row["label"], number(row["decisions_per_s"]), ratio(row["decisions_per_s"], base)]
            for row in rows_in
        ]
        lines += [title, "", *table(["implementation", "decisions/s", "vs our token bucket"], rows), ""]
    if results.get("algorithms_redis"):
        lines[2:2] = [
            "Every decision allowed (a token bucket of 1e9 refilled at 1e9/s; windows of 1e9 per hour). The same",
            "redis-server for every row, emptied between rows; best of three runs.",
            "",
        ]
    several = results.get("several_limits")
    if several:
        base = figure(results, ("several_limits", "one_limit", "decisions_per_s"))
        rows = [
            [row["label"], *error_cells(row, 4)]
            if "error" in row
            else [
                row["label"],
                number(row["decisions_per_s"]),
                ratio(base, row["decisions_per_s"]),
                f"{row['script_calls_per_request']:.2f}",
                number(row["redis_us_per_request"], 1),
            ]
            for row in several
        ]
        lines += [
            "### A request with several limits, on Redis",
            "",
            "Requests per second as above (each allowed); then, over 2,000 more requests, Redis's own count of",
            "script calls (EVALSHA) and of the microseconds it spent in them, per request (INFO commandstats).",
            "Cost is one limit's requests/s over the row's.",
            "",
            *table(
                ["request", "requests/s", "cost vs one limit", "script calls per request", "Redis us per request"],
                rows,
            ),
            "",
        ]
    memory = results.get("algorithms_memory")
    if memory:
        rows = [
            [row["label"], number(row["redis_bytes_per_key"]), number(row["local_bytes_per_key"])] for row in memory
        ]
        lines += [
            f"### Bytes per key at {memory[0]['keys']:,} keys",
            "",
            "One decision on each of that many new keys (`ip:10.a.b.c`), under policies that keep every key (a",
            "bucket of 10 refilled at 0.001/s, windows of an hour). Redis: `INFO memory` used_memory after minus",
            "before; in memory: tracemalloc's traced memory after minus before. Both divided by the keys.",
            "",
            *table(["algorithm", "Redis bytes/key", "in-memory bytes/key"], rows),
            "",
        ]
    exactness = results.get("algorithms_exactness")
    if exactness:
        lines += [
            "### Exactness: what each admits against what its own definition allows",
            "",
            "In real time on the same Redis (the peers read their own clocks, and throttled-py's token bucket",
            "Redis's TIME in whole seconds): every limiter gets the same requests at the same moments, on a key",
            "of its own. The definition column applies each limiter's own documented algorithm to the moments",
            "the requests were sent (limits' windows start at a key's first hit; ours and throttled-py's at the",
            "epoch). Over: it admitted more than its definition allows; under: fewer.",
            "",
        ]
        for name, scenario in exactness.items():
            rows = []
            for row in scenario["rows"]:
                gap = row["admitted"] - row["definition"]
                verdict = "exact" if gap == 0 else (f"over by {gap}" if gap > 0 else f"under by {-gap}")
                rows.append([row["label"], str(row["admitted"]), str(row["definition"]), verdict])
            requests = scenario["rows"][0]["requests"] if scenario["rows"] else 0
            lines += [
                f"**{name}**: {scenario['description']} ({requests} requests)",
                "",
                *table(["limiter", "admitted", "its definition allows", ""], rows),
                "",
            ]
    return lines if len(lines) > 2 else []


def proxy_section(results: dict[str, Any]) -> list[str]:
    rows_in = results.get("proxy")
    if not rows_in:
        return []
    settings = results["meta"]["settings"]
    base = figure(results, ("proxy", "nginx_alone", "requests_per_s"))
    rows = [
        [row["label"], *error_cells(row, 4)]
        if "error" in row
        else [
            row["label"],
            number(row["requests_per_s"]),
            number(row["p50_ms"], 2),
            number(row["p99_ms"], 2),
            ratio(row["requests_per_s"], base),
        ]
        for row in rows_in
    ]
    return [
        "## In front of any service: through nginx",
        "",
        f"`wrk -t1 -c64 -d{settings['http_seconds']:g}s --latency` after a {settings['http_warmup']:g} s warm-up:",
        "nginx (deploy/nginx/nginx.conf, its ports substituted) in front of bench/apps.py's bare Tornado, with the",
        "auth_request line removed for the first row; the service on the bench's Redis decides, every request",
        "allowed; the last row loads /check itself with the headers nginx sends. nginx, the application, the",
        f"limiter, redis-server and wrk share {results['meta']['cores']} cores.",
        "",
        *table(["setup", "req/s", "p50 ms", "p99 ms", "vs nginx alone"], rows),
        "",
    ]


def memory_section(results: dict[str, Any]) -> list[str]:
    rows_in = results.get("memory")
    if not rows_in:
        return []
    rows = []
    for row in rows_in:
        if "error" in row:
            rows.append([row["label"], *error_cells(row, 2)])
            continue
        rows.append([row["label"], number(row["traced_bytes_per_key"]), number(row["rss_bytes_per_key"])])
    keys = rows_in[0]["keys"]
    return [
        f"## Memory per key at {keys:,} keys",
        "",
        "Each figure comes from a fresh process (`python -m bench.memory <implementation>`) that makes one",
        f'decision on each of {keys:,} distinct keys made on the fly (`f"ip:10.{{a}}.{{b}}.{{c}}"`, so the key',
        "strings are paid for), under a policy of 10 tokens refilled at 0.001/s, so that no bucket is full",
        "again and nothing expires. traced: tracemalloc's traced memory after minus before; RSS: growth of the",
        "resident set in a second process without tracemalloc (allocator slack included). Both divided by",
        "the number of keys.",
        "",
        *table(["implementation", "traced bytes/key", "RSS bytes/key"], rows),
        "",
    ]


def profile_section(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile")
    if not profile:
        return []
    if "routes" not in profile:  # a run before the profiles of every route
        return []
    settings = results["meta"]["settings"]
    lines = [
        "## Where the time goes: each route under load",
        "",
        f"Each server started by `py-spy record --format raw --function --rate {profile['samples_per_second']}`",
        f"while wrk loads it for {settings['profile_seconds']:g} s after a warm-up (Redis routes: the bench's",
        "redis-server). py-spy pauses the process for each sample, so the req/s here are lower than below.",
        "Self: the function was running (native code it called included); total: it was anywhere on the",
        "stack (the frames under nearly every sample, the event loop's, are left out).",
        "",
    ]
    for route in profile["routes"]:
        lines += [f"### {route['label']}", ""]
        if "error" in route:
            lines += [f"failed: {route['error']}", ""]
            continue
        samples = route["samples"]

        def rows(entries: list[list[Any]], samples: int = samples) -> list[list[str]]:
            return [[f"`{name}`", f"{count / samples:.1%}"] for name, count in entries]

        lines += [
            f"{samples:,} samples at {route['requests_per_s']:,.0f} req/s under the profiler.",
            "",
            *table(["by self samples", "share"], rows(route["self"][:8])),
            "",
            *table(["by total samples", "share"], rows(route["total"][:12])),
            "",
        ]
    return lines


def cpu_section(results: dict[str, Any]) -> list[str]:
    rows_in, meta = results.get("cpu"), results.get("cpu_meta")
    if not rows_in or not meta:
        return []
    by_id = {row["id"]: row for row in rows_in if "cpu_us_per_request" in row}
    base, bare = by_id.get("bare_headers"), by_id.get("bare")
    rows = []
    for row in rows_in:
        if "cpu_us_per_request" not in row:
            rows.append([row["label"], *error_cells(row, 7)])
            continue
        cpu = row["cpu_us_per_request"]
        added = f"{cpu - base['cpu_us_per_request']:+.1f}" if base else "-"
        rounds = ", ".join(f"{entry['cpu_us_per_request']:.0f}" for entry in row["rounds"])
        rows.append(
            [
                row["label"],
                f"{cpu:.1f} ({rounds})",
                added,
                number(row["c64_requests_per_s"]),
                ratio(row["c64_requests_per_s"], bare["c64_requests_per_s"] if bare else None),
                f"{row['c64_p50_ms']:.2f} / {row['c64_p99_ms']:.2f}",
                f"{row['c1_p50_ms']:.3f}",
                str(int(row["non_2xx"])),
            ]
        )
    return [
        "## Server CPU per request",
        "",
        "What each server process spends per request, which the machine's noise moves far less than req/s:",
        "its CPU time (user + system, `/proc/PID/stat`) before and after a "
        f"`wrk -t1 -c32 -d{meta['seconds']:g}s` run, over the requests",
        f"completed. Every server runs at once, idle but for its turn; {meta['rounds']} rounds, interleaved (each",
        "server once per round), and the median of the rounds (each round's figure in brackets). Each round",
        "also runs `wrk -c1` (p50 of a lone client: no batching can help) and `wrk -c64` (req/s, p50 and p99).",
        "Limits are so high that every request is allowed; all requests come from 127.0.0.1: one key.",
        f"A Redis PING round trip on this machine: {meta['redis_round_trip_ms']:.3f} ms; one `RateLimiter.acquire`",
        f"on Redis with no other caller, in-process: {meta['lone_decision_ms']:.3f} ms (medians).",
        "",
        *table(
            [
                "server",
                "CPU us/request",
                "added over bare + headers",
                "req/s -c64",
                "vs bare",
                "p50 / p99 ms -c64",
                "p50 ms -c1",
                "non-2xx",
            ],
            rows,
        ),
        "",
        *instructions_lines(results),
    ]


def instructions_lines(results: dict[str, Any]) -> list[str]:
    rows_in = results.get("instructions")
    if not rows_in:
        return []
    by_id = {row["id"]: row for row in rows_in if "instructions_per_request" in row}
    base = by_id.get("bare_headers")
    rows = []
    for row in rows_in:
        if "instructions_per_request" not in row:
            rows.append([row["label"], *error_cells(row, 2)])
            continue
        count = row["instructions_per_request"]
        share = "-"
        if base:
            added = count - base["instructions_per_request"]
            share = f"{added:+,.0f} ({added / base['instructions_per_request']:+.1%})"
        rows.append([row["label"], number(count), share])
    return [
        "### Instructions per request (callgrind)",
        "",
        "The same apps, one request at a time through Tornado's whole flow in one process, on a connection that",
        "writes nowhere (no kernel, no load generator): valgrind's count of the instructions one request costs,",
        "the difference of two runs (bench/instructions.py). Noise does not move it; it leaves out what batching",
        "saves under load (on Redis each request here is a round trip of its own).",
        "",
        *table(["app", "instructions/request", "added over bare + headers"], rows),
        "",
    ]


def redis_floor_section(results: dict[str, Any]) -> list[str]:
    rows_in = results.get("redis_floor")
    if not rows_in:
        return []
    keys = results["meta"]["settings"]["memory_keys"]
    rows = [[row["label"], f"`{row['key_example']}`", f"{row['bytes_per_key']:.1f}"] for row in rows_in]
    return [
        "### What Redis spends per key, whatever we store",
        "",
        f"{keys:,} keys written with `SET key value PX 3600000` in raw pipelines, one layout after another on",
        "the emptied server; `INFO memory` used_memory after minus before, over the keys (bench/redis_floor.py).",
        "Every key with a TTL costs Redis a keyspace entry and an expires entry (24 bytes each, 32 in jemalloc's",
        "size classes) and a slot in each table: the floor row is what a key costs when its value is a shared",
        "small integer (no allocation) and its name fits the smallest class.",
        "",
        *table(["layout", "key", "Redis bytes/key"], rows),
        "",
    ]


def environment_section(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    load_start, load_end = meta["load_average_start"], meta["load_average_end"]
    machine = [
        ["CPU", f"{meta['cpu']}, {meta['cores']} cores"],
        ["OS", meta["os"]],
        ["Python", meta["python"]],
        ["redis-server", meta["redis_server"]],
        ["wrk", meta["wrk"]],
        ["load average (1 min) at start / end", f"{load_start[0]:.2f} / {load_end[0]:.2f}"],
        ["source tree", f"`{meta['tree']}`"],
    ]
    packages = [[name, version] for name, version in meta["packages"].items()]
    return [
        "## Machine",
        "",
        *table(["", ""], machine),
        "",
        "## Packages",
        "",
        *table(["package", "version"], packages),
        "",
    ]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    header = [
        "# Benchmarks",
        "",
        f"Measured on {meta['date']} by `make bench` (`python -m bench`) in {meta['seconds']:.0f} s; all the",
        "figures below come from that one run, so the ratios compare like with like. Rerun with `make bench`;",
        "`python -m bench.report` writes this page again from `docs/benchmarks.json`.",
        "",
    ]
    if meta["settings"]["quick"] or sorted(meta["sections"]) != sorted(SECTIONS):
        header += [f"**Partial run** (`python -m bench {' '.join(meta['arguments'])}`): not for comparison.", ""]
    sections = [
        header,
        profile_section(results),
        targets_section(results),
        bounds_section(results),
        cpu_section(results),
        library_section(results),
        algorithms_section(results),
        redis_floor_section(results),
        http_section(results),
        proxy_section(results),
        memory_section(results),
        environment_section(results),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"))
    arguments = parser.parse_args()
    arguments.output.write_text(render(json.loads(arguments.input.read_text())))


if __name__ == "__main__":
    main()
