"""Server-side control end to end: SQL in Postgres, the real listener, Redis, gateways.

``pgcast.disconnect`` and ``pgcast.unsubscribe`` act after commit only, in order with the
transaction's own events, on every gateway; a gateway whose Redis link was down when a
control went out applies it once the link is back (it reads the control stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.services import SERVICES
from listener.publisher import Event
from pgcast.keys import CONTROL_MARKER
from tests.gateway_support import Client, Events, gateway_env, settings, token, wait_until
from tests.processes import Service
from tests.servers import free_port
from tests.tcpproxy import TcpProxy

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
GATEWAYS = 4


@pytest.fixture
async def stack(database_url: str, redis_url: str) -> AsyncIterator[list[int]]:
    """A listener and four gateway processes; yields the gateways' ports."""
    listener_port = free_port()
    ports = [free_port() for _ in range(GATEWAYS)]
    listener = Service(
        "listener",
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PGCAST_LISTENER_PORT": str(listener_port),
        },
    ).start()
    gateways = [Service("gateway", gateway_env(redis_url, port)).start() for port in ports]
    try:
        listener.wait_http(f"http://127.0.0.1:{listener_port}/healthz")
        for port, gateway in zip(ports, gateways, strict=True):
            gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        yield ports
    finally:
        for service in (*gateways, listener):
            service.stop()


async def open_clients(
    http: aiohttp.ClientSession, ports: list[int], sub: str, channels: list[str]
) -> list[Client]:
    clients = []
    for port in ports:
        url = f"ws://127.0.0.1:{port}/ws"
        ws = await http.ws_connect(url, params={"token": token(sub, channels)})
        client = Client(ws)
        for channel in [f"user:{sub}", *channels]:
            assert (await client.subscribe(channel))["type"] == "subscribed"
        clients.append(client)
    return clients


async def alive(client: Client) -> None:
    await client.send(type="ping", id="alive?")
    assert await client.expect("pong") == {"type": "pong", "id": "alive?"}


async def closed_with(client: Client, wait: float = 10) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes: (code, reason, the frames that came before)."""
    frames = []
    async with asyncio.timeout(wait):
        while True:
            msg = await client.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                frames.append(orjson.loads(msg.data))
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data), str(msg.extra), frames
            elif msg.type is aiohttp.WSMsgType.CLOSED:
                return int(client.ws.close_code or 0), "", frames


async def publish(pg: asyncpg.Connection, channel: str, n: int) -> None:
    await pg.execute(
        "SELECT pgcast.publish($1, $2::jsonb)", channel, orjson.dumps({"n": n}).decode()
    )


async def test_disconnect_closes_the_users_connections_on_every_gateway_after_commit_only(
    stack: list[int], pg: asyncpg.Connection, database_url: str
) -> None:
    """Rolled back: nothing. Committed: each of user 42's four connections (one per gateway)
    gets the event its transaction published first, then close 4003 with the reason;
    user 43's connections stay."""
    async with aiohttp.ClientSession() as http:
        banned = await open_clients(http, stack, "42", [])
        others = await open_clients(http, stack, "43", [])

        tx = pg.transaction()
        await tx.start()
        await publish(pg, "user:42", 1)
        await pg.execute("SELECT pgcast.disconnect('42', 'banned')")
        await tx.rollback()
        # The next event is the first thing each connection hears: nothing of the rollback.
        await publish(pg, "user:42", 2)
        for client in banned:
            assert (await client.expect("message"))["data"] == {"n": 2}
            await alive(client)

        tx = pg.transaction()
        await tx.start()
        await publish(pg, "user:42", 3)
        await pg.execute("SELECT pgcast.disconnect('42', 'banned')")
        await publish(pg, "user:42", 4)
        # Another session's event, committed while the transaction is open, is delivered:
        # the listener has drained past the open transaction's rows without applying them.
        second = await asyncpg.connect(database_url)
        try:
            await publish(second, "user:43", 1)
        finally:
            await second.close()
        for client in others:
            assert (await client.expect("message"))["data"] == {"n": 1}
        for client in banned:
            await alive(client)
        await tx.commit()

        for client in banned:
            code, reason, frames = await closed_with(client)
            assert code == 4003
            assert reason == "banned"
            # n=3 precedes the disconnect in the transaction; n=4 follows it (maybe sent).
            assert [f["data"] for f in frames][:1] == [{"n": 3}]
        for client in others:
            await alive(client)


async def test_unsubscribe_revokes_matching_subscriptions_and_tells_the_client(
    stack: list[int], pg: asyncpg.Connection
) -> None:
    """pgcast.unsubscribe('42', 'orders:*'): each connection is told (reason revoked),
    gets no more orders events, keeps its other channels, and is refused orders:* again."""
    async with aiohttp.ClientSession() as http:
        clients = await open_clients(http, stack[:2], "42", ["orders:1", "news"])
        await pg.execute("SELECT pgcast.unsubscribe('42', 'orders:*')")
        for client in clients:
            assert await client.expect("unsubscribed") == {
                "type": "unsubscribed",
                "channel": "orders:1",
                "reason": "revoked",
            }
        await publish(pg, "orders:1", 1)
        await publish(pg, "news", 1)
        for client in clients:
            frame = await client.expect("message")
            assert frame["channel"] == "news"  # orders:1 came first and was not delivered
            await client.send(type="subscribe", channel="orders:2", id="again")
            error = await client.expect("error")
            assert error["code"] == "forbidden"
            assert error["id"] == "again"


async def test_a_control_sent_while_the_link_was_down_is_applied_after_it_returns(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """The gateway's pub/sub link is cut; a disconnect goes out meanwhile (live, so this
    gateway misses it); once the link is back the gateway reads the control stream and
    closes the user's connection: once, and nobody else's."""
    redis = urlparse(redis_url)
    assert redis.hostname is not None
    assert redis.port is not None
    with TcpProxy(redis.hostname, redis.port) as proxy:
        http = await aiohttp_client(create_app(settings(proxy.url_for(redis_url))))
        services = http.app[SERVICES]
        await wait_until(lambda: services.hub.ready, what="gateway ready")
        victim = Client(await http.ws_connect("/ws", params={"token": token("9")}))  # type: ignore[arg-type]
        bystander = Client(await http.ws_connect("/ws", params={"token": token("10")}))  # type: ignore[arg-type]
        for client in (victim, bystander):
            await alive(client)
        links = services.hub.links
        proxy.blackhole()  # the link goes silent: its heartbeat goes stale, it is dropped
        direct = aioredis.Redis.from_url(redis_url)  # the listener's way in: not cut
        try:
            events = Events(direct)
            await events.publisher.claim_fence(1)
            control = orjson.dumps({"op": "disconnect", "sub": "9", "reason": "late"})
            await events.publisher.publish(1, [Event(CONTROL_MARKER, control, dedupe_id=10**12)])
        finally:
            await direct.aclose()
        await wait_until(lambda: not services.hub.ready, what="link dropped")
        await alive(victim)  # not applied: this gateway did not hear it
        proxy.heal()
        await wait_until(lambda: services.hub.links > links, what="link re-established")
        healed = time.monotonic()
        code, reason, _ = await closed_with(victim, wait=30)
        assert (code, reason) == (4003, "late")
        print(f"control applied {time.monotonic() - healed:.2f}s after the link was back")
        await alive(bystander)
        assert services.metrics.controls.labels("disconnect")._value.get() == 1
