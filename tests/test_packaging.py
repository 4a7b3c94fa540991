"""The package as users get it: a built, non-editable wheel that carries its Lua script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from limiter.redis import TOKEN_BUCKET_SHA
from tests.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter that sees only the installed wheel (not this source tree).
PROBE = """
import asyncio, json, sys
import limiter, lua
from limiter import Policy, RedisBackend
from limiter.redis import TOKEN_BUCKET_SHA

async def decide():
    backend = RedisBackend.from_url(sys.argv[1], timeout=2.0)
    decision = await backend.acquire("wheel", Policy(2, 1.0, name="wheel"))
    await backend.close()
    return decision

decision = asyncio.run(decide())
print(json.dumps({"limiter": limiter.__file__, "lua": lua.__file__, "sha": TOKEN_BUCKET_SHA,
                  "allowed": decision.allowed, "remaining": decision.remaining}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this tree, without network (no build isolation)."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "tree"  # a copy: building writes build/ and egg-info
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("*.whl")
    return built


class TestWheel:
    def test_wheel_ships_the_lua_script_and_type_marker(self, wheel: Path) -> None:
        """The wheel holds lua/token_bucket.lua and limiter/py.typed, not just Python files."""
        names = zipfile.ZipFile(wheel).namelist()
        assert "lua/token_bucket.lua" in names
        assert "limiter/py.typed" in names

    def test_installed_wheel_loads_the_script_and_decides_on_redis(
        self, wheel: Path, redis_server: RedisProcess, tmp_path: Path
    ) -> None:
        """Installed (not editable) elsewhere, the package reads its script via importlib.resources and decides."""
        target = tmp_path / "site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
            check=True,
        )
        environment = {**os.environ, "PYTHONPATH": str(target)}
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
