"""TLS: rediss:// against a redis-server serving TLS only, with a certificate this test makes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_process import RedisProcess
from tests.service_process import ServiceProcess
from tornado_rate_limiter.app import Settings
from tornado_rate_limiter.limiter import BackendError, Policy, RedisBackend

POLICY = Policy(5, 1.0, name="tls")


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    paths = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")}
    san = directory / "san.ext"
    san.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rate-limiter test CA",
            "-keyout", str(paths["ca.key"]), "-out", str(paths["ca.crt"]))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(paths["server.key"]), "-out", str(paths["server.csr"]))  # fmt: skip
    openssl("x509", "-req", "-in", str(paths["server.csr"]), "-CA", str(paths["ca.crt"]),
            "-CAkey", str(paths["ca.key"]), "-CAcreateserial", "-days", "1", "-extfile", str(san),
            "-out", str(paths["server.crt"]))  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(certificates: dict[str, Path]) -> Iterator[RedisProcess]:
    """A redis-server that speaks TLS only, on a free port."""
    options = ("--tls-cert-file", str(certificates["server.crt"]), "--tls-key-file", str(certificates["server.key"]),
               "--tls-ca-cert-file", str(certificates["ca.crt"]), "--tls-auth-clients", "no")  # fmt: skip
    server = RedisProcess(extra_args=options, tls=True).start()
    yield server
    server.stop()


def decide(url: str, **options: object) -> bool:
    async def scenario() -> bool:
        backend = RedisBackend.from_url(url, timeout=2.0, **options)  # type: ignore[arg-type]
        try:
            return (await backend.acquire(f"k{id(options)}", POLICY)).allowed
        finally:
            await backend.close()

    return asyncio.run(scenario())


class TestRediss:
    def test_verified_against_the_ca(self, tls_redis: RedisProcess, certificates: dict[str, Path]) -> None:
        """rediss:// with ssl_ca_certs in the URL: the certificate is verified and decisions work."""
        assert decide(f"{tls_redis.url}?ssl_ca_certs={certificates['ca.crt']}")

    def test_verification_is_on_by_default(self, tls_redis: RedisProcess) -> None:
        """A self-signed certificate is refused unless verification is turned off."""
        with pytest.raises(BackendError):
            decide(tls_redis.url)

    def test_ssl_cert_reqs_none_in_the_url_accepts_it(self, tls_redis: RedisProcess) -> None:
        """The redis-py URL parameter ssl_cert_reqs=none keeps working."""
        assert decide(f"{tls_redis.url}?ssl_cert_reqs=none")

    def test_verify_tls_false_accepts_it(self, tls_redis: RedisProcess) -> None:
        """verify_tls=False (REDIS_TLS_VERIFY=false) is the setting for a Heroku-style self-signed Redis."""
        assert decide(tls_redis.url, verify_tls=False)


class TestSettings:
    def test_redis_tls_url_is_preferred_over_redis_url(self) -> None:
        """With both set, as on Heroku, REDIS_TLS_URL is the one used."""
        env = {"REDIS_URL": "redis://plain:6379", "REDIS_TLS_URL": "rediss://secure:6380"}
        assert Settings.from_env(env).redis_url == "rediss://secure:6380"

    @pytest.mark.process
    def test_the_service_runs_on_a_self_signed_tls_redis(self, tls_redis: RedisProcess) -> None:
        """REDIS_TLS_URL + REDIS_TLS_VERIFY=false: the service decides in Redis, not degraded."""
        env = {"REDIS_TLS_URL": tls_redis.url, "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_TLS_VERIFY": "false"}
        env["RATE_LIMIT_REDIS_TIMEOUT"] = "1"  # new connections handshake inside the deadline: no race here
        service = ServiceProcess(env).start()
        try:
            with urllib.request.urlopen(service.url + "/api/whoami", timeout=5) as response:
                assert response.headers.get("X-RateLimit-Degraded") is None
                assert json.loads(response.read()) == {"identity": "ip:127.0.0.1"}
            assert json.loads(urllib.request.urlopen(service.url + "/health", timeout=5).read())["degraded"] is False
        finally:
            service.stop()
