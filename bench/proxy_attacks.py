"""`python -m bench.proxy_attacks [--tree PATH]`: what attackers get past the limiter behind a proxy.

Runs a real nginx from ``--tree``'s deploy/nginx/nginx.conf (this checkout by default; a `git worktree` of
an older commit for a before figure) in front of a lenient application (tests/lenient_app.py), asking the
service from ``--tree`` on a real Redis under a policy of 10 requests per client and a route ``^/api/search``
of cost 5 out of 10 (2 searches), and prints, for each attack of issue 24, what one client got admitted
against what was due. Attacks on /check itself (forged headers, the deny status, ``If-None-Match``) ask it
directly from a trusted peer, as Traefik's default ForwardAuth would pass them on. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import proxy_stack
from tests.nginx_process import Nginx
from tests.proxy_stack import SEARCH_SPELLINGS, lenient_app, policy_file
from tests.raw_http import Answer, request
from tests.redis_process import RedisProcess
from tests.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
BURST = 10  # requests per client (searches: 2)
PATH_FORMS = (*SEARCH_SPELLINGS, "/api%2Fsearch")  # and an encoded slash, which wsgiref decodes
Headers = list[tuple[str, str | bytes]]
_clients = itertools.count(2)


def client() -> str:
    """A loopback address of its own: a client with a full quota."""
    number = next(_clients)
    return f"127.0.{number // 250}.{number % 250 + 2}"


@dataclass
class Stack:
    proxy: Nginx
    limiter: ServiceProcess
    behind_traefik: ServiceProcess  # the same limiter told RATE_LIMIT_FORWARD_AUTH=traefik

    def through_nginx(
        self, source: str, target: str = "/", headers: list[tuple[str, str | bytes]] | None = None
    ) -> Answer:
        return request(self.proxy.port, target, headers, source=source)

    def check(self, headers: list[tuple[str, str | bytes]], limiter: ServiceProcess | None = None) -> Answer:
        """/check asked directly from 127.0.0.1, the trusted proxy's address."""
        return request((limiter or self.limiter).port, "/check", headers)


@contextmanager
def stack(tree: Path) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix="rl-proxy-attacks-"))
    redis_server = RedisProcess().start()
    policy = policy_file(directory, BURST)
    app = lenient_app()
    limiter, behind_traefik = (proxy_stack.limiter(redis_server, policy, proxy, tree) for proxy in ("nginx", "traefik"))
    started: list[ServiceProcess | Nginx] = []
    try:
        for service in (app, limiter, behind_traefik):
            service.start()
            started.append(service)
        (directory / "nginx").mkdir()
        config = tree / "deploy" / "nginx" / "nginx.conf"
        proxy = Nginx(directory / "nginx", limiter.port, app.port, config=config).start()
        started.append(proxy)
        yield Stack(proxy, limiter, behind_traefik)
    finally:
        for process in reversed(started):
            process.stop()
        redis_server.stop()


def outcome(answers: list[Answer], due: int) -> str:
    admitted = sum(1 for answer in answers if answer.status == 200)
    unchecked = sum(1 for answer in answers if answer.headers.get("x-ratelimit-degraded") == "true")
    statuses = ", ".join(
        f"{status} x{sum(1 for a in answers if a.status == status)}" for status in sorted({a.status for a in answers})
    )
    return f"{admitted} of {len(answers)} admitted (due {due}), {unchecked} served unchecked; {statuses}"


def control_bytes(stack: Stack) -> list[str]:
    source = client()
    plain = [stack.through_nginx(source, "/", [("X-A", b"a\x7fb")]) for _ in range(100)]
    source = client()
    inside = [stack.through_nginx(source, "/", [("Authorization", b"Bearer a\x7fb")]) for _ in range(100)]
    return [f"X-A: a\\x7fb, 100 requests: {outcome(plain, 10)}", f"Authorization: a\\x7fb, 100: {outcome(inside, 10)}"]


def path_forms(stack: Stack) -> list[str]:
    lines = []
    for form in PATH_FORMS:
        source = client()
        answers = [stack.through_nginx(source, form) for _ in range(12)]
        served = sorted({json.loads(a.body)["path"] for a in answers if a.status == 200})
        lines.append(f"{form}, 12 requests: {outcome(answers, 2)}; the application served {served}")
    return lines


def forged_original_request(stack: Stack) -> list[str]:
    """Traefik's ForwardAuth without authRequestHeaders passes the client's own X-Original-* to /check."""
    source = client()
    headers: list[tuple[str, str | bytes]] = [
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/api/search"),
        ("X-Forwarded-For", source),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/cheap"),
    ]
    answers = [stack.check(headers, stack.behind_traefik) for _ in range(12)]
    return [f"/check as Traefik asks, with the client's X-Original-URI: /cheap, 12 searches: {outcome(answers, 2)}"]


def deny_status_and_etag(stack: Stack) -> list[str]:
    source = client()
    base: list[tuple[str, str | bytes]] = [("X-Original-URI", "/"), ("X-Forwarded-For", source)]
    for _ in range(10):
        stack.check(base)
    unicode = stack.check([*base, ("X-RateLimit-Deny-Status", b"\xb2")])
    etag = stack.check([("X-Original-URI", "/"), ("X-Forwarded-For", client()), ("If-None-Match", "*")])
    source = client()
    through = [stack.through_nginx(source, "/", [("If-None-Match", "*")]) for _ in range(20)]
    return [
        f"/check with X-RateLimit-Deny-Status: \\xb2 (denied): {unicode.status}",
        f"/check with If-None-Match: *: {etag.status}",
        f"through nginx with If-None-Match: *, 20 requests: {outcome(through, 10)}",
    ]


def fail_open_headers(stack: Stack) -> list[str]:
    source = client()
    checked = stack.through_nginx(source, "/")
    assert stack.limiter.process is not None
    os.kill(stack.limiter.process.pid, signal.SIGSTOP)
    try:
        unchecked = stack.through_nginx(source, "/")
    finally:
        os.kill(stack.limiter.process.pid, signal.SIGCONT)
    seen = [json.loads(answer.body)["headers"] if answer.status == 200 else {} for answer in (checked, unchecked)]
    names = ("host", "x-forwarded-for")
    return [
        f"the application's Host and X-Forwarded-For, checked: {[seen[0].get(n) for n in names]}, "
        f"served unchecked (limiter frozen): {[seen[1].get(n) for n in names]} ({unchecked.status}, "
        f"degraded: {unchecked.headers.get('x-ratelimit-degraded')})"
    ]


def crowd_of_heavy_heads(stack: Stack) -> list[str]:
    """1,500 requests of 900 headers each from one client, 300 at a time: before, each cost the limiter
    about 2 ms to parse, and a crowd of them pushed it past nginx's 2 s timeout, serving them unchecked."""
    source = client()
    headers: Headers = [(f"X-H{number}", "v") for number in range(900)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=300) as pool:
        answers = list(pool.map(lambda _: stack.through_nginx(source, "/", headers), range(1500)))
    took = time.monotonic() - started
    return [f"1,500 requests of 900 headers, 300 at a time, one client, in {took:.1f} s: {outcome(answers, 10)}"]


ATTACKS = (
    control_bytes,
    path_forms,
    forged_original_request,
    deny_status_and_etag,
    fail_open_headers,
    crowd_of_heavy_heads,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_attacks", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run the limiter and nginx config from")
    arguments = parser.parse_args(argv)
    with stack(arguments.tree.resolve()) as running:
        for attack in ATTACKS:
            for line in attack(running):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
