"""The pub/sub link over a real Redis: messages handed over synchronously in batches,
SUBSCRIBEs confirmed one by one, a lost or refused connection closes it (never a
silent reconnect), AUTH through the URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.pubsub import LinkClosedError, PubSubLink, open_link
from pgcast.redis_url import parse_redis_url
from tests.servers import free_port

WAIT = 5.0


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, bytes]] = []
        self.batching = False
        self.batches = 0
        self.outside_batch = 0
        self.arrived = asyncio.Event()

    def on_message(self, channel: bytes, payload: bytes) -> None:
        self.got.append((channel, payload))
        self.outside_batch += not self.batching
        self.arrived.set()

    def begin(self) -> None:
        self.batching = True
        self.batches += 1

    def end(self) -> None:
        self.batching = False

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def link(redis_url: str, rec: Recorder) -> AsyncIterator[PubSubLink]:
    link = await open_link(
        parse_redis_url(redis_url),
        rec.on_message,
        name="test-link",
        within=WAIT,
        begin=rec.begin,
        end=rec.end,
    )
    yield link
    await link.aclose()


async def _clients_named(redis: aioredis.Redis, name: str) -> list[dict[str, str]]:  # type: ignore[type-arg, unused-ignore]
    return [c for c in await redis.client_list() if c.get("name") == name]


async def test_each_subscribe_is_confirmed_by_its_own_reply(
    link: PubSubLink,
    rec: Recorder,
    redis_client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
) -> None:
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE: both futures resolve, the channel stays live."""
    (first,) = link.subscribe([b"x"])
    link.unsubscribe([b"x"])
    (second,) = link.subscribe([b"x"])
    async with asyncio.timeout(WAIT):
        await asyncio.gather(first, second)
    assert await redis_client.publish("x", b"1:e:{}") == 1
    await rec.wait_for(1)
    assert rec.got == [(b"x", b"1:e:{}")]


async def test_messages_come_in_order_inside_batches(
    link: PubSubLink,
    rec: Recorder,
    redis_client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
) -> None:
    """A burst published in one round trip is dispatched within begin/end, in order."""
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*link.subscribe([b"a", b"b"]))
    batches_before = rec.batches
    pipe = redis_client.pipeline(transaction=False)
    for i in range(200):
        pipe.publish("a" if i % 2 else "b", str(i).encode())
    await pipe.execute()
    await rec.wait_for(200)
    assert [int(p) for _, p in rec.got] == list(range(200))
    assert rec.outside_batch == 0
    assert not rec.batching
    assert rec.batches - batches_before < 200  # buffered replies share a batch


async def test_a_killed_connection_closes_the_link_without_reconnecting(
    link: PubSubLink,
    redis_client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
) -> None:
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*link.subscribe([b"k"]))
    (client,) = await _clients_named(redis_client, "test-link")
    await redis_client.execute_command("CLIENT", "KILL", "ID", client["id"])
    async with asyncio.timeout(WAIT):
        await link.closed
    assert await _clients_named(redis_client, "test-link") == []
    with pytest.raises(LinkClosedError):
        link.subscribe([b"k2"])


async def test_abort_fails_pending_confirmations_and_resolves_closed(link: PubSubLink) -> None:
    pending = link.subscribe([b"p1", b"p2"])
    link.abort(TimeoutError("no heartbeat"))
    assert all(isinstance(f.exception(), LinkClosedError) for f in pending)
    assert isinstance(link.closed.result(), TimeoutError)
    link.unsubscribe([b"p1"])  # a closed link ignores it
    await link.aclose()


async def test_acl_user_through_the_url_and_a_refused_subscribe_drops_the_link(
    redis_url: str,
    redis_client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
) -> None:
    user, password = "pubsub-limited", "pw-Qx7"
    await redis_client.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", "&allowed", "+@all", "~*"
    )
    try:
        host = redis_url.split("://", 1)[1]
        url = f"redis://{user}:{password}@{host}"
        link = await open_link(
            parse_redis_url(url), lambda c, p: None, name="test-acl", within=WAIT
        )
        try:
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*link.subscribe([b"allowed"]))
                (refused,) = link.subscribe([b"denied"])
                with pytest.raises(LinkClosedError):
                    await refused
                await link.closed
        finally:
            await link.aclose()
        with pytest.raises(ConnectionError):
            await open_link(
                parse_redis_url(f"redis://{user}:wrong@{host}"),
                lambda c, p: None,
                name="x",
                within=WAIT,
            )
    finally:
        await redis_client.execute_command("ACL", "DELUSER", user)


async def test_no_server_is_a_connection_error() -> None:
    """The hub's reconnect loop catches ConnectionError: redis-py's errors arrive as one."""
    with pytest.raises(ConnectionError):
        await open_link(
            parse_redis_url(f"redis://127.0.0.1:{free_port()}/0"),
            lambda c, p: None,
            name="x",
            within=2,
        )
