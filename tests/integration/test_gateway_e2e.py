"""End to end: rows change in Postgres, the real listener relays, browser-style clients receive."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg

from tests.gateway_support import gateway_env, token
from tests.processes import Service
from tests.servers import free_port

SCHEMA = """
CREATE TABLE articles (id serial PRIMARY KEY, author_id int, title text);
CREATE TRIGGER articles_pgcast AFTER INSERT OR UPDATE OR DELETE ON articles
FOR EACH ROW EXECUTE FUNCTION pgcast.notify_trigger('articles', 'user:{author_id}');
"""


async def _collect(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(15):
        while len(frames) < count:
            frame = await ws.receive_json()
            if frame["type"] == "message":
                frames.append(frame)
    return frames


async def test_row_changes_reach_browser_clients_on_the_right_channels(
    database_url: str, redis_url: str, pg: asyncpg.Connection
) -> None:
    """Inserts, updates and deletes arrive on 'articles' and on the author's own channel only."""
    await pg.execute(SCHEMA)
    listener_port, gateway_port = free_port(), free_port()
    listener = Service(
        "listener",
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PGCAST_LISTENER_PORT": str(listener_port),
        },
    ).start()
    gateway = Service("gateway", gateway_env(redis_url, gateway_port)).start()
    try:
        listener.wait_http(f"http://127.0.0.1:{listener_port}/healthz")
        gateway.wait_http(f"http://127.0.0.1:{gateway_port}/readyz")
        url = f"ws://127.0.0.1:{gateway_port}/ws"
        async with aiohttp.ClientSession() as session:
            # Browsers cannot set headers: the token rides in the subprotocol list.
            alice = await session.ws_connect(
                url, protocols=("pgcast.v1", f"bearer.{token('7', channels=['articles'])}")
            )
            bob = await session.ws_connect(url, protocols=("pgcast.v1", f"bearer.{token('8')}"))
            assert alice.protocol == "pgcast.v1"
            for ws, channel in ((alice, "articles"), (alice, "user:7"), (bob, "user:8")):
                await ws.send_json({"type": "subscribe", "channel": channel})
                assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            await bob.send_json({"type": "subscribe", "channel": "user:7"})
            assert (await bob.receive_json(timeout=10))["code"] == "forbidden"

            async with pg.transaction():
                first = await pg.fetchval(
                    "INSERT INTO articles (author_id, title) VALUES (7, 'a') RETURNING id"
                )
                second = await pg.fetchval(
                    "INSERT INTO articles (author_id, title) VALUES (8, 'b') RETURNING id"
                )
            tx = pg.transaction()
            await tx.start()
            await pg.execute("INSERT INTO articles (author_id, title) VALUES (7, 'never')")
            await tx.rollback()
            await pg.execute("UPDATE articles SET title = 'a2' WHERE id = $1", first)
            await pg.execute("DELETE FROM articles WHERE id = $1", second)
            await pg.execute("INSERT INTO articles (author_id, title) VALUES (NULL, 'anon')")

            got_alice = await _collect(alice, 7)
            got_bob = await _collect(bob, 2)
            await bob.send_json({"type": "ping"})
            assert (await bob.receive_json(timeout=10))["type"] == "pong"
            await alice.close()
            await bob.close()
        by_channel: dict[str, list[tuple[str, int]]] = {}
        for frame in got_alice + got_bob:
            data = frame["data"]
            assert data["table"] == "articles"
            by_channel.setdefault(frame["channel"], []).append((data["op"], data["id"]))
        assert by_channel["articles"][:4] == [
            ("INSERT", first),
            ("INSERT", second),
            ("UPDATE", first),
            ("DELETE", second),
        ]
        assert by_channel["articles"][4][0] == "INSERT"  # author NULL: articles only
        assert by_channel["user:7"] == [("INSERT", first), ("UPDATE", first)]
        assert by_channel["user:8"] == [("INSERT", second), ("DELETE", second)]
    finally:
        gateway.stop()
        listener.stop()
