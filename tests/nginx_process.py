"""nginx as a real child process, from the shipped deploy/nginx/nginx.conf with its ports substituted,
stopped by its PID (the end-to-end proxy test and the benchmark use it)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from pathlib import Path

from tests.redis_process import end_process, free_port
from tests.service_process import ROOT

CONFIG = ROOT / "deploy" / "nginx" / "nginx.conf"
FAIL_OPEN = "            add_header X-RateLimit-Degraded $served_unchecked always;\n            proxy_pass http://application;\n"
AUTH_REQUEST = "            auth_request /_rate_limit;\n"
FAIL_CLOSED_COMMENTED = '            # add_header Retry-After "1" always;\n            # return 503;\n'


class Nginx:
    """nginx run in the foreground from the shipped config, its ports substituted, stopped by its PID."""

    def __init__(
        self,
        directory: Path,
        limiter_port: int,
        app_port: int,
        *,
        fail_closed: bool = False,
        without_limiter: bool = False,
        config: Path = CONFIG,
    ) -> None:
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"  # /usr/sbin may not be on a user's PATH
        self.port = free_port()
        text = config.read_text()  # another checkout's, for a before figure
        for shipped, port in (
            ("127.0.0.1:8080", limiter_port),
            ("127.0.0.1:9000", app_port),
            ("127.0.0.1:8000", self.port),
        ):
            assert shipped in text
            text = text.replace(shipped, f"127.0.0.1:{port}")
        if fail_closed:
            assert FAIL_OPEN in text and FAIL_CLOSED_COMMENTED in text
            text = text.replace(FAIL_OPEN, "").replace(FAIL_CLOSED_COMMENTED, FAIL_CLOSED_COMMENTED.replace("# ", ""))
        if without_limiter:  # nginx alone in front of the application: the benchmark's baseline
            assert AUTH_REQUEST in text
            text = text.replace(AUTH_REQUEST, "")
        self.directory = directory
        (directory / "nginx.conf").write_text(text)
        self.log = directory / "nginx.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.directory),
                    "-c",
                    str(self.directory / "nginx.conf"),
                    "-e",
                    "stderr",
                    "-g",
                    "daemon off;",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=1).connect()
                return self
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise RuntimeError(self.log.read_text())

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, grace=5)
