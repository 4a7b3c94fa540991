"""The package as users get it: one import namespace, in a wheel, an sdist and a fresh virtualenv, used
from a project that has an ``app.py`` and a ``handlers/`` package of its own."""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado

import tornado_rate_limiter
from tests.redis_process import RedisProcess, free_port
from tests.service_process import http_get as get
from tests.service_process import wait_for_health
from tornado_rate_limiter.limiter.redis import TOKEN_BUCKET_SHA

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tornado_rate_limiter"

# Runs in a fresh interpreter that sees only the installed wheel (not this source tree).
PROBE = """
import asyncio, json, sys
import tornado_rate_limiter.limiter, tornado_rate_limiter.lua
from tornado_rate_limiter import Policy, RedisBackend
from tornado_rate_limiter.limiter.redis import TOKEN_BUCKET_SHA

async def decide():
    async with RedisBackend.from_url(sys.argv[1], timeout=2.0) as backend:
        return await backend.acquire("wheel", Policy(2, 1.0, name="wheel"))

decision = asyncio.run(decide())
print(json.dumps({"limiter": tornado_rate_limiter.limiter.__file__, "lua": tornado_rate_limiter.lua.__file__,
                  "sha": TOKEN_BUCKET_SHA, "allowed": decision.allowed, "remaining": decision.remaining}))
"""

# A user's project: its own app.py and handlers/ package, the names that once shadowed ours.
USER_HANDLERS = """
from tornado_rate_limiter import RateLimitedHandler


class SearchHandler(RateLimitedHandler):
    def get(self) -> None:
        self.write({"query": self.get_argument("q", ""), "where": __name__})
"""
USER_APP = """
import asyncio
import sys

import tornado.web

from handlers import SearchHandler
from tornado_rate_limiter import LocalBackend, Policy, RateLimitConfig, RateLimiter


async def main() -> None:
    config = RateLimitConfig(limiter=RateLimiter(LocalBackend()), policies={"ip": Policy(2, 0.001, name="ip")})
    application = tornado.web.Application([(r"/search", SearchHandler)], rate_limit=config)
    application.listen(int(sys.argv[1]), "127.0.0.1")
    await asyncio.Event().wait()


asyncio.run(main())
"""


def source_copy(destination: Path) -> Path:
    """This tree as a fresh clone has it (the package's links kept as links), without build leftovers."""
    ignore = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, destination, symlinks=True, ignore=ignore)
    return destination


def pip(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, capture_output=True, cwd=cwd)


def build_wheel(source: Path, out: Path) -> Path:
    """A wheel built from ``source`` without network (no build isolation)."""
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source))
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = source_copy(tmp_path_factory.mktemp("source") / "tree")
    return build_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A new virtualenv with the wheel installed (console script included). Its dependencies come from
    this interpreter's site-packages through a .pth line: no network, and no view of this source tree."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel))
    purelib = sysconfig.get_paths(vars={"base": str(venv)})["purelib"]
    (Path(purelib) / "dependencies.pth").write_text(f"{Path(tornado.__file__).resolve().parent.parent}\n")
    return venv


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A directory holding the user's own ``app.py`` and ``handlers/`` package."""
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "__init__.py").write_text(USER_HANDLERS)
    (tmp_path / "app.py").write_text(USER_APP)
    return tmp_path


def clean_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "REDIS_URL", "REDIS_TLS_URL", "PORT", "HOST", "JWT_SECRET")
    }


class TestWheel:
    def test_the_wheel_holds_one_top_level_package(self, wheel: Path) -> None:
        """Every file of the wheel is under tornado_rate_limiter/ (or its dist-info): no app, handlers,
        limiter or lua at top level to clash with a user's own."""
        names = zipfile.ZipFile(wheel).namelist()
        tops = {name.split("/")[0] for name in names}
        assert {top for top in tops if not top.endswith(".dist-info")} == {PACKAGE}
        for expected in ("lua/token_bucket.lua", "py.typed", "app/cli.py", "limiter/redis.py", "handlers/__init__.py"):
            assert f"{PACKAGE}/{expected}" in names

    def test_the_metadata_is_complete(self, wheel: Path) -> None:
        """License, author, project URLs, classifiers, python_requires, the console script and the LICENSE."""
        archive = zipfile.ZipFile(wheel)
        info = next(name.split("/")[0] for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        assert metadata["Name"] == "tornado-rate-limiter"
        assert metadata["Version"] == tornado_rate_limiter.__version__
        assert "MIT" in (metadata["License"] or metadata["License-Expression"] or "")
        assert metadata["Author"] and metadata["Requires-Python"] == ">=3.11"
        assert len(metadata.get_all("Project-URL") or []) >= 2
        assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
        assert (
            "tornado-rate-limiter = tornado_rate_limiter.app.cli:main"
            in archive.read(f"{info}/entry_points.txt").decode()
        )
        assert any(name.startswith(info) and name.endswith("LICENSE") for name in archive.namelist())

    def test_an_sdist_builds_the_same_wheel(self, tmp_path: Path, wheel: Path) -> None:
        """The sdist (built by the PEP 517 hook) carries real files and builds a wheel with the same files."""
        source = source_copy(tmp_path / "tree")
        subprocess.run(
            [sys.executable, "-c", "import setuptools.build_meta as b, sys; b.build_sdist(sys.argv[1])", str(tmp_path)],
            cwd=source,
            check=True,
            capture_output=True,
        )
        (sdist,) = tmp_path.glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp_path / "unpacked", filter="data")
            assert not any(member.issym() for member in archive.getmembers())
        (unpacked,) = (tmp_path / "unpacked").iterdir()
        rebuilt = build_wheel(unpacked, tmp_path / "wheel")
        assert sorted(zipfile.ZipFile(rebuilt).namelist()) == sorted(zipfile.ZipFile(wheel).namelist())

    def test_installed_wheel_loads_the_script_and_decides_on_redis(
        self, wheel: Path, redis_server: RedisProcess, tmp_path: Path
    ) -> None:
        """Installed (not editable) elsewhere, the package reads its script via importlib.resources and decides."""
        target = tmp_path / "site"
        pip("install", "--no-deps", "--target", str(target), str(wheel))
        environment = {**clean_environment(), "PYTHONPATH": str(target)}
        result = subprocess.run(
            [sys.executable, "-P", "-c", PROBE, redis_server.url],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
            check=True,
        )
        probe = json.loads(result.stdout)
        assert probe["limiter"].startswith(str(target)) and probe["lua"].startswith(str(target))
        assert probe["sha"] == TOKEN_BUCKET_SHA
        assert (probe["allowed"], probe["remaining"]) == (True, 1.0)


class TestFreshVirtualenv:
    def test_a_user_app_with_its_own_app_and_handlers_is_limited(self, fresh_venv: Path, user_project: Path) -> None:
        """The user's app.py imports the user's handlers/ and our RateLimitedHandler: no clash, and the
        handler is limited (2 tokens: 200, 200, then 429)."""
        port = free_port()
        process = subprocess.Popen(
            [str(fresh_venv / "bin" / "python"), "app.py", str(port)],
            cwd=user_project,
            env=clean_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_health(process, url + "/search", timeout=15)  # the first request: one token
            status, headers, body = get(url + "/search?q=tornado")
            assert status == 200, body
            assert json.loads(body) == {"query": "tornado", "where": "handlers"}
            assert headers["X-RateLimit-Remaining"] == "0"
            status, headers, body = get(url + "/search?q=again")
            assert status == 429 and json.loads(body)["violated-policies"] == ["ip"]
        finally:
            process.terminate()
            output = process.communicate(timeout=10)[0].decode()
        assert "Traceback" not in output, output

    @pytest.mark.parametrize(
        "command", [["python", "-m", PACKAGE, "--version"], ["tornado-rate-limiter", "--version"]], ids=["-m", "script"]
    )
    def test_the_cli_runs_from_a_directory_with_its_own_app_package(
        self, fresh_venv: Path, user_project: Path, command: list[str]
    ) -> None:
        """`python -m tornado_rate_limiter` and the console script work where app.py and handlers/ are the user's."""
        executable = str(fresh_venv / "bin" / command[0])
        result = subprocess.run(
            [executable, *command[1:]], cwd=user_project, env=clean_environment(), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"tornado-rate-limiter {tornado_rate_limiter.__version__}"

    def test_the_namespace_is_the_installed_one_and_the_core_needs_no_tornado(
        self, fresh_venv: Path, user_project: Path
    ) -> None:
        """From the user's directory, tornado_rate_limiter comes from the venv, and importing its core
        (limiter) imports no tornado."""
        code = "import sys, tornado_rate_limiter.limiter as l; print(l.__file__, 'tornado' in sys.modules)"
        result = subprocess.run(
            [str(fresh_venv / "bin" / "python"), "-c", code],
            cwd=user_project,
            env=clean_environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        location, tornado_loaded = result.stdout.split()
        purelib = sysconfig.get_paths(vars={"base": str(fresh_venv)})["purelib"]
        assert location.startswith(purelib) and tornado_loaded == "False"


@pytest.fixture
def heroku_style_checkout(tmp_path: Path) -> Iterator[Path]:
    """A clone as a Heroku-style build sees it: `pip install -r requirements.txt` into a fresh venv."""
    source = source_copy(tmp_path / "app")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_paths(vars={"base": str(venv)})["purelib"]
    # The dependencies (and setuptools, to build without network) from this interpreter's site-packages.
    (Path(purelib) / "dependencies.pth").write_text(f"{Path(tornado.__file__).resolve().parent.parent}\n")
    python = str(venv / "bin" / "python")
    pip("--python", python, "install", "--no-deps", "--no-build-isolation", "-r", "requirements.txt", cwd=source)
    yield source


def test_the_procfile_web_command_serves_from_the_repository_root(heroku_style_checkout: Path) -> None:
    """The Procfile's web: line, run from the checkout's root with $PORT, serves /health."""
    (web,) = [line for line in (heroku_style_checkout / "Procfile").read_text().splitlines() if line.startswith("web:")]
    command = web.removeprefix("web:").split()
    assert command[0] == "python"
    venv_bin = heroku_style_checkout.parent / "venv" / "bin"
    port = free_port()
    environment = {**clean_environment(), "PORT": str(port), "HOST": "127.0.0.1", "PATH": f"{venv_bin}:/usr/bin:/bin"}
    process = subprocess.Popen(
        command, cwd=heroku_style_checkout, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_health(process, f"http://127.0.0.1:{port}/health", timeout=15)
        status, _, body = get(f"http://127.0.0.1:{port}/health")
        assert status == 200 and json.loads(body)["backend"] == "local"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 0 and "Traceback" not in output, output


def test_version_is_the_distributions() -> None:
    """tornado_rate_limiter.__version__ is the version setup.py declares."""
    assert f'version="{tornado_rate_limiter.__version__}"' in (ROOT / "setup.py").read_text()
