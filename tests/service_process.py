"""`python -m tornado_rate_limiter` (or any script) as a real child process on a free port, stopped by its own PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

from tests.redis_process import end_process, free_port

ROOT = Path(__file__).resolve().parent.parent


def http_get(url: str) -> tuple[int, Message, bytes]:
    """Status, headers (looked up case-insensitively) and body, for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for_health(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    """Wait until ``url`` answers (any status) while ``process`` runs; RuntimeError if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = f"the process exited with {process.returncode}"
            raise RuntimeError(message)
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:  # refused, reset, or no answer yet (a service still connecting to Redis holds it)
            time.sleep(0.05)
    message = f"{url} did not answer within {timeout} s"
    raise RuntimeError(message)


def start_with_policy_file(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the service with RATE_LIMIT_CONFIG naming ``path`` by its file name, from its directory, in a
    bare environment, to see how a start ends (a valid file serves until the 30 s timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "tornado_rate_limiter"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "RATE_LIMIT_CONFIG": path.name,
            "PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=30,
        cwd=path.parent,
    )


class ServiceProcess:
    """One service process; its output goes to a log file that tests can read."""

    def __init__(self, env: dict[str, str] | None = None, command: list[str] | None = None, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.command = command or [sys.executable, "-m", "tornado_rate_limiter"]
        self.cwd = cwd  # the checkout it runs from (``python -m`` imports from there first)
        base = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "JWT_SECRET")}
        self.env = {**base, "PORT": str(self.port), "HOST": "127.0.0.1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="rl-service-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ServiceProcess:
        """Start the process and wait until it answers HTTP (GET /health, any status)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        try:
            wait_for_health(self.process, self.url + "/health", timeout)
        except BaseException as exc:  # whatever went wrong, no process is left behind
            output = self.log()
            self.stop()
            message = f"service did not start: {exc!r}: {output}"
            raise RuntimeError(message) from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """Send SIGTERM, as a platform does before stopping a process."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; always reaped."""
        if self.process is None:
            return
        end_process(self.process, grace=15)
        self.process = None
        self.log_path.unlink(missing_ok=True)
