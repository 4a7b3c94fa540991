"""What the figures were measured on: machine, tools and package versions, and how busy the machine was."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tornado-rate-limiter", "tornado", "redis", "hiredis", "limits", "pyrate-limiter", "token-bucket", "py-spy"]


def _output(command: list[str]) -> str:
    """stdout and stderr of a short command (wrk prints its version to stderr), or "" when it fails."""
    if shutil.which(command[0]) is None:
        return ""
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (completed.stdout + completed.stderr).strip()


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe() -> dict[str, Any]:
    redis_version = re.search(r"v=(\S+)", _output(["redis-server", "--version"]))
    wrk_version = re.match(r"wrk (\S+)", _output(["wrk", "-v"]))
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "redis_server": redis_version.group(1) if redis_version else "not found",
        "wrk": wrk_version.group(1) if wrk_version else "not found",
        "packages": package_versions(),
        "tree": _output(["git", "describe", "--always", "--dirty"]) or "unknown",
        "load_average_start": os.getloadavg(),
    }
