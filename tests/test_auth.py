"""Authenticated clients: a verified bearer JWT makes the client user:<sub>; a bad one gets 401."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from tornado.httpclient import HTTPResponse

from tests.conftest import JWT_SECRET
from tornado_rate_limiter.app import Settings

Fetch = Callable[..., Awaitable[HTTPResponse]]


def token(secret: str = JWT_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm=algorithm)


def unsigned_token(**claims: Any) -> str:
    """A token with alg "none" and no signature: what an attacker sends to skip verification."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': 'alice', 'exp': int(time.time()) + 300, **claims})}."


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class TestValidToken:
    @pytest.mark.gen_test
    async def test_a_valid_token_makes_the_client_a_user(self, fetch: Fetch) -> None:
        """Authorization: Bearer <valid HS256 JWT> -> identity user:<sub>, under the user policy."""
        response = await fetch("/api/whoami", headers=bearer(token()))
        assert response.code == 200
        assert json.loads(response.body) == {"identity": "user:alice"}
        assert response.headers["RateLimit-Policy"].startswith('"user";q=5;')

    @pytest.mark.gen_test
    async def test_users_have_their_own_buckets(self, fetch: Fetch) -> None:
        """alice draining her bucket (5) leaves bob's and the anonymous one untouched."""
        codes = [(await fetch("/api/whoami", headers=bearer(token()))).code for _ in range(6)]
        bob = await fetch("/api/whoami", headers=bearer(token(sub="bob")))
        anonymous = await fetch("/api/whoami")
        assert codes == [200] * 5 + [429]
        assert (bob.code, anonymous.code) == (200, 200)


class TestBadTokens:
    @pytest.mark.parametrize(
        "credential",
        [
            pytest.param(lambda: token(exp=int(time.time()) - 10), id="expired"),
            pytest.param(lambda: token(nbf=int(time.time()) + 300), id="not-yet-valid"),
            pytest.param(lambda: token(secret="another-secret-that-is-32-bytes-long!!"), id="wrong-secret"),
            pytest.param(lambda: token(algorithm="HS512"), id="other-algorithm"),
            pytest.param(lambda: token(exp=None), id="no-exp"),
            pytest.param(lambda: token(sub=None), id="no-sub"),
            pytest.param(unsigned_token, id="alg-none"),
            pytest.param(lambda: "not.a.jwt", id="garbage"),
            pytest.param(lambda: "", id="empty"),
        ],
    )
    @pytest.mark.gen_test
    async def test_a_bad_token_gets_401_and_never_another_identity(
        self, fetch: Fetch, credential: Callable[[], str]
    ) -> None:
        """Expired, not yet valid, wrongly signed, unsigned or malformed tokens get a 401 problem."""
        response = await fetch("/api/whoami", headers=bearer(credential()))
        assert response.code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(response.body)["status"] == 401

    @pytest.mark.gen_test
    async def test_bad_tokens_spend_the_address_bucket_not_the_claimed_user(self, fetch: Fetch) -> None:
        """Requests that merely claim to be alice spend the sender's address tokens and none of alice's."""
        forged = bearer(token(secret="another-secret-that-is-32-bytes-long!!"))
        codes = [(await fetch("/api/whoami", headers=forged)).code for _ in range(4)]
        assert codes == [401, 401, 401, 429]  # the address bucket (3) ran out first
        alice = await fetch("/api/whoami", headers=bearer(token()))
        assert alice.headers["X-RateLimit-Remaining"] == "4"  # a full bucket of 5, minus this request


class TestWithoutSecret:
    @pytest.fixture
    def service_settings(self) -> Settings:
        return Settings(ip_capacity=3, ip_refill_rate=0.01)

    @pytest.mark.gen_test
    async def test_without_jwt_secret_every_client_is_anonymous(self, fetch: Fetch) -> None:
        """With no JWT_SECRET a bearer token is not read: the client is its address."""
        response = await fetch("/api/whoami", headers=bearer(token()))
        assert json.loads(response.body) == {"identity": "ip:127.0.0.1"}
