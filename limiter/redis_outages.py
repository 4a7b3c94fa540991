"""What a Redis failure means: an outage (Redis cannot serve now) or a bug in the call, and its cause in
words a user can act on ("authentication failed", "not a cluster", ...), for logs and ``--check``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

from redis import exceptions as redis_errors
from redis.exceptions import RedisClusterException, RedisError
from redis.sentinel import MasterNotFoundError

from tornado_rate_limiter.limiter.deadline import loop_time_deadline
from tornado_rate_limiter.limiter.errors import BackendError

# Replies that mean "Redis cannot serve right now" (an outage), as opposed to a bug in the call.
_UNAVAILABLE = (
    OSError,
    TimeoutError,  # the per-call deadline (limiter/deadline.py)
    redis_errors.ConnectionError,  # refused, reset, LOADING, auth failures, max clients
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica after failover
    redis_errors.OutOfMemoryError,  # maxmemory with noeviction
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # also MASTERDOWN
    redis_errors.NoScriptError,  # only reaches here when reloading the script did not cure it
    redis_errors.NoPermissionError,  # an ACL gone wrong: nothing this process can fix
    redis_errors.SlotNotCoveredError,  # a Cluster slot without a node, while the Cluster heals
    redis_errors.InvalidResponse,  # not Redis at the other end (a protocol error)
)
# Replies redis-py leaves as a plain ResponseError that still mean the server cannot serve us: busy or
# loading, or configured so that the script can never run (an ACL denying a command inside the script,
# EVALSHA renamed away, a DB index the server does not have, a plain Redis asked as a sentinel).
_UNAVAILABLE_CODES = ("BUSY", "MISCONF", "LOADING", "MASTERDOWN", "NOPERM")
_UNAVAILABLE_TEXTS = ("can't run this command", "unknown command", "DB index is out of range")
# The Cluster client's own words when no startup node can serve as a Cluster node.
_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
# What a Redis call can raise, outage or bug (is_unavailable tells which); RedisClusterException, raised
# for a slot without a node, is no RedisError.
REDIS_FAILURES = (TimeoutError, RedisError, RedisClusterException, OSError)

_SCRIPT_LINE = re.compile(r"@user_script:(\d+)")
_SCRIPT_CALL = re.compile(r"redis\.call\('(\w+)'")
_DENIED_COMMAND = re.compile(r"permissions to run the '([^']+)' command")
_UNKNOWN_COMMAND = re.compile(r"unknown command [`']([^`']+)[`']")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot serve now (an outage), rather than a bug in the call."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, RedisClusterException) and str(exc).startswith(_CLUSTER_UNREACHABLE):
        return True
    if not isinstance(exc, redis_errors.ResponseError):
        return False
    text = str(exc)
    return text.startswith(_UNAVAILABLE_CODES) or any(part in text for part in _UNAVAILABLE_TEXTS)


def describe(exc: BaseException, *, script: str = "", tls: bool = False, deadline: float | None = None) -> str:
    """The cause of ``exc`` in one line a user can act on. ``script`` (the Lua text) lets an error inside
    it name the command at fault; ``tls`` says whether the connection was meant to be TLS; ``deadline``
    is the time a timeout waited."""
    causes = _causes(exc)
    text = " <- ".join(str(cause) for cause in causes if str(cause))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate not trusted ({cause.verify_message}): give the CA with ?ssl_ca_certs=/path/ca.crt, "
                "or accept a self-signed one with REDIS_TLS_VERIFY=false"
            )
    if any(isinstance(cause, redis_errors.AuthenticationError) for cause in causes):
        if "must be called with the client already authenticated" in text or "NOAUTH" in text:
            return "authentication failed: the server wants a password and the URL gives none"
        return f"authentication failed ({causes[-1]}): check the user and password in the URL"
    if "Cluster mode is not enabled" in text or "cluster support disabled" in text:
        return "not a cluster: the server runs without cluster mode (use redis:// for a single Redis)"
    unknown = _UNKNOWN_COMMAND.search(text)
    if unknown is not None and unknown.group(1).upper() == "SENTINEL":
        return "not a sentinel: the server does not answer SENTINEL (give the sentinels' addresses, or use redis://)"
    if isinstance(exc, MasterNotFoundError):
        return f"no master known to the sentinels: {exc}"
    if "DB index is out of range" in text:
        return "DB index out of range: the server has fewer databases (its `databases` setting, 16 by default)"
    if (denied := _DENIED_COMMAND.search(text)) is not None:
        return f"not permitted: the Redis user may not run {denied.group(1).upper()} (grant it with ACL SETUSER)"
    if "can't run this command" in text:
        command = _script_command(text, script) or "one of the script's commands"
        return f"not permitted: the Redis user may not run {command} (grant it with ACL SETUSER)"
    if unknown is not None:
        return f"the server has no command {unknown.group(1).upper()} (renamed or disabled in its configuration)"
    if "WRONGTYPE" in text:
        reader = _script_command(text, script)
        where = f" (read by {reader})" if reader else ""
        return f"a key holds a value of another type{where}: another program writes keys under this key prefix"
    if any(isinstance(cause, redis_errors.InvalidResponse) for cause in causes):
        return f"protocol error: the server at this address does not speak the Redis protocol ({exc})"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused: nothing listens at that address (is Redis running there?)"
    if any(isinstance(cause, FileNotFoundError) for cause in causes):
        return "no such socket file: is Redis running, with `unixsocket` at that path?"
    if (unresolved := next((cause for cause in causes if isinstance(cause, socket.gaierror)), None)) is not None:
        return f"the host name does not resolve ({unresolved.strerror})"
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return f"TLS handshake failed ({text}): does the server speak TLS on this port? (else use redis://)"
    if any(isinstance(cause, TimeoutError | redis_errors.TimeoutError) for cause in causes):
        hint = ": a server that does not speak TLS never answers the handshake (use redis://)" if tls else ""
        waited = f"within {deadline:g} s" if deadline is not None else "in time"
        return f"timed out: no answer {waited}{hint}"
    if any(isinstance(cause, ConnectionResetError) or "closed by server" in str(cause) for cause in causes):
        hint = " (restarting? or, if it expects TLS, use rediss://)" if not tls else " (restarting?)"
        return f"the server closed the connection{hint}"
    return f"{type(exc).__name__}: {text or 'no message'}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first. An exception that was merely being
    handled when another was raised (``__context__``) counts only when it is an OS or timeout error: the
    cause redis-py re-raises as its own, not an internal one it met on the way (``pop from empty list``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        context = current.__context__
        implicit = context if isinstance(context, OSError | TimeoutError | asyncio.CancelledError) else None
        current = current.__cause__ or (None if current.__suppress_context__ else implicit)
    return chain


def _script_command(text: str, script: str) -> str | None:
    """The command on the script's line that an error names (``@user_script:55``), if it calls one."""
    line = _SCRIPT_LINE.search(text)
    if line is None or not script:
        return None
    lines = script.splitlines()
    number = int(line.group(1))
    call = _SCRIPT_CALL.search(lines[number - 1]) if 0 < number <= len(lines) else None
    return call.group(1).upper() if call else None


def raise_as_backend_error(exc: BaseException, what: str, *, script: str = "", tls: bool = False) -> NoReturn:
    """Raise BackendError for an outage (``what`` failed, and why); re-raise anything else as it is."""
    if not is_unavailable(exc):
        raise exc
    raise BackendError(f"{what}: {describe(exc, script=script, tls=tls)}") from exc


@asynccontextmanager
async def redis_errors_as_backend_error(
    deadline: float, what: str, *, script: str = "", tls: bool = False, bugs_too: bool = False
) -> AsyncIterator[None]:
    """Bound the Redis calls inside by ``deadline`` seconds of the loop's time (limiter/deadline.py), and
    turn an outage into BackendError; any other Redis error (a bug in the call) passes through as it is,
    unless ``bugs_too``."""
    try:
        async with loop_time_deadline(deadline):
            yield
    except REDIS_FAILURES as exc:
        if not (bugs_too or is_unavailable(exc)):
            raise
        raise BackendError(f"{what}: {describe(exc, script=script, tls=tls, deadline=deadline)}") from exc
