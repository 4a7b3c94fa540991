"""The README's policy file: it loads, and a service configured by it answers as its comments and the
README's header example say (on both backends); the README's bad-file session is what the service prints."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tornado.httpclient import HTTPResponse

from tests.conftest import JWT_SECRET
from tests.service_process import ROOT, start_with_policy_file
from tests.test_auth import bearer, token
from tornado_rate_limiter.app.service import ServiceApplication, make_app
from tornado_rate_limiter.app.settings import Settings
from tornado_rate_limiter.handlers import RateLimitedHandler
from tornado_rate_limiter.limiter import RateLimiter
from tornado_rate_limiter.limiter.policies import parse_policies

README = (ROOT / "README.md").read_text(encoding="utf-8")
POLICY_FILE = re.search(r"```toml\n(.*?)```", README, re.DOTALL).group(1)  # type: ignore[union-attr]
HEADERS_SHOWN = re.search(r"```text\n(RateLimit-Policy: .*?)```", README, re.DOTALL).group(1)  # type: ignore[union-attr]
BAD_FILE_SESSION = re.search(
    r"```console\n\$ printf '(.*?)' > limits.toml\n\$ RATE_LIMIT_CONFIG=limits.toml tornado-rate-limiter\n(.*?)\n"
    r"\$ echo \$\?\n(\d+)\n```",
    README,
    re.DOTALL,
)
Fetch = Callable[..., Awaitable[HTTPResponse]]


class AnyApiHandler(RateLimitedHandler):
    """An application's API: every path under /api/, limited by the configuration."""

    def get(self) -> None:
        self.write("ok")


@pytest.fixture
def app(service_limiter: RateLimiter) -> ServiceApplication:
    settings = Settings(jwt_secret=JWT_SECRET, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    policies = parse_policies(POLICY_FILE.encode(), "limits.toml")
    return make_app(settings, [(r"/api/.*", AnyApiHandler)], limiter=service_limiter, policies=policies)


def from_address(address: str | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": address or f"198.51.100.{uuid.uuid4().int % 254 + 1}"}


def user(tier: str | None = None, sub: str | None = None) -> dict[str, str]:
    return bearer(token(sub=sub or f"u{uuid.uuid4().hex[:10]}", tier=tier))


@pytest.mark.gen_test
async def test_an_address_gets_the_headers_the_readme_shows(fetch: Fetch) -> None:
    """A fresh address's first request: burst and daily, the X- fields of burst (fewest left), exactly as
    the README shows them but for daily's t, which depends on the time of day."""
    response = await fetch("/api/items", headers=from_address())
    shown = dict(line.split(": ", 1) for line in HEADERS_SHOWN.strip().splitlines())
    for name, value in shown.items():
        if name == "RateLimit":
            assert re.fullmatch(re.sub(r"t=52081$", r"t=\\d+", re.escape(value)), response.headers[name])
        else:
            assert response.headers[name] == value, name


@pytest.mark.gen_test
async def test_tiers_route_and_exemptions_are_as_the_comments_say(fetch: Fetch) -> None:
    """pro: pro-burst; free (or an unknown or absent tier): burst and daily (new-hourly is shadow, in no
    header); internal: not limited; /api/search costs 5 of search's 30; 10.0.0.0/8 and ops-bot exempt."""
    assert (await fetch("/api/items", headers=user("pro"))).headers["RateLimit-Policy"] == '"pro-burst";q=200;w=4'
    for tier in ("free", "gold", None):
        policies = (await fetch("/api/items", headers=user(tier))).headers["RateLimit-Policy"]
        assert policies == '"burst";q=20;w=4, "daily";q=5000;w=86400'
    for unlimited in (user("internal"), from_address("10.20.30.40"), user(sub="ops-bot")):
        response = await fetch("/api/items", headers=unlimited)
        assert response.code == 200 and "RateLimit" not in response.headers
    search = await fetch("/api/search?q=x", headers=from_address())
    assert search.headers["RateLimit-Policy"] == '"search";q=30;w=60'
    assert search.headers["X-RateLimit-Remaining"] == "25"


def test_the_bad_file_session_is_what_the_service_prints(tmp_path: Path) -> None:
    """The README's session: the same one line on stderr, and the exit status it shows."""
    assert BAD_FILE_SESSION is not None
    text, shown, status = BAD_FILE_SESSION.groups()
    (tmp_path / "limits.toml").write_text(text.encode().decode("unicode_escape"))
    result = start_with_policy_file(tmp_path / "limits.toml")
    assert (result.returncode, result.stderr.strip()) == (int(status), shown)
