"""Security review, channels: wildcards, control characters, 10 KB names, grants, floods.

Over the real gateway: a requested name is never a pattern, a forbidden channel
never leaks a byte, a crafted name cannot stall the event loop through the glob
matcher, and one user cannot open more connections than PGCAST_MAX_USER_CONNECTIONS.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from tests.soak.harness import (
    Events,
    RedisClient,
    gateway_settings,
    handshake_status,
    mint,
    running_gateway,
)

WAIT = 10.0


class Ws:
    """A JSON-frame WebSocket client with a bound on every wait."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def request(self, **frame: Any) -> dict[str, Any]:
        await self.ws.send_str(orjson.dumps(frame).decode())
        return await self.recv()

    async def recv(self, wait: float = WAIT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait)
        assert msg.type is WSMsgType.TEXT, msg
        reply: dict[str, Any] = orjson.loads(msg.data)
        return reply


async def connect(http: aiohttp.ClientSession, port: int, token: str) -> Ws:
    ws = await http.ws_connect(
        f"http://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {token}"}
    )
    return Ws(ws)


async def test_requested_names_are_never_patterns_nor_control_nor_huge(redis_url: str) -> None:
    """Even with a `*` grant, `*`, `?`, `[`, C0/C1 controls and 10 KB names are bad_request."""
    bad = [
        "*",
        "user:*",
        "user:?",
        "a[bc]",
        "a]",
        "news\x00",
        "news\n",
        "news\x1b[31m",
        "news\x85",
        "news\x9f",
        "news\x7f",
        "x" * 256,
        "x" * 10240,
        "",
    ]
    settings = gateway_settings(redis_url)
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        client = await connect(http, port, mint("7", ["*"]))
        for name in bad:
            reply = await client.request(type="subscribe", channel=name, id=1)
            assert reply["type"] == "error", (name, reply)
            assert reply["code"] == "bad_request", (name, reply)
            assert len(orjson.dumps(reply)) < 300, "the reply never echoes a long name"
        ok = await client.request(type="subscribe", channel="x" * 255)
        assert ok["type"] == "subscribed"
        # SSE applies the same rule to ?channel=
        url = f"http://127.0.0.1:{port}/sse"
        headers = {"Authorization": f"Bearer {mint('7', ['*'])}"}
        for name in ("*", "news\x07", "x" * 300):
            async with http.get(url, params={"channel": name}, headers=headers) as resp:
                assert resp.status == 400, name


async def test_forbidden_channels_leak_nothing(redis_url: str, redis_client: RedisClient) -> None:
    """user 7 asks for user:8 and for a channel outside its globs: forbidden, and no byte of
    their messages ever arrives while its own channel keeps working."""
    settings = gateway_settings(redis_url)
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        client = await connect(http, port, mint("7", ["room:*", "news"]))
        for name in ("user:8", "user:7x", "roomx", "room", "newsroom", "news:1", "USER:7"):
            reply = await client.request(type="subscribe", channel=name)
            assert (reply["type"], reply.get("code")) == ("error", "forbidden"), name
        assert (await client.request(type="subscribe", channel="user:7"))["type"] == "subscribed"
        assert (await client.request(type="subscribe", channel="room:1:2"))["type"] == "subscribed"
        events = Events(redis_client)
        for secret_channel in ("user:8", "roomx", "newsroom"):
            await events.publish(secret_channel, {"secret": secret_channel})
        await events.publish("user:7", {"mine": 1})
        got = await client.recv()
        assert got["type"] == "message"
        assert got["channel"] == "user:7"
        assert b"secret" not in orjson.dumps(got)
        pong = await client.request(type="ping")
        assert pong["type"] == "pong", "nothing else was queued before the pong"


async def test_star_heavy_grants_cannot_stall_the_gateway(redis_url: str) -> None:
    """A grant full of `*` against a crafted 255-char name is answered at once, and another
    client's ping on the same process is not delayed (linear-time matching)."""
    settings = gateway_settings(redis_url)
    grant = ["*:*:*:*:*:*:*:*:x", "*a*a*a*a*a*a*a*a*a*a*b"]
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        attacker = await connect(http, port, mint("7", grant))
        bystander = await connect(http, port, mint("8"))
        started = time.monotonic()
        for name in (":" * 255, "a" * 255):
            reply = await attacker.request(type="subscribe", channel=name)
            assert reply.get("code") == "forbidden"
        assert (await bystander.request(type="ping"))["type"] == "pong"
        assert time.monotonic() - started < 1.0


async def test_one_user_cannot_flood_connections(redis_url: str) -> None:
    """PGCAST_MAX_USER_CONNECTIONS=3: a burst of 30 handshakes gets 3 upgrades and 429s;
    other users are unaffected; a slot frees when a connection closes."""
    settings = gateway_settings(redis_url, PGCAST_MAX_USER_CONNECTIONS="3")
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        token = mint("flood")
        url = f"http://127.0.0.1:{port}/ws"

        async def attempt() -> aiohttp.ClientWebSocketResponse | int:
            try:
                return await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        results = await asyncio.gather(*(attempt() for _ in range(30)))
        opened = [r for r in results if not isinstance(r, int)]
        assert len(opened) == 3
        assert sorted({r for r in results if isinstance(r, int)}) == [429]
        headers = {"Authorization": f"Bearer {mint('someone-else')}"}
        assert await handshake_status(http, port, headers=headers) == 101
        await opened[0].close()
        deadline = time.monotonic() + WAIT
        while not isinstance(again := await attempt(), aiohttp.ClientWebSocketResponse):
            assert time.monotonic() < deadline, "the freed slot never became available"
            await asyncio.sleep(0.02)
        await again.close()
        for ws in opened[1:]:
            await ws.close()
