"""Which client sent a request: address normalization and forwarding headers from trusted proxies only.

Kept free of tornado so it can be tested as a table: a peer address and header values in, a client out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# "[v6]:port", "[v6]", "v4:port": the forms proxies write into forwarding headers.
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d{1,5})?$")
_IPV4_WITH_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$")


def parse_address(text: str) -> IPAddress | None:
    """An address as a forwarding header or socket gives it, or None when it is not one.

    Accepts brackets and ports, drops IPv6 zone ids, and turns IPv4-mapped IPv6 into IPv4, so
    ``1.2.3.4``, ``::ffff:1.2.3.4`` and ``[::ffff:102:304]:80`` are one client.
    """
    text = text.strip().strip('"')
    bracketed = _BRACKETED.match(text)
    if bracketed:
        text = bracketed.group(1)
    else:
        with_port = _IPV4_WITH_PORT.match(text)
        if with_port:
            text = with_port.group(1)
    text = text.split("%", 1)[0]  # a zone id names an interface of the proxy, not the client
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_label(address: IPAddress, ipv6_prefix: int = 64) -> str:
    """The address as the limiter names it: IPv4 dotted quad; IPv6 as its /``ipv6_prefix`` network.

    Grouping IPv6 per /64 (one customer's allocation, by default) stops a client from rotating through
    the addresses it owns to reset its limit.
    """
    if isinstance(address, ipaddress.IPv4Address) or ipv6_prefix >= 128:
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


# Forwarding entries read, counted from the right (the nearest hop). The walk stops at the first entry it
# does not trust, and no real path has more proxies than this: a longer header (64 KB of entries cost up to
# 18 ms of CPU when every one was trusted) costs what a short one does.
MAX_FORWARDED_ENTRIES = 20


def _last_entries(values: Sequence[str]) -> list[str]:
    """At most MAX_FORWARDED_ENTRIES comma-separated entries of ``values``, the rightmost, without
    splitting the rest of a long header."""
    entries = ",".join(values).rsplit(",", MAX_FORWARDED_ENTRIES)
    return entries[-MAX_FORWARDED_ENTRIES:]


def forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` entries of RFC 7239 ``Forwarded`` header values, in order (left = furthest hop); at most
    the last MAX_FORWARDED_ENTRIES."""
    entries = []
    for element in _last_entries(values):
        node = ""
        for pair in element.split(";"):
            name, _, token = pair.partition("=")
            if name.strip().lower() == "for":
                node = token.strip()
        entries.append(node)  # an element without for= still counts as a hop
    return entries


def x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The entries of ``X-Forwarded-For`` header values, in order (left = furthest hop); at most the last
    MAX_FORWARDED_ENTRIES."""
    return _last_entries(values)


@dataclass(frozen=True)
class ClientAddressResolver:
    """Finds the client behind trusted proxies.

    ``trusted_proxies`` are networks whose forwarding headers are believed; ``trusted_hops`` is a number
    of proxies in front of the service that append the address they saw (as a Heroku-style router does),
    counted from the peer. The client is the rightmost address in ``entries + [peer]`` that is not trusted.
    """

    trusted_proxies: tuple[IPNetwork, ...] = ()
    trusted_hops: int = 0

    def is_trusted(self, address: IPAddress, hop: int) -> bool:
        """Whether ``address``, ``hop`` steps from the service (0 = the peer), is one of our proxies."""
        return hop < self.trusted_hops or any(address in network for network in self.trusted_proxies)

    def resolve(self, peer: str, entries: Sequence[str]) -> IPAddress | None:
        """The client's address, from the socket peer and the forwarding header's entries.

        An entry that is not an address (malformed, ``unknown``, obfuscated) ends the walk: the last good
        address stands. A forged header from an untrusted peer is never read.
        """
        client = parse_address(peer)
        if client is None:
            return None
        hop = 0
        for entry in reversed(entries):
            if not self.is_trusted(client, hop):
                break
            forwarded = parse_address(entry)
            if forwarded is None:
                break
            client, hop = forwarded, hop + 1
        return client
