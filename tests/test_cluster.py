"""Redis Cluster through redis+cluster://: keys spread over slots, the same decisions, a master's death."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from tests.redis_topologies import RedisCluster
from tests.strategies import Request, scenarios
from tornado_rate_limiter.limiter import (
    BackendError,
    Decision,
    FixedWindow,
    LocalBackend,
    Policy,
    RateLimiter,
    RedisBackend,
    SlidingWindow,
)
from tornado_rate_limiter.limiter.algorithms import AnyPolicy
from tornado_rate_limiter.limiter.auto_pipeline import MAX_BATCH
from tornado_rate_limiter.limiter.verdict import Charge, Verdict

pytestmark = pytest.mark.process  # real service processes or Redis topologies: slow

POLICY = Policy(5, 0.5, name="cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """Three redis-server masters on free ports, joined by redis-cli --cluster create."""
    nodes = RedisCluster().start()
    yield nodes
    nodes.stop()


def on_cluster(cluster: RedisCluster) -> RedisBackend:
    return RedisBackend.from_url(cluster.url, timeout=2.0)


class TestCluster:
    def test_keys_spread_over_every_master_without_crossslot(self, cluster: RedisCluster) -> None:
        """300 client keys land on all three masters; each decision is one key, so no CROSSSLOT."""

        async def scenario() -> list[bool]:
            backend = on_cluster(cluster)
            decisions = [await backend.acquire(f"ip:10.0.{i // 256}.{i % 256}", POLICY) for i in range(300)]
            await backend.close()
            return [d.allowed for d in decisions]

        assert all(asyncio.run(scenario()))
        assert all(node.client().dbsize() > 0 for node in cluster.nodes)

    def test_one_key_is_limited_exactly(self, cluster: RedisCluster) -> None:
        """capacity 5 at one instant: five allowed, then denied, wherever the key's slot lives."""

        async def scenario() -> list[bool]:
            backend = on_cluster(cluster)
            key = f"user:{uuid.uuid4().hex}"
            decisions = [await backend.acquire(key, POLICY, now=1_764_000_000.0) for _ in range(7)]
            await backend.close()
            return [d.allowed for d in decisions]

        assert asyncio.run(scenario()) == [True] * 5 + [False] * 2

    def test_url_query_parameters_reach_every_node(self, cluster: RedisCluster) -> None:
        """redis-py's URL parameters work in the cluster form: ?client_name names our connections."""

        async def scenario() -> list[str]:
            backend = RedisBackend.from_url(cluster.url + "?client_name=rate-limiter", timeout=2.0)
            for i in range(30):
                await backend.acquire(f"ip:10.2.0.{i}", POLICY)
            listings = [node.client().execute_command("CLIENT", "LIST") for node in cluster.nodes]
            await backend.close()
            return listings

        assert all("name=rate-limiter" in listing for listing in asyncio.run(scenario()))

    def test_a_crowd_is_pipelined_per_node_and_decides_as_one_by_one(self, cluster: RedisCluster) -> None:
        """96 concurrent calls (40 on one 5-token key, 56 on keys all over the slots) take
        ceil(96 / MAX_BATCH) round trips of one pipeline per node, and decide as the local backend does
        when the same calls come one at a time."""
        prefix, now = uuid.uuid4().hex, 1_764_000_000.0
        keys = [f"{prefix}:hot"] * 40 + [f"{prefix}:{i}" for i in range(56)]

        async def scenario() -> tuple[int, list[float], list[float]]:
            backend = on_cluster(cluster)
            await backend.connect()
            before = backend.pipeline.round_trips
            decisions = await asyncio.gather(*(backend.acquire(key, POLICY, now=now) for key in keys))
            trips = backend.pipeline.round_trips - before
            await backend.close()
            local = LocalBackend()
            expected = [local.acquire_now(key, POLICY, now=now) for key in keys]
            return trips, sorted(d.remaining for d in decisions), sorted(d.remaining for d in expected)

        trips, remaining, expected = asyncio.run(scenario())
        assert trips == math.ceil(96 / MAX_BATCH)
        assert remaining == expected

    def test_every_algorithm_decides_on_the_cluster_as_in_memory(self, cluster: RedisCluster) -> None:
        """A crowd of calls of the three algorithms over keys all over the slots (several calls per key)
        goes in per-node pipelines and gets the decisions the local backend gives the same calls one at a
        time (concurrent calls on one key may be served in any order: a redirected one goes last)."""
        policies: list[AnyPolicy] = [
            Policy(3, 0.5, name="c-bucket"),
            FixedWindow(3, 60, name="c-fixed"),
            SlidingWindow(3, 60, name="c-sliding"),
        ]
        prefix, now = uuid.uuid4().hex, 1_764_000_000.0
        calls = [(policy, f"{prefix}:{i}") for policy in policies for i in range(12) for _ in range(5)]

        async def scenario() -> list[Decision]:
            backend = on_cluster(cluster)
            decisions = await asyncio.gather(*(backend.acquire(key, policy, now=now) for policy, key in calls))
            await backend.close()
            return list(decisions)

        local = LocalBackend()
        expected = [local.acquire_now(key, policy, now=now) for policy, key in calls]
        assert sorted(asyncio.run(scenario())) == sorted(expected)

    def test_several_limits_of_one_identity_are_one_call_in_one_slot(self, cluster: RedisCluster) -> None:
        """acquire_all with three limits per identity, for identities all over the slots: no CROSSSLOT (the
        hash tag puts one identity's keys in one slot), and the verdicts the local backend gives."""
        policies: list[AnyPolicy] = [
            Policy(2, 0.5, name="a-bucket"),
            FixedWindow(3, 60, name="a-fixed"),
            SlidingWindow(2, 60, name="a-sliding"),
        ]
        prefix, now = uuid.uuid4().hex, 1_764_000_000.0
        requests = [[Charge(f"{prefix}:{i}", policy) for policy in policies] for i in range(20) for _ in range(3)]

        async def scenario() -> list[Verdict]:
            backend = on_cluster(cluster)
            verdicts = [await backend.acquire_all(charges, now=now) for charges in requests]
            await backend.close()
            return verdicts

        local = LocalBackend()
        assert asyncio.run(scenario()) == [local.acquire_all_now(charges, now=now) for charges in requests]

    def test_a_moved_slot_is_followed(self, cluster: RedisCluster) -> None:
        """With the client's map of slots wrong for one key, its calls meet MOVED and are sent where the
        Cluster says; every call is answered and the map is right again."""
        key = f"user:{uuid.uuid4().hex}"

        async def scenario() -> tuple[list[bool], bool]:
            backend = on_cluster(cluster)
            await backend.connect()
            client = backend.client
            assert isinstance(client, RedisClusterClient)
            redis_key = backend.redis_key(key, POLICY)
            slot = client.keyslot(redis_key)
            owner = client.get_node_from_key(redis_key)
            assert owner is not None
            stranger = next(node for node in client.get_primaries() if node.name != owner.name)
            client.nodes_manager.slots_cache[slot] = [stranger]  # as if the slot had moved away
            decisions = await asyncio.gather(*(backend.acquire(key, POLICY, now=1_764_000_000.0) for _ in range(7)))
            healed = client.get_node_from_key(redis_key).name == owner.name  # type: ignore[union-attr]
            await backend.close()
            return [d.allowed for d in decisions], healed

        allowed, healed = asyncio.run(scenario())
        assert sorted(allowed) == [False] * 2 + [True] * 5
        assert healed

    @settings(max_examples=50)
    @given(scenario=scenarios())
    def test_cluster_and_local_backends_decide_identically(
        self, cluster: RedisCluster, scenario: tuple[Policy, list[Request]]
    ) -> None:
        """For any sequence of requests, the Cluster backend returns the local backend's decisions."""
        policy, requests = scenario
        prefix = uuid.uuid4().hex

        async def run() -> None:
            backend, local = on_cluster(cluster), LocalBackend()
            for request in requests:
                key = f"{prefix}:{request.key}"
                expected = await local.acquire(key, policy, request.cost, request.now)
                assert await backend.acquire(key, policy, request.cost, request.now) == expected
            await backend.close()

        asyncio.run(run())


def test_a_dead_master_degrades_decisions_and_harms_no_client() -> None:
    """kill -9 of one master: every acquire() still returns an allowed decision, and every decision on a
    key that master owned is degraded (the others are Redis's until the breaker opens)."""
    cluster = RedisCluster().start()
    try:

        async def scenario() -> tuple[set[str], list[tuple[str, Decision]]]:
            backend = RedisBackend.from_url(cluster.url, timeout=0.2)
            limiter = RateLimiter(backend)
            keys = [f"ip:10.1.0.{i}" for i in range(60)]
            for key in keys:
                assert not (await limiter.acquire(key, POLICY)).degraded
            client = backend.client
            assert isinstance(client, RedisClusterClient)
            dead_port = cluster.nodes[0].port
            owned = {key for key in keys if client.get_node_from_key(backend.redis_key(key, POLICY)).port == dead_port}
            cluster.nodes[0].kill()
            decisions = [(key, await limiter.acquire(key, POLICY)) for key in keys * 3]
            pipelined = await asyncio.gather(*(limiter.acquire(key, POLICY) for key in keys))
            decisions += list(zip(keys, pipelined, strict=True))
            await limiter.close()
            return owned, decisions

        owned, decisions = asyncio.run(scenario())
        assert 0 < len(owned) < 60  # the dead master owned some of the keys, not all
        assert all(decision.allowed for _, decision in decisions)
        assert all(decision.degraded for key, decision in decisions if key in owned)
    finally:
        cluster.stop()


def test_a_frozen_master_fails_only_the_calls_it_owns() -> None:
    """SIGSTOP of one master under a crowd spread over every slot: the calls on the other masters are
    answered; those on the frozen one fail as an outage (BackendError) within the deadline."""
    cluster = RedisCluster().start()
    try:

        async def scenario() -> tuple[int, int, int]:
            backend = RedisBackend.from_url(cluster.url, timeout=0.3)
            await backend.connect()
            frozen_port = cluster.nodes[0].port
            keys = [f"ip:10.3.0.{i}" for i in range(30)]
            owners = {key: backend.client.get_node_from_key(backend.redis_key(key, POLICY)).port for key in keys}  # type: ignore[union-attr]
            cluster.nodes[0].freeze()
            try:
                results = await asyncio.gather(*(backend.acquire(key, POLICY) for key in keys), return_exceptions=True)
            finally:
                cluster.nodes[0].thaw()
            await backend.close()
            on_frozen = [r for key, r in zip(keys, results, strict=True) if owners[key] == frozen_port]
            elsewhere = [r for key, r in zip(keys, results, strict=True) if owners[key] != frozen_port]
            answered = sum(1 for r in elsewhere if not isinstance(r, BaseException) and r.allowed)
            outages = sum(1 for r in on_frozen if isinstance(r, BackendError))
            return answered, len(elsewhere), outages - len(on_frozen)

        answered, elsewhere, missing_outages = asyncio.run(scenario())
        assert elsewhere > 0 and answered == elsewhere
        assert missing_outages == 0
    finally:
        cluster.stop()
