"""Client addresses: normalization and forwarding headers, as a table of cases."""

from __future__ import annotations

import ipaddress

import pytest

from tornado_rate_limiter.handlers import RateLimitConfig, client_ip, ratelimited
from tornado_rate_limiter.handlers.client_ip import (
    MAX_FORWARDED_ENTRIES,
    ClientAddressResolver,
    IPAddress,
    client_label,
    forwarded_for,
    parse_address,
    x_forwarded_for,
)
from tornado_rate_limiter.limiter import LocalBackend, RateLimiter


def label(text: str, prefix: int = 64) -> str | None:
    address = parse_address(text)
    return None if address is None else client_label(address, prefix)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:8080", "203.0.113.7"),
        ("::ffff:1.2.3.4", "1.2.3.4"),  # IPv4-mapped IPv6 is the IPv4 client
        ("::ffff:102:304", "1.2.3.4"),  # the same, written in hex
        ("[::ffff:1.2.3.4]:443", "1.2.3.4"),
        ("2001:db8::1.2.3.4", "2001:db8::/64"),  # embedded dotted quad, but not an IPv4 client
        ("2001:DB8:1:2::7", "2001:db8:1:2::/64"),  # lower case, grouped per /64
        ("2001:0db8:0001:0002:0000:0000:0000:0007", "2001:db8:1:2::/64"),  # expanded form: same client
        ("[2001:db8:1:2::7]", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::7]:4711", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),  # zone id dropped
        ('"203.0.113.7"', "203.0.113.7"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("1.2.3", None),
        ("300.1.1.1", None),
        ("203.0.113.7:99999999", None),
        ("[::1", None),
    ],
)
def test_parse_and_label(given: str, expected: str | None) -> None:
    """Each written form of an address maps to one label, or to None when it is not an address."""
    assert label(given) == expected


def test_ipv6_prefix_is_configurable() -> None:
    """RATE_LIMIT_IPV6_PREFIX=128 keeps single addresses; 48 groups a whole site."""
    assert label("2001:db8:1:2::7", 128) == "2001:db8:1:2::7"
    assert label("2001:db8:1:2::7", 48) == "2001:db8:1::/48"
    assert label("203.0.113.7", 48) == "203.0.113.7"  # IPv4 is never grouped


def test_forwarded_for_reads_rfc7239_elements() -> None:
    """The for= of each element, in order; an element without for= still counts as a hop."""
    values = ['for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"', "proto=https"]
    assert forwarded_for(values) == ["192.0.2.60", '"[2001:db8:cafe::17]:4711"', ""]


def test_x_forwarded_for_joins_repeated_headers_in_order() -> None:
    """Several X-Forwarded-For lines are one list, left to right."""
    assert x_forwarded_for(["1.1.1.1, 2.2.2.2", "3.3.3.3"]) == ["1.1.1.1", " 2.2.2.2", "3.3.3.3"]


PROXIES = ClientAddressResolver(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
HOPS = ClientAddressResolver(trusted_hops=1)
NOBODY = ClientAddressResolver()


@pytest.mark.parametrize(
    ("resolver", "peer", "entries", "client"),
    [
        (NOBODY, "203.0.113.7", ["6.6.6.6"], "203.0.113.7"),  # untrusted peer: header ignored
        (PROXIES, "10.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # trusted proxy: read one step
        (PROXIES, "10.0.0.1", ["6.6.6.6", "203.0.113.7", "10.0.0.2"], "203.0.113.7"),  # chain of proxies
        (PROXIES, "10.0.0.1", ["10.0.0.3", "10.0.0.2"], "10.0.0.3"),  # all trusted: the leftmost
        (PROXIES, "203.0.113.9", ["203.0.113.7"], "203.0.113.9"),  # forged, from an untrusted peer
        (PROXIES, "10.0.0.1", ["203.0.113.7", "garbage"], "10.0.0.1"),  # malformed: last good address
        (PROXIES, "10.0.0.1", ["6.6.6.6", "unknown"], "10.0.0.1"),
        (PROXIES, "10.0.0.1", [], "10.0.0.1"),
        (PROXIES, "::ffff:10.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # mapped peer is still trusted
        (HOPS, "172.16.0.1", ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),  # router appended the client
        (HOPS, "172.16.0.1", [], "172.16.0.1"),
    ],
)
def test_resolver_finds_the_rightmost_untrusted_address(
    resolver: ClientAddressResolver, peer: str, entries: list[str], client: str
) -> None:
    """The client is the rightmost address in entries + [peer] that is not a trusted proxy."""
    assert str(resolver.resolve(peer, entries)) == client


def test_resolver_without_a_peer_address() -> None:
    """A peer that is not an IP address (a Unix socket) yields None, for the caller to name."""
    assert NOBODY.resolve("", ["203.0.113.7"]) is None


class TestLabelCache:
    def test_short_headers_are_cached_and_long_ones_never(self) -> None:
        """A forged header of thousands of entries gets the right label but is not kept in the cache, so
        varied long headers cannot fill memory; a short one is kept, and gives the same label."""
        config = RateLimitConfig(
            limiter=RateLimiter(LocalBackend()),
            policies={},
            resolver=ClientAddressResolver((ipaddress.ip_network("127.0.0.1/32"),)),
        )
        cache = config._cached_label  # type: ignore[attr-defined]
        long_header = "," * 5000 + "203.0.113.7"
        assert config.client_label("127.0.0.1", long_header) == "203.0.113.7"
        assert cache.cache_info().currsize == 0
        assert config.client_label("127.0.0.1", "203.0.113.7") == "203.0.113.7"
        assert config.client_label("127.0.0.1", "203.0.113.7") == "203.0.113.7"
        assert cache.cache_info()[:2] == (1, 1)  # one hit, one miss


class TestLongHeaders:
    """A forwarding header of any length costs what a short one does: at most MAX_FORWARDED_ENTRIES
    entries are read, and none from an untrusted peer (64 KB cost 0.17 ms from an untrusted peer and
    18 ms when every entry was trusted)."""

    LONG = ",".join(f"10.0.{i // 256 % 256}.{i % 256}" for i in range(5000))

    def counted(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every address parse_address is asked to read, wherever it is called from."""
        seen: list[str] = []

        def counting(text: str) -> IPAddress | None:
            seen.append(text)
            return parse_address(text)

        monkeypatch.setattr(client_ip, "parse_address", counting)
        monkeypatch.setattr(ratelimited, "parse_address", counting)
        return seen

    def test_an_untrusted_peers_header_is_never_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """From an untrusted peer, only the peer's own address is parsed and the header is not even split."""
        config = RateLimitConfig(resolver=ClientAddressResolver((ipaddress.ip_network("10.0.0.0/8"),)))
        seen = self.counted(monkeypatch)
        split: list[object] = []
        monkeypatch.setattr(ratelimited, "x_forwarded_for", lambda values: split.append(values) or [])
        assert config.client_label("198.51.100.1", self.LONG) == "198.51.100.1"
        assert seen == ["198.51.100.1"] and split == []

    def test_a_trusted_chain_is_walked_for_at_most_the_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every entry trusted: the walk reads the peer and MAX_FORWARDED_ENTRIES entries at most, and the
        answer is the one its last entries give."""
        networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8"))
        config = RateLimitConfig(resolver=ClientAddressResolver(networks))
        seen = self.counted(monkeypatch)
        label = config.client_label("127.0.0.1", self.LONG)
        assert len(seen) <= MAX_FORWARDED_ENTRIES + 1 + 1  # the peer, checked once more by the walk
        tail = ",".join(self.LONG.split(",")[-MAX_FORWARDED_ENTRIES:])
        assert label == config.client_label("127.0.0.1", tail)
        assert x_forwarded_for([self.LONG]) == tail.split(",")
        assert len(forwarded_for([",".join(f"for={a}" for a in self.LONG.split(","))])) == MAX_FORWARDED_ENTRIES


class TestForwardedHeaderName:
    @pytest.mark.parametrize("name", ["Forwarded", "FORWARDED", "forwarded"])
    def test_the_header_is_named_in_any_case(self, name: str) -> None:
        """RateLimitConfig(forwarded_header="Forwarded") behind a trusted proxy reads Forwarded: two clients
        are two (every client was counted as the proxy, 127.0.0.1, when the name was not in lower case)."""
        proxy = ClientAddressResolver((ipaddress.ip_network("127.0.0.1/32"),))
        config = RateLimitConfig(limiter=RateLimiter(LocalBackend()), resolver=proxy, forwarded_header=name)
        assert config.forwarded_header == "forwarded"
        assert config.client_label("127.0.0.1", "for=192.0.2.1") == "192.0.2.1"
        assert config.client_label("127.0.0.1", "for=192.0.2.2") == "192.0.2.2"

    def test_another_header_is_refused(self) -> None:
        """A header the limiter does not read is a ValueError naming it and the two it reads."""
        with pytest.raises(ValueError, match="forwarded_header='X-Real-IP' is not valid: expected x-forwarded-for or"):
            RateLimitConfig(limiter=RateLimiter(LocalBackend()), forwarded_header="X-Real-IP")
