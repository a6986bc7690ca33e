"""Which Redis node serves each pub/sub channel: the one Redis (or Sentinel primary), or,
in a Redis Cluster, the master that owns the channel's slot now.

The cluster's slot map is read with ``CLUSTER SLOTS`` through the command client (any
node answers) and read again whenever the hub suspects it changed: a link lost, a
shard subscription ended by Redis (slot moved, failover), and every few seconds (a
node added). Knows redis, not aiohttp.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from pgcast.keys import CLUSTER_SLOTS, Layout, key_slot
from pgcast.redis_url import RedisTarget, node_target

SINGLE = "main"  # the node name of a deployment without a cluster


class Topology:
    def __init__(
        self,
        target: RedisTarget,
        layout: Layout,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
    ) -> None:
        self.target = target
        self.layout = layout
        self.redis = redis
        self._slots: list[str | None] = []
        self._nodes: dict[str, tuple[str, int]] = {}
        self.version = 0  # bumped whenever the slot map changed

    @property
    def sharded(self) -> bool:
        return self.layout.sharded

    @property
    def known(self) -> bool:
        """The slot map was read (always true without a cluster)."""
        return not self.sharded or bool(self._slots)

    def node_of(self, key: bytes | str) -> str | None:
        """The node serving ``key``'s slot (None: not known yet, or the slot is unowned)."""
        if not self.sharded:
            return SINGLE
        if not self._slots:
            return None
        return self._slots[key_slot(key.decode() if isinstance(key, bytes) else key)]

    def nodes(self) -> list[str]:
        return [SINGLE] if not self.sharded else list(self._nodes)

    async def refresh(self) -> bool:
        """Read the slot map again; True when it changed."""
        if not self.sharded:
            return False
        # redis-py parses CLUSTER SLOTS: {(start, end): {"primary": (host, port), ...}}
        reply: dict[tuple[int, int], dict[str, Any]] = await self.redis.execute_command(  # type: ignore[no-untyped-call, unused-ignore]
            "CLUSTER SLOTS"
        )
        table: list[str | None] = [None] * CLUSTER_SLOTS
        nodes: dict[str, tuple[str, int]] = {}
        for (start, end), info in reply.items():
            host_raw, port = info["primary"][:2]
            host = host_raw.decode() if isinstance(host_raw, bytes) else str(host_raw)
            node = f"{host}:{port}"
            nodes[node] = (host, int(port))
            table[start : end + 1] = [node] * (end - start + 1)
        changed = table != self._slots
        self._slots, self._nodes = table, nodes
        if changed:
            self.version += 1
        return changed

    def node_target(self, node: str) -> RedisTarget:
        """How to connect to ``node`` (the deployment's credentials)."""
        if not self.sharded:
            return self.target
        host, port = self._nodes[node]
        return node_target(self.target, host, port)

    def heartbeat_key(self, node: str, gateway_id: str) -> bytes | None:
        """A (shard) channel served by ``node`` for this gateway's heartbeat through it;
        None when ``node`` serves no partition (nothing of ours lives there)."""
        if not self.sharded:
            return self.layout.heartbeat_channel(gateway_id).encode()
        for index in range(self.layout.partitions):
            key = self.layout.heartbeat_channel(gateway_id, index)
            if self.node_of(key) == node:
                return key.encode()
        control = "pgcast:{control}:hb:" + gateway_id
        return control.encode() if self.node_of(control) == node else None
