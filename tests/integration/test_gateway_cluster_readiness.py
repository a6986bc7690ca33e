"""A silently dead shard link on a Redis Cluster: noticed within the heartbeat bound, named
by /readyz, and left behind once the shard's replica takes over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.services import SERVICES
from listener.publisher import Event, Publisher
from pgcast import redis_connect
from pgcast.keys import Layout, key_slot
from pgcast.redis_url import parse_redis_url
from tests.gateway_support import Client, settings, token
from tests.redis_cluster import RedisCluster

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
LAYOUT = Layout(64)


def channels_on(cluster: RedisCluster, port: int, count: int) -> list[str]:
    """``count`` channel names whose partition the master on ``port`` serves."""
    found = []
    for n in range(10_000):
        name = f"room:{n}"
        if cluster.master_of_slot(key_slot(LAYOUT.live_channel(name))).port == port:
            found.append(name)
            if len(found) == count:
                return found
    raise LookupError(f"no channels on port {port}")


async def test_a_frozen_master_is_named_by_readyz_then_left_for_its_replica(
    aiohttp_client: MakeClient, redis_cluster: Callable[..., RedisCluster]
) -> None:
    """SIGSTOP one master: within the heartbeat timeout /readyz answers 503 naming that node
    (the other shards' links stay alive); once its replica is promoted the gateway follows
    it, /readyz is green again, and events of the frozen shard's channels arrive."""
    cluster = await asyncio.to_thread(redis_cluster)
    frozen = cluster.masters()[0]
    frozen_node = f"127.0.0.1:{frozen.port}"
    http = await aiohttp_client(create_app(settings(cluster.url)))
    hub = http.app[SERVICES].hub
    target = parse_redis_url(cluster.url)
    redis = redis_connect.client(target, timeout=5.0)
    try:
        publisher = Publisher(redis, layout=LAYOUT)
        await publisher.claim_fence(1)
        mine = channels_on(cluster, frozen.port, 3)
        others = [channels_on(cluster, master.port, 2)[-1] for master in cluster.masters()[1:]]
        ws = await http.ws_connect("/ws", params={"token": token("1", ["room:*"])})  # type: ignore[arg-type]
        client = Client(ws)
        for channel in mine + others:
            assert (await client.subscribe(channel))["type"] == "subscribed"
        assert len([s for s in hub.shards.values() if s.alive]) == 3

        frozen.sigstop()
        stopped = time.monotonic()
        named_after = None
        try:
            async with asyncio.timeout(20):
                while True:
                    resp = await http.get("/readyz")
                    body = orjson.loads(await resp.read())
                    if resp.status == 503 and named_after is None:
                        assert body["problems"] == [f"redis pub/sub heartbeat stale: {frozen_node}"]
                        named_after = time.monotonic() - stopped
                    if named_after is not None and resp.status == 200:
                        break
                    await asyncio.sleep(0.05)
            recovered_after = time.monotonic() - stopped
        finally:
            frozen.sigcont()
        assert named_after is not None
        assert named_after < 1.5 + 1.0  # PGCAST_REDIS_HEARTBEAT_TIMEOUT (tests) + a tick
        await asyncio.to_thread(cluster.wait_healthy, 20.0)

        await publisher.publish(
            1, [Event(c, orjson.dumps({"c": c}), dedupe_id=n + 1) for n, c in enumerate(mine)]
        )
        got = set()
        async with asyncio.timeout(15):
            while len(got) < len(mine):
                frame = await client.recv()
                if frame["type"] == "message":
                    got.add(frame["channel"])
        assert got == set(mine)
        print(
            f"frozen master named by /readyz after {named_after:.2f}s; "
            f"ready again (replica promoted) after {recovered_after:.2f}s"
        )
    finally:
        await redis.aclose()
