"""What Redis itself spends per key with a TTL, whatever we store: the floor under our bytes per key.

The same N keys (``ip:10.a.b.c`` identities) are written with ``SET key value PX ttl`` in raw pipelines,
in several layouts, on an emptied server; ``INFO memory`` used_memory after minus before, over N. Every
key with a TTL costs Redis a dictEntry in the keyspace and one in the expires table (24 bytes each, 32 in
jemalloc's classes) and a slot in each table; a value is its own allocation unless it is a small integer
(a shared object), and a key is an sds string (jemalloc rounds it up too).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
TTL_MS = b"3600000"
_BATCH = 5000


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def _address(number: int) -> str:
    return f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"


def _state(number: int) -> tuple[float, float]:
    return 9.0 - (number % 7) * 0.001, 1764701234.5678902 + number * 1e-3  # tokens, stamp: like a bucket's


LAYOUTS: list[tuple[str, str, Callable[[int], bytes], Callable[[int], bytes]]] = [
    (
        "ours",
        "ours as stored: rl:{ip:<address>}:ip, text value (two %.17g numbers)",
        lambda n: f"rl:{{ip:{_address(n)}}}:ip".encode(),
        lambda n: b"%.17g %.17g" % _state(n),
    ),
    (
        "binary_value",
        "the same key, the two doubles packed in 16 bytes",
        lambda n: f"rl:{{ip:{_address(n)}}}:ip".encode(),
        lambda n: struct.pack("<dd", *_state(n)),
    ),
    (
        "short_key_binary",
        "rl:{<address>}ip (the kind once), 16 bytes",
        lambda n: f"rl:{{{_address(n)}}}ip".encode(),
        lambda n: struct.pack("<dd", *_state(n)),
    ),
    (
        "small_integer",
        "our key, a value under 10,000 (a shared object: no allocation; holds no bucket)",
        lambda n: f"rl:{{ip:{_address(n)}}}:ip".encode(),
        lambda n: b"%d" % (n % 9000),
    ),
    (
        "floor",
        "a 7-byte key (rl: and the address's 4 bytes), a small integer: the least a key with a TTL costs",
        lambda n: b"rl:" + socket.inet_aton(_address(n)),
        lambda n: b"%d" % (n % 9000),
    ),
]


class _Connection:
    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.reader = self.socket.makefile("rb")

    def send(self, commands: list[bytes]) -> None:
        self.socket.sendall(b"".join(commands))
        for _ in commands:
            line = self.reader.readline()
            if not line.startswith((b"+", b":")):
                message = f"Redis answered {line!r}"
                raise RuntimeError(message)

    def used_memory(self) -> int:
        self.socket.sendall(_command(b"INFO", b"memory"))
        size = int(self.reader.readline()[1:])
        text = self.reader.read(size + 2).decode()
        return int(next(line for line in text.split("\r\n") if line.startswith("used_memory:")).split(":")[1])

    def close(self) -> None:
        self.reader.close()
        self.socket.close()


def run_redis_floor(port: int, keys: int, flush: Callable[[], object]) -> list[Row]:
    rows = []
    connection = _Connection(port)
    try:
        for row_id, label, key_of, value_of in LAYOUTS:
            flush()
            time.sleep(0.2)  # let Redis free the last layout's memory (lazy free)
            before = connection.used_memory()
            batch = []
            for number in range(keys):
                batch.append(_command(b"SET", key_of(number), value_of(number), b"PX", TTL_MS))
                if len(batch) == _BATCH:
                    connection.send(batch)
                    batch = []
            if batch:
                connection.send(batch)
            per_key = (connection.used_memory() - before) / keys
            example = key_of(1)
            rows.append({"id": row_id, "label": label, "bytes_per_key": per_key, "key_example": repr(example)})
    finally:
        connection.close()
        flush()
    return rows
