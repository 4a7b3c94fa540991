"""Real redis-server processes for tests: started on a free port, stopped by their own PID.

Never the machine's shared server on 6379: every test gets a server it may kill, freeze or restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (after SIGCONT, as a stopped process cannot act on it), SIGKILL after ``grace`` s; reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisProcess:
    """One redis-server child process with no persistence, on ``port`` (a free one by default).

    ``extra_args`` are added to the command line; ``config`` (text) becomes its config file, as sentinel
    mode requires; ``tls`` serves only TLS on the port (give the certificate options in ``extra_args``).
    """

    def __init__(
        self, port: int | None = None, extra_args: tuple[str, ...] = (), config: str | None = None, tls: bool = False
    ) -> None:
        self.port = port or free_port()
        self.workdir = tempfile.mkdtemp(prefix="rl-redis-")
        self.extra_args = extra_args
        self.config = config
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start the server and wait until it answers PING."""
        executable = shutil.which("redis-server")
        if executable is None:
            message = "redis-server is not installed: run `make test`, or apt-get install redis-server"
            raise RuntimeError(message)
        os.makedirs(self.workdir, exist_ok=True)
        config_file = []
        if self.config is not None:
            path = os.path.join(self.workdir, "redis.conf")
            with open(path, "w") as config:
                config.write(self.config)
            config_file = [path]
        port_options = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        command = [
            executable,
            *config_file,
            *port_options,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
            "--logfile",
            os.path.join(self.workdir, "log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers_ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                message = f"redis-server on port {self.port} did not start"
                raise RuntimeError(message)
            time.sleep(0.02)
        return self

    def answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                sock = raw
                if self.tls:
                    context = ssl.create_default_context()
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                    sock = context.wrap_socket(raw)
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test's own look at the server (INFO, CONFIG, keys)."""
        tls = {"ssl": True, "ssl_cert_reqs": "none"} if self.tls else {}
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True, **tls)  # type: ignore[arg-type]

    def kill(self) -> None:
        """kill -9: the server dies at once, connections and data with it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after freeze()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server (SIGKILL if it lingers) and reap it."""
        if self.process is None:
            return
        end_process(self.process, grace=5)
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)
