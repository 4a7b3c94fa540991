"""The README's examples run as shown (against a test redis-server instead of localhost:6379)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.redis_process import RedisProcess

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    """The README shows the library in use (so the test below has something to run)."""
    assert PYTHON_BLOCKS


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_example_runs(block: str, redis_server: RedisProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """Each python block runs without error and, where it prints, prints a decision of a real backend."""
    code = block.replace("redis://localhost:6379/0", redis_server.url)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    if "print(" in code:
        assert printed.startswith("True 99.0 0.0 0.1 100.0")
