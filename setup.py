"""Packaging: the service (app), its Tornado glue (handlers), the core (limiter) and its Lua (lua)."""

from pathlib import Path

from setuptools import setup

setup(
    name="tornado-rate-limiter",
    version="0.1.0",
    description="A distributed token-bucket rate limiter for Tornado, kept in Redis, with a local fallback",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # asyncio.timeout
    packages=["app", "handlers", "limiter", "lua"],
    package_data={"limiter": ["py.typed"], "handlers": ["py.typed"], "lua": ["*.lua"]},
    include_package_data=False,
    install_requires=[
        "tornado>=6.3",
        "redis[hiredis]>=6.2",  # lowest tested: 5.0.1 hung on a frozen Redis, 6.0.0 failed ssl_cert_reqs=none
        "prometheus-client>=0.17",
        "PyJWT>=2.8",
    ],
    extras_require={
        "test": [
            "pytest>=8.0,<10",  # pytest-tornado still uses hooks that pytest 10 removes
            "pytest-tornado>=0.8.1",
            "hypothesis>=6.100",
            "setuptools>=61",  # the wheel test builds the package without network
            "wheel",
        ],
        "dev": ["mypy==2.4.1", "ruff==0.17.6"],  # pinned: `make check` must not change with a release
        # `make bench` (bench/): peers to compare with, pinned so figures compare across runs. limits has
        # no extra for redis.asyncio that fits: `async-redis` is coredis, `redis` caps redis<8; its
        # implementation="redispy" only needs redis.asyncio, which our own redis requirement provides.
        "bench": ["limits==5.8.0", "pyrate-limiter==4.5.1", "token-bucket==0.4.0", "py-spy==0.4.3"],
    },
    zip_safe=False,
)
