"""Memory per key: `python -m bench.memory <implementation> [--keys N] [--rss]` prints one JSON object.

Each measurement runs in a fresh process that builds one limiter (the same constructors as the library
benchmark, bench/library.py) and makes one decision on each of N distinct keys. The keys are made on the
fly, so an implementation pays for the key strings it keeps. The policy (10 tokens, refilled at 0.001/s)
leaves every bucket short of full, so nothing may expire during the run.

Without --rss the figure is tracemalloc's traced memory after minus before, divided by N: what Python
allocated and still holds. With --rss (a separate process, since tracemalloc's own bookkeeping would
count) it is the growth of the resident set, divided by N: what the OS sees, allocator slack included.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import library

CAPACITY, RATE = 10.0, 0.001
ROOT = Path(__file__).resolve().parent.parent
IMPLEMENTATIONS = [(row_id, label) for row_id, label, _ in library.LOCAL]


def key_for(i: int) -> str:
    return f"ip:10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settle() -> None:
    """Let background threads (limits' expiry timer) finish their pass, then collect garbage."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(timeout=10)
    gc.collect()


def measure(implementation: str, keys: int, rss: bool) -> dict[str, Any]:
    if not rss:
        tracemalloc.start()
    make = {row_id: factory for row_id, _, factory in library.LOCAL}[implementation]
    batch = make(CAPACITY, RATE)
    settle()
    before = rss_bytes() if rss else tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    allowed = 0
    for i in range(keys):
        allowed += batch((key_for(i),))
    elapsed = time.perf_counter() - started
    settle()
    after = rss_bytes() if rss else tracemalloc.get_traced_memory()[0]
    return {"bytes_per_key": (after - before) / keys, "allowed": allowed, "seconds": elapsed}


def measure_in_child(implementation: str, keys: int, rss: bool) -> float:
    """Bytes per key, measured by a fresh `python -m bench.memory` process."""
    command = [sys.executable, "-m", "bench.memory", implementation, "--keys", str(keys), *(["--rss"] if rss else [])]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
    if completed.returncode != 0:
        message = f"exit {completed.returncode}: {completed.stderr.strip()[-300:]}"
        raise RuntimeError(message)
    result = json.loads(completed.stdout)
    if result["allowed"] != keys:  # every key must hold a bucket, or the division lies
        message = f"only {result['allowed']} of {keys} decisions were allowed"
        raise RuntimeError(message)
    return float(result["bytes_per_key"])


def run_memory(keys: int) -> list[dict[str, Any]]:
    """Each implementation in two fresh processes (traced, then RSS), as many at a time as there are
    cores (at most 4): under tracemalloc a million keys take a minute for the slowest peers, and only
    memory is measured here, which running side by side does not change."""
    # The slowest first (the peers at the end of the list, under tracemalloc), so the pool ends evenly.
    jobs = [(row_id, rss) for rss in (False, True) for row_id, _ in reversed(IMPLEMENTATIONS)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {job: pool.submit(measure_in_child, job[0], keys, job[1]) for job in jobs}
    rows: list[dict[str, Any]] = []
    for row_id, label in IMPLEMENTATIONS:
        row: dict[str, Any] = {"id": row_id, "label": label, "keys": keys}
        try:
            row["traced_bytes_per_key"] = futures[row_id, False].result()
            row["rss_bytes_per_key"] = futures[row_id, True].result()
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("implementation", choices=[row_id for row_id, _ in IMPLEMENTATIONS])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rss", action="store_true", help="measure the resident set instead of tracemalloc")
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.implementation, arguments.keys, arguments.rss)))


if __name__ == "__main__":
    main()
