"""Bucket keys: bounded whatever the id holds, and never colliding across users or with addresses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tornado_rate_limiter.handlers.identity import IP, USER, Identity
from tornado_rate_limiter.limiter import Policy, RedisBackend

SERVICE_POLICIES = [Policy(1, 1, name="ip"), Policy(1, 1, name="user")]
AWKWARD_IDS = st.one_of(
    st.text(),
    st.text(alphabet=":{}\x00\r\n #", min_size=1),
    st.just("ip:1.2.3.4"),
    st.text(min_size=1, max_size=20).map(lambda chunk: (chunk * 10_000)[:10_000]),  # 10 k characters
    st.from_regex(r"[A-Za-z0-9_.@+\-]{1,80}", fullmatch=True),
)


class TestKeys:
    @given(user_id=AWKWARD_IDS)
    def test_any_user_id_gives_a_redis_key_of_at_most_128_bytes(self, user_id: str) -> None:
        """Unicode, ':', '{}', NUL, CR/LF, spaces or 10 kB: the Redis key stays within 128 bytes."""
        backend = RedisBackend(client=None)  # type: ignore[arg-type]  # only builds key names
        for policy in SERVICE_POLICIES:
            key = backend.redis_key(Identity(USER, user_id).key, policy)
            assert len(key.encode("utf-8", "surrogatepass")) <= 128

    @given(first=AWKWARD_IDS, second=AWKWARD_IDS)
    def test_different_user_ids_get_different_keys(self, first: str, second: str) -> None:
        """Two distinct ids never share a bucket."""
        if first != second:
            assert Identity(USER, first).key != Identity(USER, second).key

    @given(user_id=AWKWARD_IDS)
    def test_a_user_never_shares_a_key_with_an_address(self, user_id: str) -> None:
        """The user id 'ip:1.2.3.4' (or any other) is never the address 1.2.3.4."""
        assert Identity(USER, user_id).key.startswith("user:")
        assert Identity(USER, user_id).key != Identity(IP, "1.2.3.4").key

    def test_plain_ids_stay_readable_and_others_are_hashed(self) -> None:
        """alice stays alice in Redis; an id with a colon becomes a hash."""
        assert Identity(USER, "alice@example.com").key == "user:alice@example.com"
        assert Identity(USER, "ip:1.2.3.4").key.startswith("user:#")
        assert str(Identity(USER, "ip:1.2.3.4")) == "user:ip:1.2.3.4"
        assert Identity(IP, "2001:db8::/64").key == "ip:2001:db8::/64"
