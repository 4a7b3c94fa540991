"""AutoPipeline: script calls made in the same event-loop turn go to Redis together, in one round trip,
whichever of the algorithms' scripts each runs.

The first call of a turn starts a task; the task runs on the loop's next turn, after every coroutine
ready in this one has queued its call, and sends them all (up to MAX_BATCH per round trip). A lone call
waits for nothing but that turn (no timer), and a crowd of concurrent requests shares a few writes and
reads of the socket.

On one server (or Sentinel), calls are packed into RESP here and written on a pooled connection: redis-py's
generic Pipeline spends more time encoding arguments than Redis spends running the script. On a Cluster
the calls are grouped by the node that owns each key, one pipeline per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from functools import lru_cache, partial
from typing import Any, NamedTuple

from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection
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
from tornado_rate_limiter.limiter.redis_url import RedisClient, RedisCluster

# Calls per round trip, at most. A crowd that resumes together (as callers do when one round trip's replies
# come back) is sent as several round trips, so Redis runs one batch while this process handles the
# replies of another: with 64 callers, 32 per trip gave 84k decisions/s against 50k for one trip of 64.
MAX_BATCH = 32
# Connections kept by the pipeline between round trips, at most (the rest go back to the pool): taking one
# from redis-py's blocking pool and giving it back costs a condition, a lock, a timeout and a shielded
# task each time, more than our own work on the round trip. The pool still bounds how many exist.
KEPT_CONNECTIONS = 4


_PENDING: Any = object()  # a reply not known yet


class _Call(NamedTuple):
    """One script call waiting for the next round trip."""

    script: Script
    keys: tuple[str, ...]  # one, or several in one hash slot
    args: tuple[str, ...]
    packed: bytes  # the whole EVALSHA command in RESP
    reply: asyncio.Future[Any]


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
        self._kept: list[Connection] = []  # idle connections taken from the pool, for the next round trips
        self._closed = False

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
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
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
        await self.drop_idle_connections()  # the kept connections back to the pool, which closes them

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
        if isinstance(self.client, RedisCluster):
            await self._cluster_round_trip(calls, indexes, replies)
            return
        pool = self.client.connection_pool
        kept = self._kept
        connection = kept.pop() if kept else await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await self._pipeline_on(connection, calls, indexes, replies)
        except BaseException as exc:
            # Shielded: a deadline landing in the pool's locks must not leave the connection out of it.
            await asyncio.shield(pool.release(connection))
            if isinstance(exc, (ConnectionError, OSError)):
                await self.drop_idle_connections()
            raise
        if len(kept) < KEPT_CONNECTIONS:
            kept.append(connection)
        else:
            await asyncio.shield(pool.release(connection))

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use, to be opened afresh when next taken.

        After a connection fails, or once Redis is back after an outage, the others were made to a server
        that may be gone (a restart, a failover): each would fail one round trip of up to MAX_BATCH calls,
        and as many failures at once reopen the circuit breaker that had just closed.
        """
        if isinstance(self.client, RedisCluster):  # the Cluster client renews its nodes' connections itself
            return
        pool = self.client.connection_pool
        kept, self._kept = self._kept, []
        with suppress(Exception):  # closing a dead socket may fail too; the pool reconnects it anyway
            for connection in kept:
                await connection.disconnect()
                await pool.release(connection)
            await pool.disconnect(inuse_connections=False)

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
