"""Redis failures under load: restart with and without persistence, and a silent partition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from redis.exceptions import RedisError

from gateway.app import create_app
from gateway.services import SERVICES
from listener.publisher import Event, Publisher
from tests.gateway_support import (
    LEADER_EPOCH,
    Client,
    Follower,
    SseReader,
    contiguous,
    gateway_env,
    settings,
    token,
    wait_until,
)
from tests.integration.test_gateway_failover import status
from tests.processes import Service
from tests.servers import RedisInstance, free_port
from tests.tcpproxy import TcpProxy


class Load:
    """Publishes numbered events to one channel, retrying each until Redis takes it.

    Each event carries an outbox id, so a retry of an event Redis did apply before
    dying is recognised as a duplicate instead of being published twice.
    """

    def __init__(self, url: str, channel: str) -> None:
        self.redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.publisher = Publisher(self.redis)
        self.channel = channel
        self.stop = asyncio.Event()
        self.results: list[tuple[str, int]] = []  # (epoch, offset) of each published event
        self.failures = 0

    async def run(self) -> None:
        n = 1
        while not self.stop.is_set():
            event = Event(self.channel, orjson.dumps({"n": n}), dedupe_id=n)
            try:
                await self.publisher.claim_fence(LEADER_EPOCH)
                (result,) = await self.publisher.publish(LEADER_EPOCH, [event])
            except (RedisError, OSError):
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            if result.status == "published" and result.offset is not None:
                self.results.append((result.epoch or "", result.offset))
            n += 1
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.redis.aclose()


async def _scenario(
    redis: RedisInstance, gateway_url: str, outage: Callable[[], None], recover: Callable[[], None]
) -> tuple[list[Follower], Load, list[int]]:
    """Followers on one gateway while Load publishes; ``outage`` then ``recover`` mid-way."""
    load = Load(redis.url, "news")
    port = int(gateway_url.rsplit(":", 1)[1].split("/")[0])
    readyz = f"http://127.0.0.1:{port}/readyz"
    seen_status: list[int] = []
    async with aiohttp.ClientSession() as session:
        followers = [
            Follower(session, [gateway_url], "news", token(str(i), channels=["news"]))
            for i in range(10)
        ]
        tasks = [asyncio.create_task(f.run()) for f in followers]
        await wait_until(lambda: all(f.subscribed for f in followers), what="all subscribed")
        writer = asyncio.create_task(load.run())
        try:
            await wait_until(lambda: len(load.results) > 50, what="publishing")
            outage()
            await wait_until(lambda: status(readyz) == 503, what="/readyz red")
            seen_status.append(503)
            await asyncio.sleep(0.5)
            recover()
            await wait_until(lambda: status(readyz) == 200, wait=20, what="/readyz green")
            seen_status.append(200)
            count = len(load.results)
            await wait_until(lambda: len(load.results) > count + 100, wait=20, what="more load")
        finally:
            load.stop.set()
            await writer
        last = load.results[-1]
        try:
            await wait_until(
                lambda: all((f.epoch, f.offset) == last for f in followers),
                wait=20,
                what="caught up",
            )
        except TimeoutError:
            state = [(f.subscribed, f.received[-3:], f.closes) for f in followers[:2]]
            raise AssertionError(f"not caught up to {last}: {state}") from None
        for f in followers:
            f.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await load.close()
    return followers, load, seen_status


async def test_redis_restart_with_persistence_loses_nothing(
    private_redis: Callable[..., RedisInstance],
) -> None:
    """Redis killed and restarted (AOF): the gateway recovers by itself, clients miss nothing."""
    redis = private_redis("--appendonly", "yes", "--appendfsync", "always")
    port = free_port()
    gateway = Service("gateway", gateway_env(redis.url, port)).start()
    try:
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        followers, load, seen = await _scenario(
            redis, f"ws://127.0.0.1:{port}/ws", redis.kill9, redis.start
        )
        assert seen == [503, 200]
        assert load.failures > 0  # the publisher really hit the outage
        epochs = {e for e, _ in load.results}
        assert len(epochs) == 1  # history survived the restart
        last = load.results[-1][1]
        for f in followers:
            assert contiguous(f.offsets(), 1, last), f.offsets()
            assert len(f.subscribed) == 1  # never told recovered:false, never reconnected
        assert "redis pub/sub reconnected" in gateway.log()
    finally:
        gateway.stop()


async def test_redis_restart_without_persistence_says_recovered_false(
    private_redis: Callable[..., RedisInstance],
) -> None:
    """History lost with Redis: one unsolicited recovered:false with the new epoch, then live."""
    redis = private_redis()
    port = free_port()
    gateway = Service("gateway", gateway_env(redis.url, port)).start()
    try:
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        followers, load, _ = await _scenario(
            redis, f"ws://127.0.0.1:{port}/ws", redis.kill9, redis.start
        )
        old, new = load.results[0][0], load.results[-1][0]
        assert old != new
        last = load.results[-1][1]
        for f in followers:
            assert [s["recovered"] for s in f.subscribed] == [False, False]
            resync = f.subscribed[1]
            assert resync["epoch"] == new
            assert contiguous(f.offsets(old), 1, f.offsets(old)[-1])
            assert contiguous(f.offsets(new), int(resync["offset"]) + 1, last)
    finally:
        gateway.stop()
        print(gateway.log()[-4000:])


async def test_silent_partition_is_noticed_by_the_heartbeat(
    private_redis: Callable[..., RedisInstance],
) -> None:
    """No FIN, no RST, no bytes: the heartbeat goes stale, /readyz turns red, and after the
    partition heals the gateway back-fills what was published meanwhile."""
    redis = private_redis()
    with TcpProxy("127.0.0.1", redis.port) as proxy:
        port = free_port()
        env = gateway_env(proxy.url_for(redis.url), port)
        gateway = Service("gateway", env).start()
        try:
            gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
            followers, load, seen = await _scenario(
                redis, f"ws://127.0.0.1:{port}/ws", proxy.blackhole, proxy.heal
            )
            assert seen == [503, 200]
            last = load.results[-1][1]
            for f in followers:
                assert contiguous(f.offsets(), 1, last), f.offsets()
            assert "no heartbeat through redis" in gateway.log()
        finally:
            gateway.stop()


async def test_redis_down_answers_unavailable_and_the_connection_survives(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    private_redis: Callable[..., RedisInstance],
) -> None:
    """With Redis down a subscribe gets `unavailable` (WS) or a 1013 close event (SSE)."""
    redis = private_redis()
    # Long enough for the first subscribe after the restart (SUBSCRIBE, NOSCRIPT, SCRIPT LOAD).
    app = create_app(settings(redis.url, PGCAST_SUBSCRIBE_TIMEOUT="3"))
    http = await aiohttp_client(app)
    hub = app[SERVICES].hub
    await wait_until(lambda: hub.ready, what="hub linked")
    client = Client(await http.ws_connect("/ws", params={"token": token()}))
    redis.kill9()
    await wait_until(lambda: not hub.ready, what="hub notices")
    refused = await client.subscribe("user:42", id=1)
    assert (refused["type"], refused["code"], refused["id"]) == ("error", "unavailable", 1)
    resp = await http.get("/sse", params={"channel": "user:42", "token": token()})
    reader = SseReader(resp)
    assert (await reader.event())["code"] == "unavailable"
    closing = await reader.event()
    assert (closing["type"], closing["code"]) == ("close", 1013)
    resp.close()
    redis.start()
    await wait_until(lambda: hub.ready, what="hub relinked")
    assert (await client.subscribe("user:42"))["type"] == "subscribed"
    await client.ws.close()
