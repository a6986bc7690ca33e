"""Who owns, subscribes to or holds what on a Redis Cluster, read from its nodes
directly (for test_gateway_cluster*.py; the stack and readers: cluster_support.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis

from pgcast.keys import key_slot
from tests.integration.cluster_support import LAYOUT
from tests.redis_cluster import ClusterNode, RedisCluster


def live_slot(channel: str) -> int:
    return key_slot(LAYOUT.live_channel(channel))


def owners(cluster: RedisCluster, channels: Iterable[str]) -> dict[str, int]:
    """The port of the master serving each channel's partition now."""
    by_slot: dict[int, int] = {}
    found = {}
    for channel in channels:
        slot = live_slot(channel)
        if slot not in by_slot:
            by_slot[slot] = cluster.master_of_slot(slot).port
        found[channel] = by_slot[slot]
    return found


def in_partition(prefix: str, partition: int, count: int) -> list[str]:
    """``count`` channel names ``<prefix>:<i>`` that fall in ``partition``."""
    names: list[str] = []
    number = 0
    while len(names) < count:
        name = f"{prefix}:{number}"
        if LAYOUT.partition(name) == partition:
            names.append(name)
        number += 1
    return names


async def shard_subscribers(node: ClusterNode, channels: list[str]) -> dict[str, int]:
    """PUBSUB SHARDNUMSUB on ``node``: how many connections there subscribe each channel."""
    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
    try:
        lives = [LAYOUT.live_channel(c) for c in channels]
        command = ("PUBSUB", "SHARDNUMSUB", *lives)
        reply = await client.execute_command(*command)  # type: ignore[no-untyped-call, unused-ignore]
    finally:
        await client.aclose()
    flat = (
        list(reply.items())
        if isinstance(reply, dict)
        else list(zip(reply[::2], reply[1::2], strict=True))
    )
    counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in flat}
    return {c: counts[LAYOUT.live_channel(c)] for c in channels}


async def history_ns(node: ClusterNode, channel: str) -> list[int]:
    """The n of each entry of ``channel``'s history, read from ``node`` itself (no redirect)."""
    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
    try:
        entries: Any = await client.xrange(LAYOUT.channel_keys(channel).history)
    finally:
        await client.aclose()
    return [int(orjson.loads(fields[b"f"])["data"]["n"]) for _, fields in entries]


async def gateway_links(node: ClusterNode) -> list[str]:
    """CLIENT LIST on ``node``: the connections that are a gateway's pub/sub link (named
    pgcast-gateway-<id>) or hold any (shard) subscription."""
    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
    try:
        clients: Any = await client.client_list()
    finally:
        await client.aclose()
    return [
        f"{c.get('addr')} name={c.get('name')} sub={c.get('sub')} ssub={c.get('ssub')}"
        for c in clients
        if str(c.get("name", "")).startswith("pgcast-gateway-")
        or int(c.get("sub", 0)) > 0
        or int(c.get("ssub", 0)) > 0
    ]
