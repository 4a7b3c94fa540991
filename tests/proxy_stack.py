"""The parts every proxy test and bench/proxy_attacks.py put behind a real proxy: a policy of a burst per
client and a search route of cost 5 out of 10 (2 searches), the lenient application, and the limiter told
which proxy asks it and that the proxy (127.0.0.1) is trusted."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.redis_process import RedisProcess
from tests.service_process import ROOT, ServiceProcess

SEARCHES = 2  # what one client may search: cost 5 out of 10
# The spellings of /api/search that slipped its route through nginx (issue 24).
SEARCH_SPELLINGS = (
    "/api/%73earch",
    "/%61pi/search",
    "//api/search",
    "/api/./search",
    "/api/x/../search",
    "/api/sea%72ch;x=1",
    "http://app/api/%73earch",
)


def policy_file(directory: Path, burst: int) -> Path:
    """A policy file in ``directory``: ``burst`` requests per client, refilled too slowly to matter, and
    ``^/api/search`` at cost 5 of a policy of its own of 10."""
    path = directory / "limits.toml"
    path.write_text(
        f"""
[policies.burst]
capacity = {burst}
refill_rate = 0.001

[policies.search]
capacity = 10
refill_rate = 0.001

[identities.ip]
policies = ["burst"]

[[routes]]
path = "^/api/search"
cost = 5
policies = {{ ip = ["search"] }}
"""
    )
    return path


def lenient_app() -> ServiceProcess:
    """tests/lenient_app.py as a process on a free port (not started)."""
    app = ServiceProcess()
    app.command = [sys.executable, "-m", "tests.lenient_app", str(app.port)]
    return app


def limiter(redis_server: RedisProcess, policy: Path, forward_auth: str, tree: Path = ROOT) -> ServiceProcess:
    """The service from ``tree`` on ``redis_server`` under ``policy``, asked by ``forward_auth``'s proxy on
    127.0.0.1 (not started)."""
    env = {
        "REDIS_URL": redis_server.url,
        "RATE_LIMIT_CONFIG": str(policy),
        "RATE_LIMIT_FORWARD_AUTH": forward_auth,
        "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1",
        "PYTHONPATH": str(tree),
    }
    return ServiceProcess(env, cwd=tree)
