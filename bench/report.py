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

Row = dict[str, Any]
Figure = tuple[str, str, str]  # (section, row id, field)

# (what, measured figure, compared with or None for an absolute goal, comparison, goal)
TARGETS: list[tuple[str, Figure, Figure | None, str, float]] = [
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


def targets_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for what, measured, base, comparison, goal in TARGETS:
        value = figure(results, measured)
        if base is not None:
            reference = figure(results, base)
            value = value / reference if value is not None and reference else None
        shown = "-" if value is None else (f"{value:.2f}x" if base is not None else number(value, 1))
        wanted = f"{comparison} {goal:g}{'x' if base is not None else ''}"
        verdict = "not measured" if value is None else ("met" if _COMPARE[comparison](value, goal) else "missed")
        rows.append([what, shown, wanted, verdict])
    return ["## Targets", "", *table(["target", "measured", "goal", ""], rows), ""]


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
    if "error" in profile:
        return ["## Profile", "", f"failed: {profile['error']}", ""]
    settings = results["meta"]["settings"]
    samples = profile["samples"]

    def rows(entries: list[list[Any]]) -> list[list[str]]:
        return [[f"`{name}`", f"{count:,}", f"{count / samples:.1%}"] for name, count in entries]

    return [
        "## Profile: the service on Redis under load",
        "",
        "`python -m tornado_rate_limiter` with REDIS_URL (capacity and refill 1e9), started by",
        f"`py-spy record --format raw --function --rate {profile['samples_per_second']}` while wrk loads "
        f"`GET /api/whoami` for {settings['profile_seconds']:g} s",
        f"after a warm-up ({profile['requests_per_s']:,.0f} req/s under the profiler, which pauses the process "
        f"for each sample). {samples:,} samples",
        "of Python stacks: idle ones are not sampled, and those of the imports at start are left out. Self: the",
        "function was running (native code it called included); total: it was anywhere on the stack.",
        "",
        "### By self samples",
        "",
        *table(["function", "self samples", "share"], rows(profile["self"])),
        "",
        "### By total samples",
        "",
        "Left out, being under nearly every sample: " + ", ".join(f"`{name}`" for name in profile["trunk"]) + ".",
        "",
        *table(["function", "total samples", "share"], rows(profile["total"])),
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
    if meta["settings"]["quick"] or meta["sections"] != ["library", "algorithms", "http", "profile", "memory"]:
        header += [f"**Partial run** (`python -m bench {' '.join(meta['arguments'])}`): not for comparison.", ""]
    sections = [
        header,
        targets_section(results),
        library_section(results),
        algorithms_section(results),
        http_section(results),
        proxy_section(results),
        memory_section(results),
        profile_section(results),
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
