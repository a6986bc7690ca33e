"""The Python client's presence, client messages and server-side control against real
processes: a listener and two gateways, Redis, Postgres.

Two clients on two different gateways see each other's joins, meta updates, leaves
and client messages; ``pgcast.disconnect`` closes a user's connections with 4003
and the client stops for good; ``pgcast.unsubscribe`` revokes a subscription, which
ends with ``SubscriptionRevoked`` and is not resubscribed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from pgcast_client import (
    Broadcast,
    Client,
    Disconnected,
    Join,
    Leave,
    PresenceSnapshot,
    RequestError,
    SubscriptionRevoked,
)
from pgcast_client.presence import PresenceEvent
from tests.browser.stack import Stack, mint, start_stack

FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "restart_jitter": 0.2}
WAIT = 20.0


@pytest.fixture
def stack(database_url: str, redis_url: str) -> Iterator[Stack]:
    running = start_stack(database_url, redis_url, gateways=2)
    yield running
    running.stop()


def token(sub: str, **claims: list[str]) -> str:
    """A token for ``sub`` on room:* (and the extra claims: publish, presence)."""
    return mint(sub=sub, channels=("room:*", "news"), ttl=120.0, **claims)


class Events:
    """A subscription's presence events and broadcasts, awaited one by one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[PresenceEvent | Broadcast] = asyncio.Queue()

    def put(self, event: PresenceEvent | Broadcast) -> None:
        self.queue.put_nowait(event)

    async def next_of(self, kind: type, what: str) -> PresenceEvent | Broadcast:
        async with asyncio.timeout(WAIT):
            while True:
                event = await self.queue.get()
                if isinstance(event, kind):
                    return event


async def test_presence_and_client_messages_cross_gateways(stack: Stack) -> None:
    """Joins, meta updates, leaves and broadcasts go from one gateway's client to the other's."""
    publish = {"publish": ["room:*"]}
    seen = Events()
    async with (
        Client(stack.ws_url(0), token=token("alice", **publish), **FAST) as alice,
        Client(stack.ws_url(1), token=token("bob", **publish), **FAST) as bob,
    ):
        watch = alice.channel("room:1", on_presence=seen.put, on_broadcast=seen.put)
        await alice.track("room:1", {"name": "Alice"})
        snapshot = await seen.next_of(PresenceSnapshot, "alice's snapshot")
        assert isinstance(snapshot, PresenceSnapshot)
        assert [m.sub for m in snapshot.members] in ([], ["alice"])
        bob_sub = bob.channel("room:1")
        async with asyncio.timeout(WAIT):
            await bob_sub.ready()
            await watch.ready()
        await bob.track("room:1", {"name": "Bob"})
        joined = await seen.next_of(Join, "bob's join")
        while isinstance(joined, Join) and joined.member.sub != "bob":
            joined = await seen.next_of(Join, "bob's join")
        assert isinstance(joined, Join)
        assert joined.member.meta == {"name": "Bob"}
        await bob.track("room:1", {"name": "Bob", "typing": True})
        update = await seen.next_of(Join, "bob's meta update")
        assert isinstance(update, Join)
        assert update.update
        assert update.member.meta["typing"] is True
        members = await bob.presence("room:1")
        assert sorted(m.sub for m in members) == ["alice", "bob"]

        await bob.publish("room:1", {"hello": "alice"})
        message = await seen.next_of(Broadcast, "bob's message")
        assert message == Broadcast("room:1", "bob", {"hello": "alice"})

        bob_conn = joined.member.conn
        await bob.close()  # closing the connection is leaving
        left = await seen.next_of(Leave, "bob's leave")
        assert isinstance(left, Leave)
        assert left.member.conn == bob_conn
        assert sorted(m.sub for m in watch.members.values()) == ["alice"]


async def test_publish_and_presence_are_refused_without_their_claims(stack: Stack) -> None:
    """No `publish` claim: forbidden; a channel outside `presence`: forbidden."""
    limited = token("carol", presence=["room:open"])
    async with Client(stack.ws_url(0), token=limited, **FAST) as client:
        with pytest.raises(RequestError) as info:
            await client.publish("room:1", {"x": 1})
        assert info.value.code == "forbidden"
        with pytest.raises(RequestError) as info:
            await client.track("room:1", {})
        assert info.value.code == "forbidden"
        await client.track("room:open", {"ok": True})
        assert [m.sub for m in await client.presence("room:open")] == ["carol"]


async def test_sql_disconnect_closes_with_4003_and_the_client_stops(
    stack: Stack, pg: asyncpg.Connection
) -> None:
    """pgcast.disconnect('42', 'banned'): 4003 with the reason, no reconnect, others untouched."""
    connects = 0

    async def factory() -> str:
        nonlocal connects
        connects += 1
        return token("42")

    async with (
        Client(stack.ws_url(0), token_factory=factory, **FAST) as banned,
        Client(stack.ws_url(1), token=token("7"), **FAST) as other,
    ):
        sub = banned.channel("news")
        keep = other.channel("news")
        async with asyncio.timeout(WAIT):
            await sub.ready()
            await keep.ready()
        await pg.execute("SELECT pgcast.disconnect('42', 'banned')")
        with pytest.raises(Disconnected) as info:
            async with asyncio.timeout(WAIT):
                await anext(sub)
        assert info.value.reason == "banned"
        assert banned.state == "closed"
        await asyncio.sleep(1.0)  # backoff_cap is 0.5 s: a reconnect would have happened
        assert connects == 1
        assert banned.connections == 1
        assert other.connected.is_set()
        assert keep.state == "active"


async def test_sql_unsubscribe_revokes_matching_subscriptions(
    stack: Stack, pg: asyncpg.Connection
) -> None:
    """pgcast.unsubscribe('42', 'room:*'): those end with SubscriptionRevoked; news goes on."""
    async with Client(stack.ws_url(1), token=token("42"), **FAST) as client:
        room = client.channel("room:9")
        news = client.channel("news")
        async with asyncio.timeout(WAIT):
            await room.ready()
            await news.ready()
        await pg.execute("SELECT pgcast.unsubscribe('42', 'room:*')")
        with pytest.raises(SubscriptionRevoked) as info:
            async with asyncio.timeout(WAIT):
                await anext(room)
        assert info.value.reason == "revoked"
        await pg.execute("SELECT pgcast.publish('news', '{\"n\": 1}'::jsonb)")
        async with asyncio.timeout(WAIT):
            message = await anext(news)
        assert message.data == {"n": 1}
        assert room.state == "closed"
