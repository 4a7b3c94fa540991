"""The README's examples run as shown: its Python blocks, its subclass service, its curl sessions."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_process import RedisProcess, free_port
from tests.service_process import ROOT, ServiceProcess
from tests.service_process import http_get as get

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
SUBCLASS_EXAMPLE = next(block for block in PYTHON_BLOCKS if "RateLimitedHandler" in block)
CURL_SESSIONS = re.findall(r"```sh\n\$ curl (-s|-si) localhost:8080(\S+)\n(.*?)```", README, flags=re.DOTALL)


LIBRARY_EXAMPLE = next(block for block in PYTHON_BLOCKS if "# or LocalBackend()" in block)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_example_runs(block: str, redis_server: RedisProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """Each python block runs without error; the library example prints a real backend's decision."""
    code = block.replace("redis://localhost:6379/0", redis_server.url)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    if "print(" in code:
        assert capsys.readouterr().out == "True 99.0 0.0 0.1 100.0\n"


def test_library_example_runs_as_its_comment_says_on_the_local_backend(capsys: pytest.CaptureFixture[str]) -> None:
    """Switched to LocalBackend() as its comment suggests, the library example runs and decides alike."""
    code = LIBRARY_EXAMPLE.replace('RedisBackend.from_url("redis://localhost:6379/0")', "LocalBackend()")
    assert code != LIBRARY_EXAMPLE
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out == "True 99.0 0.0 0.1 100.0\n"


@pytest.fixture
def subclass_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The README's subclass example, saved as a script and run as is."""
    script = tmp_path / "search_service.py"
    script.write_text(SUBCLASS_EXAMPLE)
    service = ServiceProcess(command=[sys.executable, str(script)]).start()
    yield service
    service.stop()


@pytest.mark.process
def test_subclass_example_limits_searches(subclass_service: ServiceProcess) -> None:
    """/search answers with the query; 10 tokens: 1 plain search, 1 bulk (5), then a bulk is denied."""
    status, headers, body = get(subclass_service.url + "/search?q=tornado")
    assert status == 200
    assert json.loads(body) == {"query": "tornado", "identity": "ip:127.0.0.1"}
    assert headers["RateLimit-Policy"] == '"search";q=10;w=20'
    assert get(subclass_service.url + "/search?q=x&bulk=yes")[0] == 200
    status, headers, body = get(subclass_service.url + "/search?q=x&bulk=yes")
    assert status == 429
    assert json.loads(body)["violated-policies"] == ["search"]


@pytest.fixture(scope="module")
def default_service() -> Iterator[ServiceProcess]:
    service = ServiceProcess().start()
    yield service
    service.stop()


@pytest.mark.process
@pytest.mark.parametrize(("flags", "path", "shown"), CURL_SESSIONS, ids=[path for _, path, _ in CURL_SESSIONS])
def test_curl_sessions_show_what_the_service_answers(
    default_service: ServiceProcess, flags: str, path: str, shown: str
) -> None:
    """Every `$ curl localhost:8080/...` in the README shows the headers and body the service sends."""
    status, headers, body = get(default_service.url + path)
    shown_body = shown.strip().splitlines()[-1]
    assert json.loads(body) == json.loads(shown_body)
    if flags == "-si":
        head = shown.split("\n\n", 1)[0].splitlines()
        assert head[0].startswith(f"HTTP/1.1 {status} ")
        for line in head[1:]:
            name, value = line.split(": ", 1)
            assert headers[name] == value, name


def test_readme_shows_curl_sessions_and_python() -> None:
    """The README keeps examples for the tests above to run."""
    assert len(CURL_SESSIONS) >= 2 and len(PYTHON_BLOCKS) >= 2


CHECK_SESSION = re.search(r"```console\n\$ REDIS_URL=(\S+) tornado-rate-limiter --check\n(.*?)```", README, re.DOTALL)


@pytest.mark.process
def test_check_session_shows_what_check_prints() -> None:
    """The README's `--check` session, against a real Redis that wants a password and with `ulimit -n 1024`:
    the same lines (its port and the free one listened on aside; `(...)` stands for the server's words)."""
    assert CHECK_SESSION is not None
    url, shown = CHECK_SESSION.groups()
    server = RedisProcess().start()
    server.client().execute_command("ACL", "SETUSER", "app", "on", ">right", "~*", "+@all")
    port = str(free_port())
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tornado_rate_limiter", "--check"],
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT),
                "PORT": port,
                "REDIS_URL": url.replace("6379", str(server.port)),
            },
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            ),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    finally:
        server.stop()
    expected = shown.replace("6379", str(server.port)).replace(":8080", f":{port}").strip().splitlines()
    error = [line for line in result.stderr.splitlines() if line.startswith("configuration error")]
    assert result.returncode == 2
    assert result.stdout.strip().splitlines() == expected[:-1]
    pattern = re.escape(expected[-1]).replace(re.escape("(...)"), r"\(.+\)")
    assert len(error) == 1 and re.fullmatch(pattern, error[0]), result.stderr
