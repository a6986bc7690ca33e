"""Gapless resume over WebSocket and SSE, and recovered:false whenever history cannot cover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from pgcast.keys import offset_of_stream_id
from tests.gateway_support import (
    Client,
    Events,
    SseReader,
    offsets,
    settings,
    token,
)

MakeClient = Callable[..., Awaitable[TestClient]]
TOKEN = token("42", channels=["news", "sports"])


async def connect(http: TestClient) -> Client:
    return Client(await http.ws_connect("/ws", params={"token": TOKEN}))


async def test_resume_gets_exactly_the_missed_messages_while_a_writer_keeps_publishing(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """50 seen, disconnect, 30 published, resume: those 30 in order, then live, no gap, no dup."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    events = Events(redis_client)
    first = await connect(http)
    sub = await first.subscribe("news")
    epoch = sub["epoch"]
    await events.numbered("news", 1, 50)
    seen = await first.messages(50)
    assert offsets(seen) == list(range(1, 51))
    await first.ws.close()

    await events.numbered("news", 51, 30)
    stop = asyncio.Event()
    written: list[int] = []

    async def writer() -> None:
        n = 81
        while not stop.is_set():
            written.extend(await events.numbered("news", n, 1))
            n += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.05)  # the writer is publishing while the resume happens
        again = await connect(http)
        resumed = await again.subscribe("news", since="50", epoch=epoch, id="r")
        assert resumed["recovered"] is True, resumed
        assert resumed["epoch"] == epoch
        replayed = resumed["replayed"]
        assert replayed >= 30
        assert int(resumed["offset"]) == 50 + replayed
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    total = 80 + len(written)
    got = await again.messages(total - 50)
    assert offsets(got) == list(range(51, total + 1))
    assert [orjson.loads(orjson.dumps(f["data"]))["n"] for f in got[:30]] == list(range(51, 81))
    await again.send(type="ping")
    assert (await again.recv())["type"] == "pong"  # nothing more: no duplicate after the tail


async def test_wrong_epoch_and_trimmed_history_are_not_recovered(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A foreign epoch, or a gap older than what history still holds: recovered:false."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    small = Events(redis_client, history_size=10)
    await small.numbered("sports", 1, 250)
    first_kept = offset_of_stream_id(
        (await redis_client.xrange(small.layout.channel_keys("sports").history, count=1))[0][0]
    )
    assert first_kept > 6  # history was trimmed by the publisher's MAXLEN
    client = await connect(http)
    fresh = await client.subscribe("sports")
    assert (fresh["offset"], fresh["recovered"], fresh["replayed"]) == ("250", False, 0)
    epoch = fresh["epoch"]
    await client.send(type="unsubscribe", channel="sports")
    await client.expect("unsubscribed")
    trimmed = await client.subscribe("sports", since="5", epoch=epoch)
    assert (trimmed["recovered"], trimmed["replayed"], trimmed["offset"]) == (False, 0, "250")
    await client.send(type="unsubscribe", channel="sports")
    await client.expect("unsubscribed")
    foreign = await client.subscribe("sports", since="249", epoch="not-" + epoch)
    assert (foreign["recovered"], foreign["epoch"]) == (False, epoch)
    await client.send(type="unsubscribe", channel="sports")
    await client.expect("unsubscribed")
    covered = await client.subscribe("sports", since=str(first_kept - 1), epoch=epoch)
    assert covered["recovered"] is True
    replay = await client.messages(covered["replayed"])
    assert offsets(replay) == list(range(first_kept, 251))
    metrics = await (await http.get("/metrics")).text()
    assert 'pgcast_gateway_resumes_total{recovered="false"} 2.0' in metrics
    assert 'pgcast_gateway_resumes_total{recovered="true"} 1.0' in metrics


async def test_a_channel_nobody_published_to_gets_a_resumable_epoch(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """subscribed carries a real epoch even before the first message, and it resumes."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    client = await connect(http)
    sub = await client.subscribe("news")
    assert sub["offset"] == "0"
    assert sub["epoch"]
    await client.ws.close()
    events = Events(redis_client)
    await events.numbered("news", 1, 3)
    again = await connect(http)
    resumed = await again.subscribe("news", since="0", epoch=sub["epoch"])
    assert (resumed["recovered"], resumed["replayed"]) == (True, 3)
    assert offsets(await again.messages(3)) == [1, 2, 3]


async def test_sse_streams_several_channels_and_resumes_with_last_event_id(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """One stream, two channels; after a reconnect with Last-Event-ID nothing is lost."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    events = Events(redis_client)
    params = [("channel", "news"), ("channel", "user:42"), ("token", TOKEN)]
    resp = await http.get("/sse", params=params)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    reader = SseReader(resp)
    subscribed = [await reader.event(), await reader.event()]
    assert {f["channel"] for f in subscribed} == {"news", "user:42"}
    await events.numbered("news", 1, 3)
    await events.numbered("user:42", 1, 2)
    got = await reader.messages(5)
    assert sorted((f["channel"], int(f["offset"])) for f in got) == [
        ("news", 1),
        ("news", 2),
        ("news", 3),
        ("user:42", 1),
        ("user:42", 2),
    ]
    last_id = reader.last_id
    resp.close()
    await events.numbered("news", 4, 2)
    await events.numbered("user:42", 3, 1)
    resp2 = await http.get("/sse", params=params, headers={"Last-Event-ID": last_id or ""})
    reader2 = SseReader(resp2)
    frames = [await reader2.event() for _ in range(5)]  # per channel: subscribed, replay
    heads = [f for f in frames if f["type"] == "subscribed"]
    assert [(h["channel"], h["recovered"]) for h in heads] == [("news", True), ("user:42", True)]
    got2 = [f for f in frames if f["type"] == "message"]
    assert sorted((f["channel"], int(f["offset"])) for f in got2) == [
        ("news", 4),
        ("news", 5),
        ("user:42", 3),
    ]
    resp2.close()


async def test_sse_refusals_before_streaming(aiohttp_client: MakeClient, redis_url: str) -> None:
    """No token 401, no channel 400, a channel not granted 403."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    assert (await http.get("/sse", params={"channel": "news"})).status == 401
    assert (await http.get("/sse", params={"token": TOKEN})).status == 400
    forbidden = await http.get("/sse", params={"token": TOKEN, "channel": "user:43"})
    assert forbidden.status == 403
    with contextlib.suppress(Exception):
        forbidden.close()


async def test_sse_stream_ends_with_4001_when_the_token_expires(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """A token cannot be refreshed over SSE: at expiry the stream ends with a 4001 close event."""
    http = await aiohttp_client(create_app(settings(redis_url, PGCAST_JWT_LEEWAY="0")))
    params = {"channel": "user:42", "token": token("42", ttl=2)}
    resp = await http.get("/sse", params=params)
    reader = SseReader(resp)
    assert (await reader.event())["type"] == "subscribed"
    closing = await reader.event(wait=5)
    assert (closing["type"], closing["code"]) == ("close", 4001)
    resp.close()
