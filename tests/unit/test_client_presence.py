"""The Python client's presence, client messages and server-side control, against a
scripted WebSocket server on a real socket: track and re-track, snapshots and join/leave,
presence(), publish() and broadcasts, 4003, revoked subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import WSCloseCode, web

from pgcast.backoff import Backoff
from pgcast_client import (
    Broadcast,
    Client,
    Disconnected,
    Join,
    Leave,
    Member,
    PresenceSnapshot,
    RequestError,
    SubscriptionRevoked,
)
from pgcast_client.codes import CloseCode, Outcome, reconnect_plan
from pgcast_client.presence import apply

WAIT = 5.0
FAST = {"backoff_base": 0.02, "backoff_cap": 0.05, "restart_jitter": 0.02}


class Conn:
    """One client connection as the scripted gateway sees it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.done = asyncio.Event()

    async def recv(self, kind: str) -> dict[str, Any]:
        """The next frame of type ``kind`` (pings and other types skipped)."""
        async with asyncio.timeout(WAIT):
            while True:
                frame = await self.frames.get()
                if frame.get("type") == kind:
                    return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())


class Gateway:
    def __init__(self) -> None:
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.url = ""
        self.count = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Conn(ws)
        self.count += 1
        await self.conns.put(conn)
        async for msg in ws:
            await conn.frames.put(orjson.loads(msg.data))
        conn.done.set()
        return ws

    async def next(self) -> Conn:
        async with asyncio.timeout(WAIT):
            return await self.conns.get()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_get("/ws", gw.handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gw.url = f"ws://127.0.0.1:{port}/ws"
    yield gw
    await runner.cleanup()


async def subscribed(conn: Conn, channel: str, **extra: Any) -> dict[str, Any]:
    request = await conn.recv("subscribe")
    assert request["channel"] == channel
    await conn.send(
        {
            "type": "subscribed",
            "id": request["id"],
            "channel": channel,
            "epoch": "e",
            "offset": "0",
            "recovered": False,
            **extra,
        }
    )
    return request


def member(conn: str, sub: str, **meta: Any) -> dict[str, Any]:
    return {"sub": sub, "conn": conn, "meta": meta}


def test_presence_frames_apply_to_the_member_set() -> None:
    """A snapshot replaces the set, a join adds or updates, a leave of a stranger is nothing."""
    members = {"c0": Member("old", "c0")}
    snap = apply(members, {"type": "presence", "channel": "r", "members": [member("c1", "ada")]})
    assert snap == PresenceSnapshot("r", (Member("ada", "c1"),))
    assert list(members) == ["c1"]
    assert apply(
        members, {"type": "join", "channel": "r", "member": member("c1", "ada", typing=True)}
    ) == Join("r", Member("ada", "c1", {"typing": True}), update=True)
    assert apply(members, {"type": "leave", "channel": "r", "member": member("c9", "x")}) is None
    assert apply(
        members, {"type": "leave", "channel": "r", "member": member("c1", "ada")}
    ) == Leave("r", Member("ada", "c1", {"typing": True}))
    assert members == {}


def test_4003_stops_with_the_application_reason() -> None:
    """4003 is a stop even with a token factory; its reason is the application's."""
    plan = reconnect_plan(
        Outcome(True, 4003, "banned"), Backoff(0.1, 1.0), refreshable=True, restart_jitter=0.1
    )
    assert (plan.stop, plan.reason) == (True, "banned")
    assert "stop" in CloseCode.DISCONNECTED.advice


async def test_track_is_confirmed_and_sent_again_after_a_reconnect(gateway: Gateway) -> None:
    """track() returns on `tracked`; a new connection tracks again; untrack() stops that."""
    async with Client(gateway.url, token="t", **FAST) as client:
        tracking = asyncio.create_task(client.track("room", {"name": "bot"}))
        conn = await gateway.next()
        frame = await conn.recv("track")
        assert (frame["channel"], frame["meta"]) == ("room", {"name": "bot"})
        await conn.send({"type": "tracked", "id": frame["id"], "channel": "room"})
        await tracking
        await conn.close(4008)
        conn = await gateway.next()
        again = await conn.recv("track")
        assert again["meta"] == {"name": "bot"}
        await conn.send({"type": "tracked", "id": again["id"], "channel": "room"})
        leaving = asyncio.create_task(client.untrack("room"))
        frame = await conn.recv("untrack")
        await conn.send({"type": "untracked", "id": frame["id"], "channel": "room"})
        await leaving
        await conn.close(4008)
        conn = await gateway.next()
        await conn.send({"type": "pong"})
        await asyncio.sleep(0.1)  # let the client write what it would (nothing)
        assert conn.frames.empty()


async def test_a_refused_track_raises_and_is_forgotten(gateway: Gateway) -> None:
    """presence_full reaches track()'s caller; the channel is not tracked again."""
    async with Client(gateway.url, token="t", **FAST) as client:
        tracking = asyncio.create_task(client.track("full"))
        conn = await gateway.next()
        frame = await conn.recv("track")
        await conn.send(
            {"type": "error", "id": frame["id"], "code": "presence_full", "message": "full"}
        )
        with pytest.raises(RequestError) as info:
            await tracking
        assert info.value.code == "presence_full"
        assert "full" not in client._requests.tracked


async def test_presence_subscription_snapshot_joins_leaves_and_broadcasts(gateway: Gateway) -> None:
    """on_presence gets the snapshot then joins/leaves; sub.members follows; on_broadcast."""
    events: asyncio.Queue[object] = asyncio.Queue()

    async def on_presence(event: object) -> None:
        await events.put(event)

    async def taken(count: int) -> list[object]:
        async with asyncio.timeout(WAIT):
            return [await events.get() for _ in range(count)]

    async with Client(gateway.url, token="t", **FAST) as client:
        sub = client.channel("room", on_presence=on_presence, on_broadcast=events.put_nowait)
        conn = await gateway.next()
        request = await subscribed(conn, "room")
        assert request["presence"] is True
        await conn.send({"type": "presence", "channel": "room", "members": [member("c1", "ada")]})
        await conn.send(
            {"type": "join", "channel": "room", "member": member("c2", "bob", name="Bob")}
        )
        await conn.send(
            {"type": "broadcast", "channel": "room", "from": "bob", "data": {"typing": True}}
        )
        await conn.send({"type": "leave", "channel": "room", "member": member("c1", "ada")})
        assert await taken(4) == [
            PresenceSnapshot("room", (Member("ada", "c1"),)),
            Join("room", Member("bob", "c2", {"name": "Bob"})),
            Broadcast("room", "bob", {"typing": True}),
            Leave("room", Member("ada", "c1")),
        ]
        assert list(sub.members) == ["c2"]
        # After a reconnect the first snapshot replaces the set.
        await conn.close(1012)
        conn = await gateway.next()
        resume = await subscribed(conn, "room", recovered=True)
        assert resume["presence"] is True
        await conn.send({"type": "presence", "channel": "room", "members": [member("c3", "cy")]})
        assert await taken(1) == [PresenceSnapshot("room", (Member("cy", "c3"),))]
        assert list(sub.members) == ["c3"]


async def test_presence_and_publish_requests(gateway: Gateway) -> None:
    """presence() returns members; publish() returns on `published`, raises with the code."""
    async with Client(gateway.url, token="t", **FAST) as client:
        asked = asyncio.create_task(client.presence("room"))
        conn = await gateway.next()
        frame = await conn.recv("presence")
        await conn.send(
            {
                "type": "presence",
                "id": frame["id"],
                "channel": "room",
                "members": [member("c1", "ada")],
            }
        )
        assert await asked == [Member("ada", "c1")]
        sending = asyncio.create_task(client.publish("room", {"n": 1}))
        frame = await conn.recv("publish")
        assert frame["data"] == {"n": 1}
        await conn.send({"type": "published", "id": frame["id"], "channel": "room"})
        await sending
        for code in ("forbidden", "too_large", "rate_limited"):
            sending = asyncio.create_task(client.publish("room", "x"))
            frame = await conn.recv("publish")
            await conn.send({"type": "error", "id": frame["id"], "code": code, "message": code})
            with pytest.raises(RequestError) as info:
                await sending
            assert info.value.code == code
        sending = asyncio.create_task(client.publish("room", "lost"))
        await conn.recv("publish")
        await conn.close(4008)
        with pytest.raises(RequestError) as info:
            await sending
        assert info.value.code == "disconnected"


async def test_4003_ends_everything_and_never_reconnects(gateway: Gateway) -> None:
    """Close 4003: iterations and waiting requests end with Disconnected(reason); no reconnect."""

    async def factory() -> str:
        return "fresh"

    async with Client(gateway.url, token_factory=factory, **FAST) as client:
        sub = client.channel("jobs")
        conn = await gateway.next()
        await subscribed(conn, "jobs")
        asked = asyncio.create_task(client.presence("jobs"))
        await conn.recv("presence")
        await conn.close(4003, "banned")
        with pytest.raises(Disconnected) as info:
            async with asyncio.timeout(WAIT):
                await anext(sub)
        assert info.value.reason == "banned"
        with pytest.raises(Disconnected):
            await asked
        assert isinstance(client.error, Disconnected)
        await asyncio.sleep(0.2)  # a reconnect would come within backoff_cap (0.05 s)
        assert gateway.count == 1
        assert client.state == "closed"
        with pytest.raises(Disconnected):
            await client.publish("jobs", 1)


async def test_a_revoked_subscription_ends_and_is_not_resubscribed(gateway: Gateway) -> None:
    """`unsubscribed` with a reason ends that iteration with SubscriptionRevoked, for good."""
    async with Client(gateway.url, token="t", **FAST) as client:
        orders = client.channel("orders")
        client.channel("news")
        conn = await gateway.next()
        await subscribed(conn, "orders")
        await subscribed(conn, "news")
        await conn.send({"type": "unsubscribed", "channel": "orders", "reason": "revoked"})
        with pytest.raises(SubscriptionRevoked) as info:
            async with asyncio.timeout(WAIT):
                await anext(orders)
        assert (info.value.code, info.value.reason) == ("revoked", "revoked")
        await conn.close(WSCloseCode.SERVICE_RESTART)
        conn = await gateway.next()
        assert (await conn.recv("subscribe"))["channel"] == "news"
        await asyncio.sleep(0.1)
        later = [conn.frames.get_nowait() for _ in range(conn.frames.qsize())]
        assert [f for f in later if f.get("channel") == "orders"] == []
