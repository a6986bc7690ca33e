"""Gateway vs Redis failures: a silent partition (blackhole) and a restart that loses history.

Partition: the gateway reaches Redis through a blackholing proxy; /readyz must
turn red within the heartbeat bound, and after the heal the gateway reconnects
by itself and back-fills what was published meanwhile: no gap, no duplicate.
Restart without persistence: history is gone, so a live subscriber is told
``recovered:false`` with the new epoch (never a silent skip), and a resume from
the old epoch gets ``recovered:false`` too; under the whole pipeline (listener and
gateway processes) everything recovers by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType
from prometheus_client import Counter

from gateway.services import SERVICES
from tests.servers import RedisInstance
from tests.soak.harness import (
    Events,
    Gateway,
    Listener,
    RedisClient,
    eventually,
    gateway_env,
    gateway_settings,
    http_get_async,
    mint,
    running_gateway,
)
from tests.tcpproxy import TcpProxy

HEARTBEAT = float(gateway_env("")["PGCAST_REDIS_HEARTBEAT"])
HEARTBEAT_TIMEOUT = float(gateway_env("")["PGCAST_REDIS_HEARTBEAT_TIMEOUT"])


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        msg = await ws.receive(timeout=15)
        assert msg.type is WSMsgType.TEXT, msg
        out.append(orjson.loads(msg.data))
    return out


async def ready(port: int) -> int:
    return (await http_get_async(f"http://127.0.0.1:{port}/readyz"))[0]


async def subscribe(
    http: aiohttp.ClientSession, port: int, channel: str, **resume: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(
        f"http://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {mint('7', ['*'])}"}
    )
    await ws.send_str(orjson.dumps({"type": "subscribe", "channel": channel, **resume}).decode())
    (reply,) = await frames(ws, 1)
    assert reply["type"] == "subscribed", reply
    return ws, reply


@pytest.mark.slow
async def test_partition_from_redis_fails_readyz_then_backfills(
    redis_url: str, redis_client: RedisClient
) -> None:
    """Blackhole gateway->Redis: /readyz red in bound; heal: reconnect, missed messages
    arrive in order exactly once, then live ones."""
    parts = urlsplit(redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    events = Events(redis_client)
    with TcpProxy(parts.hostname, parts.port) as proxy:
        settings = gateway_settings(proxy.url_for(redis_url))
        async with running_gateway(settings) as (app, port), aiohttp.ClientSession() as http:
            ws, _ = await subscribe(http, port, "news")
            await events.publish("news", *({"n": n} for n in range(10)))
            before = await frames(ws, 10)
            metrics = app[SERVICES].metrics
            proxy.blackhole()
            went_red = await eventually(lambda: _is(port, 503), 10, "/readyz fails")
            dropped = proxy.bytes_dropped
            await events.publish("news", *({"n": n} for n in range(10, 40)))
            # Heal only once the partition has really lost those bytes and the gateway has
            # given up on its link (a shorter blip is just delay, which TCP hides).
            await eventually(lambda: proxy.bytes_dropped > dropped, 10, "messages lost in transit")
            await eventually(lambda: counted(metrics.heartbeat_stale) >= 1, 10, "link dropped")
            proxy.heal()
            await eventually(lambda: _is(port, 200), 15, "/readyz recovers after the heal")
            await events.publish("news", *({"n": n} for n in range(40, 45)))
            after = await frames(ws, 35)
            received = before + after
            assert [f["type"] for f in received] == ["message"] * 45
            assert [int(f["offset"]) for f in received] == list(range(1, 46))
            assert [f["data"]["n"] for f in received] == list(range(45))
            print(f"gateway partition: /readyz red after {went_red:.2f}s")
            assert went_red <= HEARTBEAT_TIMEOUT + 2 * HEARTBEAT + 1.0, went_red
            assert counted(metrics.redis_reconnects) >= 1
            await ws.close()


@pytest.mark.slow
async def test_redis_restart_without_persistence_is_never_a_silent_skip(
    private_redis: Callable[..., RedisInstance],
) -> None:
    """History gone: live subscribers get recovered:false with a new epoch, then the new
    messages; resuming from the old epoch is recovered:false; /readyz recovers alone."""
    redis = private_redis()
    client: RedisClient = aioredis.Redis.from_url(redis.url)
    try:
        events = Events(client)
        async with (
            running_gateway(gateway_settings(redis.url)) as (_, port),
            aiohttp.ClientSession() as http,
        ):
            ws, first = await subscribe(http, port, "news")
            await events.publish("news", *({"n": n} for n in range(5)))
            assert [int(f["offset"]) for f in await frames(ws, 5)] == [1, 2, 3, 4, 5]
            old_epoch = first["epoch"]
            redis.restart()
            await eventually(lambda: _is(port, 200), 15, "/readyz recovers after the restart")
            (resync,) = await frames(ws, 1)
            assert resync["type"] == "subscribed", resync
            assert resync["recovered"] is False
            assert resync["epoch"] != old_epoch
            new_epoch = resync["epoch"]
            await client.aclose()
            client = aioredis.Redis.from_url(redis.url)
            events = Events(client)
            await events.publish("news", *({"n": n} for n in range(5, 8)))
            fresh = await frames(ws, 3)
            assert [int(f["offset"]) for f in fresh] == [1, 2, 3]
            assert [f["data"]["n"] for f in fresh] == [5, 6, 7]
            late, reply = await subscribe(http, port, "news", since="5", epoch=old_epoch)
            assert reply["recovered"] is False
            assert reply["epoch"] == new_epoch
            await late.close()
            await ws.close()
    finally:
        await client.aclose()


def counted(counter: Counter) -> float:
    """The current value of an unlabelled prometheus counter."""
    value: float = counter._value.get()
    return value


async def _is(port: int, status: int) -> bool:
    return await ready(port) == status


@pytest.mark.slow
async def test_redis_restart_under_the_whole_pipeline_recovers_without_a_manual_step(
    database_url: str, private_redis: Callable[..., RedisInstance]
) -> None:
    """Listener and gateway processes, Redis killed and restarted with rows being committed:
    the client is told recovered:false with the new epoch, then gets every later event."""
    redis = private_redis()
    listener = Listener(database_url, redis.url).start()
    gateway = Gateway(redis.url)
    pg = await asyncpg.connect(database_url)
    try:
        gateway.start()
        await eventually(lambda: _role(listener, "leader"), 15, "listener leads")
        async with aiohttp.ClientSession() as http:
            port = gateway.port
            ws, first = await subscribe(http, port, "orders")
            await commit(pg, range(3))
            assert [f["data"]["n"] for f in await frames(ws, 3)] == [0, 1, 2]
            redis.restart()
            await commit(pg, range(3, 5))  # committed while Redis was gone
            await eventually(lambda: _is(port, 200), 20, "gateway ready again")
            resync = (await frames(ws, 1))[0]
            assert resync["type"] == "subscribed", resync
            assert resync["recovered"] is False
            assert resync["epoch"] != first["epoch"]
            after = int(resync["offset"])
            await commit(pg, range(5, 8))
            tail = await frames(ws, 8 - 3 - after)
            assert [f["type"] for f in tail] == ["message"] * len(tail)
            assert [int(f["offset"]) for f in tail] == list(range(after + 1, 6))
            assert [f["data"]["n"] for f in tail][-3:] == [5, 6, 7]
            await ws.close()
        assert await listener.role() == "leader"
    finally:
        await pg.close()
        gateway.stop()
        listener.stop()


async def commit(pg: asyncpg.Connection, numbers: range) -> None:
    for n in numbers:
        await pg.execute(
            "SELECT pgcast.publish('orders', $1::jsonb)", orjson.dumps({"n": n}).decode()
        )


async def _role(listener: Listener, role: str) -> bool:
    return await listener.role() == role
