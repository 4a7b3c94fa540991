"""RedisLink: one connection to a Redis server (or Sentinel's master), its replies read by a protocol of
ours: each reply goes to the future of the call it answers, in order, as it arrives.

redis-py makes the connection (TLS, AUTH, SELECT, Sentinel's master, its options from the URL); the link
then takes over its transport. On redis-py's own read path every round trip costs a task, a stream
reader's wake-up and its parser's coroutines, about as much as the decision itself; here the replies of
a whole batch are parsed in the transport's callback, one hiredis feed, and their callers resume.

A call whose caller gave up (its deadline passed, it was cancelled) keeps its place in the queue: its
reply, when it comes, is read and dropped, so the stream stays in step without closing the connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis
from redis._parsers.base import BaseParser  # maps an error reply to redis-py's exception (NOSCRIPT, READONLY, ...)
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError, ResponseError

from tornado_rate_limiter.limiter.deadline import LoopTimeAlarm


class Call(Protocol):
    """What the link sends and answers: a command packed in RESP and the future of its reply."""

    @property
    def packed(self) -> bytes: ...

    @property
    def reply(self) -> asyncio.Future[Any]: ...


class RedisLink(asyncio.Protocol):
    """The calls written on one connection and waiting for their replies, answered in order.

    ``on_noscript(call)`` is given each call Redis answered NOSCRIPT (its scripts were flushed); it
    returns True when it takes the call over (to send it again once the scripts are loaded), False to
    fail it with the error. Each batch sent has ``timeout`` seconds (loop time, limiter/deadline.py) to
    be answered, after which its unanswered calls get TimeoutError.
    """

    def __init__(self, connection: AbstractConnection, timeout: float, on_noscript: Callable[[Any], bool]) -> None:
        self.connection = connection  # redis-py's, which made the socket: kept to close it
        self.timeout = timeout
        self._on_noscript = on_noscript
        self.lost: Exception | None = None
        # Each call sent, with its batch's alarm on the last call of a batch (cancelled once answered).
        self._waiting: deque[tuple[Call, LoopTimeAlarm | None]] = deque()
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._transport: asyncio.Transport = connection._writer.transport  # type: ignore[union-attr, assignment]
        self._loop = asyncio.get_running_loop()
        buffered = bytes(connection._reader._buffer) if connection._reader is not None else b""  # type: ignore[attr-defined]
        # redis-py's stream protocol is told when the connection ends, so its disconnect() does not wait.
        self._stream_protocol = self._transport.get_protocol()
        self._transport.set_protocol(self)
        if buffered:  # nothing is expected after the handshake, but nothing may be lost either
            self._reader.feed(buffered)

    @property
    def usable(self) -> bool:
        return self.lost is None

    def send(self, calls: Sequence[Call]) -> None:
        """Write ``calls`` at once; each gets its reply (or error) in order, or TimeoutError once the
        batch's deadline passes without it."""
        if self.lost is not None:
            for call in calls:
                if not call.reply.done():
                    call.reply.set_exception(self.lost)
            return
        self._transport.write(b"".join([call.packed for call in calls]))
        alarm = LoopTimeAlarm(self._loop, self.timeout, _expire(calls))
        waiting = self._waiting
        for call in calls[:-1]:
            waiting.append((call, None))
        waiting.append((calls[-1], alarm))

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                call, alarm = waiting.popleft()
                if alarm is not None:  # the batch is answered whole
                    alarm.cancel()
                answer = call.reply
                if answer.done():  # its caller gave up: the reply keeps the stream in step, nothing more
                    continue
                if isinstance(reply, ResponseError):
                    error = BaseParser.parse_error(reply.args[0])  # type: ignore[no-untyped-call]
                    if not (isinstance(error, NoScriptError) and self._on_noscript(call)):
                        answer.set_exception(error)
                else:
                    answer.set_result(reply)
        except (InvalidResponse, IndexError) as exc:  # not RESP, or a reply nobody asked for: out of step
            self._fail(ConnectionError(f"Redis sent what was not asked for: {exc!r}"))
            self._transport.abort()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost fails what still waits

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis closed the connection: {exc or 'end of stream'}"))
        self._stream_protocol.connection_lost(exc)

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        waiting = self._waiting
        while waiting:
            call, alarm = waiting.popleft()
            if alarm is not None:
                alarm.cancel()
            if not call.reply.done():
                call.reply.set_exception(error)

    async def close(self, error: Exception) -> None:
        """Close the connection; what still waits gets ``error``."""
        self._fail(error)
        self._transport.close()
        await self.connection.disconnect()


def _expire(calls: Sequence[Call]) -> Callable[[], None]:
    def expire() -> None:
        for call in calls:
            if not call.reply.done():
                call.reply.set_exception(TimeoutError("Redis did not answer in time"))

    return expire
