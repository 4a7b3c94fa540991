"""Who a request counts against: ``ip:<client>`` for anonymous clients, ``user:<id>`` for authenticated ones."""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

IP = "ip"
USER = "user"
# Ids made only of these, and short, are kept readable in Redis; any other id is hashed.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.@+\-]{1,64}")


class Identity(NamedTuple):
    """The kind of client (``ip`` or ``user``) and its value (a normalized address or a user id)."""

    kind: str
    value: str

    def __str__(self) -> str:
        """The identity as users see it: ``ip:203.0.113.7``, ``user:alice``."""
        return f"{self.kind}:{self.value}"

    @property
    def key(self) -> str:
        """The bucket key: short and safe whatever the id holds (NUL, CR/LF, ``:``, ``{}``, 10 kB).

        Plain ids stay readable; others become ``user:#<sha256 prefix>``. ``#`` never occurs in a plain
        id and every key starts with its kind, so no user id can collide with another user or an IP.
        """
        if self.kind == IP or _PLAIN_ID.fullmatch(self.value):
            return f"{self.kind}:{self.value}"
        digest = hashlib.sha256(self.value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"{self.kind}:#{digest}"
