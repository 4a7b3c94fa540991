"""Real Redis topologies for tests: a Cluster of three masters, and a master, a replica and a sentinel."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import redis

from tests.redis_process import RedisProcess, free_port

CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, and below 65536."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET < 65536 and is_free(port + CLUSTER_BUS_OFFSET):
            return port


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; a node that is not ready yet may answer with errors meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError, KeyError, IndexError):
            pass
        time.sleep(0.1)
    message = f"timed out waiting for {what}"
    raise RuntimeError(message)


class RedisCluster:
    """Three masters (no replicas), slots spread by redis-cli --cluster create."""

    def __init__(self, masters: int = 3) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        self.nodes = [RedisProcess(cluster_port(), extra_args=options) for _ in range(masters)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in self.nodes:
            wait_for(lambda n=node: n.client().cluster("info")["cluster_state"] == "ok", 30, "cluster_state:ok")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSetup:
    """A master, a replica of it, and one sentinel watching them as service ``mymaster``."""

    SERVICE = "mymaster"

    def __init__(self) -> None:
        self.master = RedisProcess()
        self.replica = RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
        port = free_port()
        config = (
            f"port {port}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
            f"sentinel failover-timeout {self.SERVICE} 10000\n"
        )
        self.sentinel = RedisProcess(port, extra_args=("--sentinel",), config=config)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def master_port(self) -> int:
        host_port = self.sentinel.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        return int(host_port[1])

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication")["master_link_status"] == "up", 30, "replication")
        self.sentinel.start()
        wait_for(
            lambda: len(self.sentinel.client().execute_command("SENTINEL", "REPLICAS", self.SERVICE)) == 1,
            30,
            "the sentinel to find the replica",
        )
        return self

    def failover(self) -> None:
        """SENTINEL FAILOVER, then wait until the sentinel names the replica as master."""
        old = self.master_port()
        self.sentinel.client().execute_command("SENTINEL", "FAILOVER", self.SERVICE)
        wait_for(lambda: self.master_port() != old, 30, "the failover")

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            process.stop()
