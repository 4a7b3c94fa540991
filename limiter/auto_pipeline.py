"""AutoPipeline: script calls made in the same event-loop turn go to Redis together, in one round trip,
whichever of the algorithms' scripts each runs.

Calls are packed into RESP here (redis-py's generic Pipeline spends more time encoding arguments than
Redis spends running the script). On one server (or Sentinel's master), the first call of a turn
schedules a flush for the loop's next turn, after every coroutine ready in this one has queued its call;
the flush writes them all on one RedisLink (limiter/redis_link.py, MAX_BATCH per write), whose protocol
hands each reply to its caller as it arrives: a lone call waits for nothing but that turn (no timer),
and a crowd of concurrent requests shares a few writes and reads of the socket. On a Cluster the first
call of a turn starts a task that groups the calls by the node that owns each key, one pipeline per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from functools import lru_cache, partial
from typing import Any, NamedTuple

from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, ConnectionPool
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
)

from tornado_rate_limiter.limiter.algorithms import Script
from tornado_rate_limiter.limiter.deadline import loop_time_deadline
from tornado_rate_limiter.limiter.errors import BackendError
from tornado_rate_limiter.limiter.redis_link import RedisLink
from tornado_rate_limiter.limiter.redis_url import RedisClient, RedisCluster

# Calls per round trip, at most. A crowd that resumes together (as callers do when one round trip's replies
# come back) is sent as several round trips, so Redis runs one batch while this process handles the
# replies of another: with 64 callers, 32 per trip gave 84k decisions/s against 50k for one trip of 64.
MAX_BATCH = 32


_PENDING: Any = object()  # a reply not known yet


class _Call(NamedTuple):
    """One script call waiting for the next round trip."""

    script: Script
    keys: tuple[str, ...]  # one, or several in one hash slot
    args: tuple[str, ...]
    packed: bytes  # the whole EVALSHA command in RESP
    reply: asyncio.Future[Any]
    resent: bool = False  # sent again after NOSCRIPT: a second NOSCRIPT is its error


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


@lru_cache(maxsize=64)
def _packed_head(sha: str, key_count: int, arg_count: int) -> bytes:
    """EVALSHA <sha> <numkeys> in RESP: all but the keys and the arguments is the same in every call."""
    count = str(key_count).encode()
    return b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (3 + key_count + arg_count, _bulk(sha.encode()), _bulk(count))


@lru_cache(maxsize=1024)
def _packed_args(args: tuple[str, ...]) -> bytes:
    """A call's arguments in RESP: the same few policies and costs recur, so they are packed once."""
    return b"".join(_bulk(arg.encode()) for arg in args)


def _fail(calls: Sequence[_Call], error: Exception) -> None:
    for call in calls:
        if not call.reply.done():
            call.reply.set_exception(error)


def _redirected(reply: Any) -> bool:
    return isinstance(reply, (MovedError, AskError))


class AutoPipeline:
    """EVALSHA of ``scripts`` (each call's keys in one hash slot), pipelined per event-loop turn, each round
    trip bounded by ``timeout`` seconds (waiting for a pooled connection included). ``round_trips`` counts
    them."""

    def __init__(self, client: RedisClient, scripts: Sequence[Script], timeout: float) -> None:
        self.client = client
        self.scripts = tuple(scripts)
        self.timeout = timeout
        self.round_trips = 0
        self._waiting: list[_Call] = []  # calls made this turn, for the next round trip
        self._senders: set[asyncio.Task[None]] = set()  # round trips under way (kept referenced)
        self._closed = False
        # One server (or Sentinel's master): calls go on one RedisLink, written once per loop turn.
        self._direct = not isinstance(client, RedisCluster)
        self._link: RedisLink | None = None
        self._unsent: list[_Call] = []
        self._flush_scheduled = False
        self._connecting: asyncio.Task[None] | None = None
        self._to_resend: list[_Call] = []  # answered NOSCRIPT, waiting for the scripts to be loaded

    def call(self, script: Script, keys: tuple[str, ...], args: tuple[str, ...]) -> asyncio.Future[Any]:
        """Queue one call of ``script`` (one of ``scripts``); await the result for its reply. Raises what
        Redis raised for it.

        A key that cannot be encoded raises here, in its own caller, not in the round trip it would share.
        """
        if self._closed:
            message = "the Redis backend is closed"
            raise BackendError(message)
        packed = _packed_head(script.sha, len(keys), len(args)) + b"".join(_bulk(key.encode()) for key in keys)
        packed += _packed_args(args)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if self._direct:
            self._unsent.append(_Call(script, keys, args, packed, reply))
            if not self._flush_scheduled:  # once per turn, after every caller ready in this one has queued
                self._flush_scheduled = True
                loop.call_soon(self._flush)
            return reply
        waiting = self._waiting
        waiting.append(_Call(script, keys, args, packed, reply))
        if len(waiting) == 1:
            sender = asyncio.create_task(self._send_waiting(waiting))
            self._senders.add(sender)
            sender.add_done_callback(partial(self._sender_done, waiting))
        if len(waiting) >= MAX_BATCH:  # full: later calls start the next round trip
            self._waiting = []
        return reply

    async def load_scripts(self) -> None:
        """SCRIPT LOAD of every script (on every primary of a Cluster), all at once: after a NOSCRIPT this
        runs inside one decision's deadline, so it must cost one round trip, not one per script."""
        await asyncio.gather(*(self.client.script_load(script.text) for script in self.scripts))

    async def aclose(self) -> None:
        """Refuse new calls and stop the round trips under way (their callers get BackendError)."""
        self._closed = True
        senders = list(self._senders)
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        closed = BackendError("the Redis backend is closed")
        _fail(self._unsent + self._to_resend, closed)
        self._unsent, self._to_resend = [], []
        await self._close_link(closed)
        await self.drop_idle_connections()  # the kept connections back to the pool, which closes them

    async def open(self) -> None:
        """On one server, open the link now, so that the first call waits for nothing but its turn (run
        by RedisBackend.connect(), within its deadline; a no-op on a Cluster or with a link open)."""
        if not self._direct or self._connecting is not None or (self._link is not None and self._link.usable):
            return
        await self._close_link(ConnectionError("the connection to Redis was lost"))
        connection = await self._pool().get_connection()  # type: ignore[no-untyped-call]
        self._link = RedisLink(connection, self.timeout, self._resend_after_loading)

    # --- one server: a RedisLink ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the calls queued this turn, MAX_BATCH per write; without a usable link, get one first."""
        self._flush_scheduled = False
        link = self._link
        if link is None or not link.usable:
            if self._connecting is None and self._unsent and not self._closed:
                self._connecting = connecting = asyncio.create_task(self._connect_link())
                self._senders.add(connecting)
                connecting.add_done_callback(self._connect_done)
            return  # sent once connected
        calls, self._unsent = self._unsent, []
        for start in range(0, len(calls), MAX_BATCH):
            self.round_trips += 1
            link.send(calls[start : start + MAX_BATCH])

    async def _connect_link(self) -> None:
        """A connection from the pool for a new link (the old one, lost, closed first), then the calls
        that waited for it; a failure is theirs."""
        try:
            async with loop_time_deadline(self.timeout):
                await self._close_link(ConnectionError("the connection to Redis was lost"))
                connection = await self._pool().get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:
            calls, self._unsent = self._unsent, []
            _fail(calls, exc)
            return
        self._link = RedisLink(connection, self.timeout, self._resend_after_loading)
        self._connecting = None
        self._flush()

    def _connect_done(self, connecting: asyncio.Task[None]) -> None:
        """However the connecting ended (cancelled even before it started), no caller waits forever."""
        self._senders.discard(connecting)
        if self._connecting is connecting:
            self._connecting = None
        if connecting.cancelled():
            calls, self._unsent = self._unsent, []
            _fail(calls, BackendError("the Redis round trip was cancelled"))

    async def _close_link(self, error: Exception) -> None:
        link, self._link = self._link, None
        if link is not None:
            with suppress(Exception):  # closing a dead socket may fail too
                await link.close(error)
            await asyncio.shield(self._pool().release(link.connection))

    def _pool(self) -> ConnectionPool:
        client = self.client
        assert not isinstance(client, RedisCluster)  # a Cluster's calls go by node pipelines instead
        return client.connection_pool

    def _resend_after_loading(self, call: _Call) -> bool:
        """NOSCRIPT (Redis restarted, failed over or flushed its scripts): the call goes again once the
        scripts are loaded, once only."""
        if call.resent or self._closed:
            return False
        self._to_resend.append(call._replace(resent=True))
        if len(self._to_resend) == 1:
            loading = asyncio.create_task(self._load_and_resend())
            self._senders.add(loading)
            loading.add_done_callback(self._senders.discard)
        return True

    async def _load_and_resend(self) -> None:
        try:
            async with loop_time_deadline(self.timeout):
                await self.load_scripts()
        except BaseException as exc:
            calls, self._to_resend = self._to_resend, []
            _fail(calls, exc if isinstance(exc, Exception) else BackendError("the Redis round trip was cancelled"))
            raise
        calls, self._to_resend = self._to_resend, []
        self._unsent += calls
        self._flush()

    def _sender_done(self, calls: list[_Call], sender: asyncio.Task[None]) -> None:
        """Whatever ended the sender (even a cancellation before its first step), no caller waits forever."""
        self._senders.discard(sender)
        if calls is self._waiting:
            self._waiting = []
        for call in calls:
            if not call.reply.done():
                call.reply.set_exception(BackendError("the Redis round trip was cancelled"))

    async def _send_waiting(self, calls: list[_Call]) -> None:
        """Send the calls queued so far and hand each caller its reply or its error."""
        if calls is self._waiting:
            self._waiting = []
        replies = [_PENDING] * len(calls)
        try:
            async with loop_time_deadline(self.timeout):
                await self._run(calls, replies)
        except Exception as exc:  # every call not answered yet gets the error; answers already read stand
            replies = [exc if reply is _PENDING else reply for reply in replies]
        finally:
            for call, reply in zip(calls, replies, strict=True):
                if call.reply.done() or reply is _PENDING:  # gave up, or cancelled: see _sender_done
                    continue
                if isinstance(reply, BaseException):
                    call.reply.set_exception(reply)
                else:
                    call.reply.set_result(reply)

    async def _run(self, calls: Sequence[_Call], replies: list[Any]) -> None:
        """Fill ``replies``: each a reply or that call's exception. Calls that hit NOSCRIPT (Redis restarted,
        failed over or flushed its scripts) run once more after the scripts are loaded."""
        await self._round_trip(calls, range(len(calls)), replies)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.load_scripts()
            await self._round_trip(calls, missing, replies)

    async def _round_trip(self, calls: Sequence[_Call], indexes: Sequence[int], replies: list[Any]) -> None:
        self.round_trips += 1
        await self._cluster_round_trip(calls, indexes, replies)  # one server's calls go on the link instead

    async def drop_idle_connections(self) -> None:
        """Close the link and the pooled connections not in use, to be opened afresh when next needed.

        After a connection fails, or once Redis is back after an outage, the others were made to a server
        that may be gone (a restart, a failover): each would fail its calls, and as many failures at once
        reopen the circuit breaker that had just closed.
        """
        if isinstance(self.client, RedisCluster):  # the Cluster client renews its nodes' connections itself
            return
        await self._close_link(ConnectionError("the connection to Redis was dropped to be made afresh"))
        with suppress(Exception):  # closing a dead socket may fail too; the pool reconnects it anyway
            await self.client.connection_pool.disconnect(inuse_connections=False)

    @staticmethod
    async def _pipeline_on(
        connection: Connection, calls: Sequence[_Call], indexes: Sequence[int], replies: list[Any]
    ) -> None:
        """Write the calls at ``indexes`` at once, then read their replies in order."""
        try:
            await connection.send_packed_command([calls[index].packed for index in indexes])
            for index in indexes:
                try:
                    replies[index] = await connection.read_response()
                except ResponseError as exc:  # this call's own error; the connection is still in step
                    replies[index] = exc
        except BaseException:  # replies may be left unread: the connection cannot be reused
            await connection.disconnect()
            raise

    async def _cluster_round_trip(self, calls: Sequence[_Call], indexes: Sequence[int], replies: list[Any]) -> None:
        """One pipeline per node that owns some of the keys, all at once (redis-py's ClusterPipeline refuses
        EVALSHA); a node that fails, or does not answer in time, fails its own calls only.

        Calls redirected by MOVED or ASK (a slot moved, or is moving): the Cluster client follows one and
        mends its map of slots, the others (most often for the same slot) go again as pipelines on the
        mended map, and what is still redirected (ASK) goes through the client. Following every MOVED
        through the client at once would make it reset all its connections under the calls in flight.
        """
        await self._node_pipelines(calls, indexes, replies)
        redirected = [index for index in indexes if _redirected(replies[index])]
        if not redirected:
            return
        first, rest = redirected[0], redirected[1:]
        replies[first] = await self._through_cluster_client(calls[first])
        if rest:
            await self._node_pipelines(calls, rest, replies)
            still = [index for index in rest if _redirected(replies[index])]
            followed = await asyncio.gather(*(self._through_cluster_client(calls[index]) for index in still))
            for index, reply in zip(still, followed, strict=True):
                replies[index] = reply

    async def _node_pipelines(self, calls: Sequence[_Call], indexes: Sequence[int], replies: list[Any]) -> None:
        client = self.client
        assert isinstance(client, RedisCluster)
        await client.initialize()  # a no-op once the slots are known
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index in indexes:
            try:
                node = client.get_node_from_key(calls[index].keys[0])
            except RedisClusterException as exc:  # SlotNotCoveredError: a slot without a node, for now
                replies[index] = exc
                continue
            if node is None:
                replies[index] = ClusterDownError(f"no Cluster node serves the slot of {calls[index].keys[0]!r}")
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)

        async def pipeline_on(node: ClusterNode, node_indexes: list[int]) -> None:
            connection = node.acquire_connection()
            try:
                await self._pipeline_on(connection, calls, node_indexes, replies)
            finally:
                node.release(connection)

        groups = list(by_node.values())
        outcomes = await asyncio.gather(*(pipeline_on(*group) for group in groups), return_exceptions=True)
        for (_, node_indexes), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled: the round trip as a whole is
                for index in node_indexes:
                    if replies[index] is _PENDING:
                        replies[index] = outcome

    async def _through_cluster_client(self, call: _Call) -> Any:
        """One call through the Cluster client (it follows MOVED and ASK); its reply or its error."""
        try:
            return await self.client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except Exception as exc:
            return exc
