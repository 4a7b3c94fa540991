"""The limiter in front of any service: requests per second through nginx asking /check (the shipped
deploy/nginx/nginx.conf) against the same nginx without the check, both in front of bare Tornado, and
/check's own requests per second and latency. wrk only (the Python load generator would measure
itself): without wrk or nginx the rows say so.

Every request is allowed (capacity and refill 1e9) and every one comes from 127.0.0.1 through nginx:
one key, the service on the bench's Redis.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.http import ACCESS_LOG, ALLOW_ALL, REDIS_TIMEOUT, SERVICE, Row, run_wrk
from tests.nginx_process import Nginx
from tests.service_process import ServiceProcess

# What nginx's auth_request location sends /check, for the row that loads /check directly.
CHECK_HEADERS = {"X-Original-Method": "GET", "X-Original-URI": "/", "X-Forwarded-For": "127.0.0.1"}
ROWS = (
    ("nginx_alone", "nginx alone in front of bare Tornado"),
    ("nginx_check", "nginx + /check (deploy/nginx/nginx.conf, Redis) in front of bare Tornado"),
    ("check_direct", "/check itself, as nginx asks it (Redis)"),
)


def run_proxy(redis_url: str, seconds: float, warmup: float, flush: Callable[[], object]) -> list[Row]:
    missing = [tool for tool in ("wrk", "nginx") if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]
    if missing:
        return [
            {"id": row_id, "label": label, "error": f"{' and '.join(missing)} not installed"} for row_id, label in ROWS
        ]
    flush()
    app = ServiceProcess(env=ACCESS_LOG, command=[sys.executable, "-m", "bench.apps", "bare"])
    limiter = ServiceProcess(
        env={
            **ACCESS_LOG,
            **ALLOW_ALL,
            "REDIS_URL": redis_url,
            "RATE_LIMIT_REDIS_TIMEOUT": REDIS_TIMEOUT,
            "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1",
        },
        command=SERVICE,
    )
    rows: list[Row] = []
    started: list[ServiceProcess | Nginx] = []
    try:
        for service in (app, limiter):
            started.append(service.start())
        for row_id, label in ROWS:
            row: Row = {"id": row_id, "label": label, "generator": "wrk"}
            try:
                if row_id == "check_direct":
                    url, headers = f"{limiter.url}/check", CHECK_HEADERS
                else:
                    directory = Path(tempfile.mkdtemp(prefix="rl-bench-nginx-"))
                    proxy = Nginx(directory, limiter.port, app.port, without_limiter=row_id == "nginx_alone")
                    started.append(proxy.start())
                    url, headers = f"http://127.0.0.1:{proxy.port}/", {}
                run_wrk(url, warmup, headers)
                row.update(run_wrk(url, seconds, headers))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    finally:
        for running in reversed(started):
            running.stop()
    return rows
