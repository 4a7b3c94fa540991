"""The command line (`python -m tornado_rate_limiter`, the `tornado-rate-limiter` script): --help, --version,
--check, and a start-up that ends in one line naming the setting, never in a traceback."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tornado_rate_limiter
from tests.redis_process import RedisProcess, free_port
from tests.service_process import ROOT

pytestmark = pytest.mark.process  # each test runs the command as a child process

README_SETTINGS = re.findall(r"^\| `([A-Z_]+)` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE)


def run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with only the given environment (and PATH), as a platform would start it."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tornado_rate_limiter", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


@pytest.fixture
def port_in_use() -> Iterator[int]:
    """A port of 127.0.0.1 that a listening socket of the test holds."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


class TestHelpAndVersion:
    def test_help_lists_every_setting_of_the_readme_and_does_not_serve(self) -> None:
        """--help exits 0 at once and names every variable of the README's settings table."""
        result = run("--help")
        assert result.returncode == 0
        assert len(README_SETTINGS) >= 20
        for name in README_SETTINGS:
            assert name in result.stdout, name
        assert "--check" in result.stdout and "listening" not in result.stderr

    def test_version(self) -> None:
        """--version prints the program and the package's version, and exits 0."""
        result = run("--version")
        assert (result.returncode, result.stdout.strip()) == (
            0,
            f"tornado-rate-limiter {tornado_rate_limiter.__version__}",
        )


class TestCheck:
    def test_local_settings_pass(self) -> None:
        """--check without REDIS_URL: what would run (the address, the policies, the local backend), exit 0."""
        result = run("--check", env={"PORT": str(free_port()), "RATE_LIMIT_CAPACITY": "7"})
        assert result.returncode == 0, result.stderr
        assert "ip: token bucket of 7 tokens, 1 per second" in result.stdout and "backend    local" in result.stdout

    def test_a_policy_file_is_read_and_its_policies_listed(self, tmp_path: Path) -> None:
        """--check with RATE_LIMIT_CONFIG: the file and its hash, each policy, shadow ones marked; exit 0."""
        path = tmp_path / "limits.toml"
        path.write_text(
            '[policies.burst]\ncapacity = 20\nrefill_rate = 5\n[policies.trial]\nalgorithm = "fixed_window"\n'
            'limit = 9\nwindow = 60\nmode = "shadow"\n[identities.ip]\npolicies = ["burst", "trial"]\n'
        )
        result = run("--check", env={"PORT": str(free_port()), "RATE_LIMIT_CONFIG": str(path)})
        assert result.returncode == 0, result.stderr
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert f"policies   from {path} (sha256 {digest})\n" in result.stdout
        assert "  burst: token bucket of 20 tokens, 5 per second\n" in result.stdout
        assert "  trial: fixed window of 9 per 60 s (shadow: never denies)\n" in result.stdout

    def test_a_ready_redis_passes(self, redis_server: RedisProcess) -> None:
        """--check with a Redis that serves: it connects, loads the script, decides once, and says so."""
        result = run("--check", env={"PORT": str(free_port()), "REDIS_URL": redis_server.url})
        assert result.returncode == 0, result.stderr
        assert "redis      ready" in result.stdout

    def test_a_redis_that_may_evict_limit_keys_is_warned_about(self) -> None:
        """--check against maxmemory with allkeys-lru: still 0 (it can serve), with a warning on stderr."""
        server = RedisProcess(extra_args=("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru")).start()
        try:
            result = run("--check", env={"PORT": str(free_port()), "REDIS_URL": server.url})
        finally:
            server.stop()
        assert result.returncode == 0 and "may evict limit keys (maxmemory-policy allkeys-lru)" in result.stderr

    def test_a_redis_that_cannot_serve_fails_in_one_line_with_the_password_hidden(self) -> None:
        """--check against nothing: exit 2, one line naming the cause; the URL shown hides the password."""
        url = f"redis://user:hunter2secret@127.0.0.1:{free_port()}/0"
        result = run("--check", env={"PORT": str(free_port()), "REDIS_URL": url})
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
        assert len(errors) == 1 and "connection refused" in errors[0], result.stderr
        assert "hunter2secret" not in result.stdout + result.stderr and "user:***@" in result.stdout
        assert "Traceback" not in result.stderr

    def test_a_port_in_use_fails(self, port_in_use: int) -> None:
        """--check finds that the address cannot be bound."""
        result = run("--check", env={"PORT": str(port_in_use)})
        assert result.returncode == 2 and "PORT" in result.stderr and "already listens" in result.stderr


class TestStartUp:
    @pytest.mark.parametrize(
        ("name", "value", "words"),
        [
            ("HOST", "nosuchhost.invalid", "no address of this machine has that name"),
            ("HOST", "999.1.1.1", "no address of this machine has that name"),
            ("HOST", "192.0.2.1", "not an address of this machine"),
            ("HOST", "a..b", "expected an IP address"),
            ("REDIS_URL", "redis://127.0.0.1:6379/abc", "the database must be a whole number"),
            ("RATE_LIMIT_REFILL_RATE", "1e-320", "too small"),
            ("RATE_LIMIT_FALLBACK_SHARE", "1/0", "such as 0.25 or 1/4"),
        ],
    )
    def test_a_bad_setting_exits_2_with_one_line_naming_it(self, name: str, value: str, words: str) -> None:
        """Exit 2 and one line on stderr that names the variable and what is wrong; no traceback."""
        result = run(env={"PORT": str(free_port()), name: value})
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and words in lines[0], result.stderr

    def test_a_port_in_use_exits_2_with_one_line(self, port_in_use: int) -> None:
        """Another process on the port: exit 2, one line naming PORT."""
        result = run(env={"PORT": str(port_in_use)})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PORT={port_in_use}" in lines[0] and "already listens" in lines[0], result.stderr
