"""The command line: ``tornado-rate-limiter`` (or ``python -m tornado_rate_limiter``) serves; ``--check``
validates the settings and Redis without serving; ``--help`` lists the settings; ``--version``.

Exit codes: 0 served and stopped cleanly (or the check passed); 2 a setting, the address or Redis is not
usable, said in one line naming what to change.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from tornado_rate_limiter.app.log_limits import CLIENT_CAUSED, limit_repeated_logs
from tornado_rate_limiter.app.process import ListenError, bind, serve
from tornado_rate_limiter.app.service import build_limiter, policies_of
from tornado_rate_limiter.app.settings import SETTINGS_HELP, Settings, SettingsError
from tornado_rate_limiter.limiter import BackendError, RedisBackend
from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.policies import PolicyFileError, PolicySet
from tornado_rate_limiter.limiter.policies.model import SHADOW
from tornado_rate_limiter.limiter.policies.store import PolicyStore
from tornado_rate_limiter.limiter.redis_url import redacted

PROGRAM = "tornado-rate-limiter"
CONFIGURATION_ERROR = 2


def version() -> str:
    from tornado_rate_limiter import __version__

    return __version__


def parser() -> argparse.ArgumentParser:
    width = max(len(name) for name, _, _ in SETTINGS_HELP)
    table = "\n".join(f"  {name:<{width}}  {meaning} (default: {default})" for name, default, meaning in SETTINGS_HELP)
    return argparse.ArgumentParser(
        prog=PROGRAM,
        description="A distributed rate limiter for Tornado: serves the rate-limited service on $HOST:$PORT.",
        epilog=f"settings, all from the environment:\n{table}\n\nexit status: 0 ok, 2 a setting is not usable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (or check) as the environment says; the exit status of the process."""
    arguments = parser()
    arguments.add_argument("--version", action="version", version=f"{PROGRAM} {version()}")
    arguments.add_argument(
        "--check",
        action="store_true",
        help="validate the settings, the address and the Redis connection, print what would run, and exit",
    )
    options = arguments.parse_args(argv)
    # --check prints a report of its own: only warnings and errors of the log belong in it.
    level = logging.WARNING if options.check else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    # With ACCESS_LOG=errors the access log is about failures, which a flood would repeat; "all" is asked for.
    limit_repeated_logs(CLIENT_CAUSED + (("tornado.access",) if settings.access_log == "errors" else ()))
    try:
        policies = policies_of(settings)
    except PolicyFileError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    if options.check:
        return asyncio.run(check(settings, policies))
    try:
        sockets = bind(settings)
    except ListenError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    asyncio.run(serve(settings, sockets, policies))
    return 0


async def check(settings: Settings, policies: PolicyStore | PolicySet) -> int:
    """Print what the settings would run; 0 when it could serve, 2 (and why, in one line) when not."""
    print(f"{PROGRAM} {version()}: the settings are valid")
    try:
        for sock in bind(settings):
            sock.close()
    except ListenError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    print(f"listen     {settings.address}")
    print(
        f"clients    at most {settings.connection_cap} connections; request head "
        f"within {settings.header_timeout:g} s, idle {settings.idle_timeout:g} s, body within "
        f"{settings.body_timeout:g} s and {settings.max_body_bytes} bytes, response sent within "
        f"{settings.response_timeout:g} s"
    )
    for line in describe_policies(policies):
        print(line)
    if settings.redis_url is None:
        print("backend    local: limits in this process's memory (REDIS_URL is not set)")
        return 0
    print(
        f"backend    redis at {redacted(settings.redis_url)}; when it fails: fail-{settings.failure_strategy}, "
        f"fallback share {settings.fallback_share:g}"
    )
    limiter = build_limiter(settings)
    assert isinstance(limiter.primary, RedisBackend)
    started = time.perf_counter()
    try:
        await limiter.primary.connect()
    except BackendError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    finally:
        await limiter.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"redis      ready: connected, script loaded, one decision made ({elapsed_ms:.1f} ms)")
    if limiter.primary.evicts_keys:
        print(
            f"warning: Redis may evict limit keys (maxmemory-policy {limiter.primary.eviction_policy}): an "
            "evicted bucket is full again; use noeviction on a Redis of its own",
            file=sys.stderr,
        )
    return 0


def describe_policy(policy: AnyPolicy) -> str:
    return algorithm_for(policy).describe(policy)


def describe_policies(policies: PolicyStore | PolicySet) -> list[str]:
    """What --check says of the policies: where they come from, then one line per policy."""
    if isinstance(policies, PolicyStore):
        policy_set = policies.current
        lines = [f"policies   from {policies.path} (sha256 {policy_set.sha256[:12]})"]
    else:
        policy_set = policies
        lines = ["policies   from the environment (RATE_LIMIT_CONFIG is not set)"]
    for name, policy in policy_set.policies.items():
        mode = " (shadow: never denies)" if policy_set.modes.get(name) == SHADOW else ""
        lines.append(f"  {describe_policy(policy)}{mode}")
    for kind, policies_of_kind in policy_set.kind_policies.items():
        lines += [
            f"  {describe_policy(policy)}" + ("" if policy.name == kind else f" ({kind})")
            for policy in policies_of_kind
        ]
    return lines
