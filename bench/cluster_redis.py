"""The Redis under test in bench/cluster.py: one ``redis-server`` or a 3-master Redis Cluster,
with the INFO/CLUSTER INFO counters the benchmark reads from every node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from tests.redis_cluster import RedisCluster
from tests.servers import RedisInstance, free_port_below

HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 5000  # busy cores must not get a node marked failing mid-run


# -- Redis, one or a cluster ---------------------------------------------------------------
@dataclass
class RedisNodeRef:
    """One Redis server of the topology: its role, port and PID."""

    role: str
    port: int
    pid: int


@dataclass
class Topology:
    """The Redis under test: ``single`` or ``cluster``; stopped by :meth:`destroy`."""

    name: str
    url: str
    nodes: list[RedisNodeRef]
    destroy: Callable[[], None]
    clients: dict[int, aioredis.Redis] = field(default_factory=dict)

    def client(self, port: int) -> aioredis.Redis:
        if port not in self.clients:
            self.clients[port] = aioredis.Redis(host=HOST, port=port, decode_responses=True)
        return self.clients[port]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    async def cpu(self) -> dict[int, float]:
        """used_cpu_sys + used_cpu_user of every node, by port (INFO cpu)."""
        out = {}
        for node in self.nodes:
            info = await self.client(node.port).info("cpu")
            out[node.port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    async def bus(self) -> dict[int, dict[str, int]]:
        """CLUSTER INFO's message counters of every node (empty for one Redis)."""
        if self.name != "cluster":
            return {}
        out = {}
        for node in self.nodes:
            text = await self.client(node.port).execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                "CLUSTER", "INFO"
            )
            if isinstance(text, dict):  # redis-py may parse it into a dict already
                pairs = {str(k): str(v) for k, v in text.items()}
            else:
                pairs = dict(
                    line.strip().split(":", 1) for line in str(text).splitlines() if ":" in line
                )
            out[node.port] = {
                key.removeprefix("cluster_stats_messages_"): int(value)
                for key, value in pairs.items()
                if key.startswith("cluster_stats_messages_")
            }
        return out

    async def used_memory(self) -> dict[str, int]:
        out = {}
        for node in self.nodes:
            out[f"{node.role}:{node.port}"] = int(
                (await self.client(node.port).info("memory"))["used_memory"]
            )
        return out

    async def flush(self) -> None:
        for node in self.nodes:
            if node.role != "replica":
                await self.client(node.port).flushall()


def start_single() -> Topology:
    server = RedisInstance(port=free_port_below())
    server.start()
    assert server.proc is not None
    node = RedisNodeRef("single", server.port, server.proc.pid)
    return Topology("single", server.url, [node], server.destroy)


def start_cluster(replicas: int) -> Topology:
    cluster = RedisCluster(masters=3, replicas_per_master=replicas, node_timeout_ms=NODE_TIMEOUT_MS)
    try:
        cluster.start()
        masters = {node.port for node in cluster.masters()}
        nodes = [
            RedisNodeRef("master" if node.port in masters else "replica", node.port, node.pid)
            for node in cluster.nodes
        ]
    except BaseException:
        cluster.destroy()
        raise
    nodes.sort(key=lambda n: (n.role != "master", n.port))
    return Topology("cluster", cluster.url, nodes, cluster.destroy)
