"""Server-side control on real Postgres and Redis: pgcast.disconnect / pgcast.unsubscribe
reach the control stream and its live channel once, after commit, in commit order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from listener.publisher import Event, Publisher
from pgcast.keys import (
    CONTROL_IDS,
    CONTROL_LIVE,
    CONTROL_MARKER,
    CONTROL_STREAM,
    FRAME_FIELD,
    Layout,
    StreamId,
    decode_control,
    decode_live,
    parse_stream_id,
)
from tests.integration.listener_support import Listeners, wait_until

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

DISCONNECT = b'{"op":"disconnect","sub":"42","reason":"x"}'


@pytest.fixture
def listeners(database_url: str, redis_url: str) -> Iterator[Listeners]:
    made = Listeners(database_url, redis_url)
    yield made
    made.stop_all()


async def _messages(pubsub: aioredis.client.PubSub, count: int) -> list[tuple[str, bytes]]:
    """The next ``count`` pub/sub messages as (channel, payload) (fails after 10 s)."""
    received: list[tuple[str, bytes]] = []
    async with asyncio.timeout(10):
        while len(received) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received.append((message["channel"].decode(), message["data"]))
    return received


async def _stream(redis: aioredis.Redis) -> list[tuple[StreamId, dict[str, object]]]:
    """(stream id, control) of every control stream entry, oldest first."""
    entries = await redis.xrange(CONTROL_STREAM)
    return [(parse_stream_id(i), orjson.loads(f[FRAME_FIELD])) for i, f in entries]


async def _control_ids(redis: aioredis.Redis) -> list[int]:
    """The outbox ids in pgcast:control:ids, lowest first (score = member = the id)."""
    pairs = await redis.zrange(CONTROL_IDS, 0, -1, withscores=True)
    assert all(int(member) == score for member, score in pairs)
    return [int(member) for member, _ in pairs]


def _controls(entries: list[tuple[StreamId, bytes]]) -> list[tuple[StreamId, object]]:
    """Live payloads decoded: (stream id, control)."""
    return [(entry, orjson.loads(body)) for entry, body in entries]


async def _outbox_empty(pg: asyncpg.Connection) -> None:
    await wait_until(
        lambda: pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"), "the outbox emptied"
    )


async def test_committed_controls_reach_stream_and_live_channel_rolled_back_never(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Commit: a stream entry and a live '<stream id>:<json>' each. Rollback: nothing."""
    listener = listeners.start()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(CONTROL_LIVE)
    try:
        async with pg.transaction():
            first = await pg.fetchval("SELECT pgcast.disconnect('42', 'account suspended')")
            second = await pg.fetchval("SELECT pgcast.unsubscribe('42', 'orders:*')")
        tx = pg.transaction()
        await tx.start()
        await pg.execute("SELECT pgcast.disconnect('7', 'rolled back')")
        await tx.rollback()
        third = await pg.fetchval("SELECT pgcast.disconnect('8')")
        live = _controls([decode_control(payload) for _, payload in await _messages(pubsub, 3)])
        expected = [
            {"op": "disconnect", "sub": "42", "reason": "account suspended"},
            {"op": "unsubscribe", "sub": "42", "pattern": "orders:*"},
            {"op": "disconnect", "sub": "8", "reason": ""},
        ]
        assert [control for _, control in live] == expected
        # the live payload names the entry Redis assigned it in the stream
        assert await _stream(redis_client) == live
        assert sorted(entry for entry, _ in live) == [entry for entry, _ in live]
        assert await _control_ids(redis_client) == [first, second, third]
        await _outbox_empty(pg)
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        await pubsub.aclose()
    assert listener.metric("pgcast_listener_controls_total", 'op="disconnect"') == 2
    assert listener.metric("pgcast_listener_controls_total", 'op="unsubscribe"') == 1
    assert listener.metric("pgcast_listener_events_total", 'result="published"') == 0
    # the control marker is no channel: no watermark, no channel keys
    assert await pg.fetchval("SELECT count(*) FROM pgcast.watermark") == 0
    assert await redis_client.keys("pgcast:{*") == []


async def test_control_arrives_between_the_events_of_its_transaction(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """publish, disconnect, publish in one transaction arrive in that order on one connection."""
    listeners.start()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(SINGLE.live_channel("a"), CONTROL_LIVE)
    try:
        async with pg.transaction():
            await pg.execute("""SELECT pgcast.publish('a', '{"n": 1}')""")
            await pg.execute("SELECT pgcast.disconnect('42', 'x')")
            await pg.execute("""SELECT pgcast.publish('a', '{"n": 2}')""")
            await pg.execute("""SELECT pgcast.publish('b', '{"n": 3}')""")
        received = await _messages(pubsub, 3)
    finally:
        await pubsub.aclose()
    assert [channel for channel, _ in received] == [
        SINGLE.live_channel("a"),
        CONTROL_LIVE,
        SINGLE.live_channel("a"),
    ]
    first, control, last = (payload for _, payload in received)
    assert orjson.loads(decode_live(first).frame)["data"] == {"n": 1}
    assert orjson.loads(decode_control(control)[1]) == orjson.loads(DISCONNECT)
    assert orjson.loads(decode_live(last).frame)["data"] == {"n": 2}


async def test_invalid_control_rows_are_counted_and_dropped_without_wedging_the_drain(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """A control row written by hand that no gateway could apply is logged, counted, deleted."""
    listener = listeners.start()
    await pg.execute("""
        INSERT INTO pgcast.outbox (channel, data) VALUES
            ('[control]', '{"op": "explode", "sub": "1"}'),
            ('[control]', '[1, 2]'),
            ('[control]', '{"op": "disconnect", "sub": ""}'),
            ('[control]', '{"op": "unsubscribe", "sub": "1", "pattern": "a[b"}')
    """)
    good = await pg.fetchval("SELECT pgcast.disconnect('1', 'ok')")
    await pg.execute("SELECT pgcast.publish('after', '1')")
    await _outbox_empty(pg)
    assert [c for _, c in await _stream(redis_client)] == [
        {"op": "disconnect", "sub": "1", "reason": "ok"}
    ]
    assert await _control_ids(redis_client) == [good]
    assert await redis_client.xlen(SINGLE.channel_keys("after").history) == 1
    assert listener.metric("pgcast_listener_events_total", 'result="invalid"') == 4
    assert listener.metric("pgcast_listener_controls_total", 'op="disconnect"') == 1
    assert "invalid control: unknown \"op\" 'explode'" in listener.service.log()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("pgcast.disconnect(NULL)", "sub must be a non-empty user id"),
        ("pgcast.disconnect('')", "sub must be a non-empty user id"),
        ("pgcast.disconnect(repeat('x', 251))", "sub is 251 characters long, at most 250"),
        ("pgcast.disconnect('1', repeat('é', 61))", "reason is 122 bytes long, at most 120"),
        ("pgcast.unsubscribe('', 'a')", "pgcast.unsubscribe: sub must be a non-empty"),
        ("pgcast.unsubscribe('1', NULL)", "pattern must be a non-empty channel name or glob"),
        ("pgcast.unsubscribe('1', '')", "pattern must be a non-empty channel name or glob"),
        ("pgcast.unsubscribe('1', repeat('a', 256))", "pattern is 256 characters long"),
        ("pgcast.unsubscribe('1', E'a\\tb')", "contains a control character or [ ]"),
        ("pgcast.unsubscribe('1', E'a\\u0085b')", "contains a control character or [ ]"),
        ("pgcast.unsubscribe('1', 'a[b]')", "contains a control character or [ ]"),
    ],
)
async def test_bad_arguments_raise_invalid_parameter_value(
    pg: asyncpg.Connection, call: str, message: str
) -> None:
    """Each mistake fails the call with SQLSTATE 22023 and says what is wrong; no row."""
    with pytest.raises(asyncpg.InvalidParameterValueError) as raised:
        await pg.execute(f"SELECT {call}")
    assert message in str(raised.value)
    assert raised.value.sqlstate == "22023"
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def test_limits_are_inclusive_and_null_reason_is_empty(pg: asyncpg.Connection) -> None:
    """250-character sub, 120-byte reason, 255-character glob pass; a NULL reason is ''."""
    await pg.execute("SELECT pgcast.disconnect(repeat('é', 250), repeat('é', 60))")
    await pg.execute("SELECT pgcast.disconnect('1', NULL)")
    await pg.execute("SELECT pgcast.unsubscribe('1', repeat('é', 254) || '*')")
    await pg.execute("SELECT pgcast.unsubscribe('1', 'user:?:*')")
    rows = await pg.fetch("SELECT channel, data FROM pgcast.outbox ORDER BY id")
    assert {row["channel"] for row in rows} == {CONTROL_MARKER}
    assert orjson.loads(rows[1]["data"]) == {"op": "disconnect", "sub": "1", "reason": ""}


async def test_concurrent_control_calls_never_wait_and_a_late_commit_is_delivered_last(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis, database_url: str
) -> None:
    """Two open transactions call pgcast.disconnect without blocking each other; the one
    holding the lower outbox id commits after the other was published, and still arrives
    (stream and live), after it: controls go in commit order, not id order."""
    listeners.start()
    other = await asyncpg.connect(database_url)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(CONTROL_LIVE)
    late = pg.transaction()
    try:
        await late.start()
        low = await pg.fetchval("SELECT pgcast.disconnect('1', 'late')")
        # Would fail with LockNotAvailableError (or time out) if the call waited for `late`.
        await other.execute("SET lock_timeout = '1s'")
        async with asyncio.timeout(5), other.transaction():
            high = await other.fetchval("SELECT pgcast.disconnect('2', 'early')")
        assert high > low
        [(_, early_payload)] = await _messages(pubsub, 1)  # published while `late` is open
        early_entry, early_body = decode_control(early_payload)
        assert orjson.loads(early_body) == {"op": "disconnect", "sub": "2", "reason": "early"}
        assert await _control_ids(redis_client) == [high]
        await late.commit()
        [(_, late_payload)] = await _messages(pubsub, 1)
        late_entry, late_body = decode_control(late_payload)
        assert orjson.loads(late_body) == {"op": "disconnect", "sub": "1", "reason": "late"}
        assert late_entry > early_entry
        await _outbox_empty(pg)
    finally:
        await pubsub.aclose()
        await other.close()
    assert await _stream(redis_client) == [
        (early_entry, {"op": "disconnect", "sub": "2", "reason": "early"}),
        (late_entry, {"op": "disconnect", "sub": "1", "reason": "late"}),
    ]
    assert await _control_ids(redis_client) == [low, high]


async def test_retried_batch_adds_no_duplicate_and_keeps_order(
    redis_client: aioredis.Redis,
) -> None:
    """A batch published again (its first reply lost) adds no second entry nor PUBLISH."""
    batch = [Event("a", b"1", 1), Event(CONTROL_MARKER, DISCONNECT, 2), Event("a", b"3", 3)]
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(SINGLE.live_channel("a"), CONTROL_LIVE)
    try:
        first = await Publisher(redis_client).publish(1, batch)
        again = await Publisher(redis_client).publish(2, batch)
        received = await _messages(pubsub, 3)
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        await pubsub.aclose()
    assert [r.status for r in first] == ["published"] * 3
    assert [r.status for r in again] == ["duplicate"] * 3
    assert [channel for channel, _ in received] == [
        SINGLE.live_channel("a"),
        CONTROL_LIVE,
        SINGLE.live_channel("a"),
    ]
    entry, body = decode_control(received[1][1])
    assert body == DISCONNECT
    assert await _stream(redis_client) == [(entry, orjson.loads(DISCONNECT))]
    assert await _control_ids(redis_client) == [2]
    # a lower outbox id not yet published (its transaction committed later) is no duplicate
    lower = await Publisher(redis_client).publish(2, [Event(CONTROL_MARKER, DISCONNECT, 1)])
    assert [r.status for r in lower] == ["published"]
    assert [r.status for r in await Publisher(redis_client).publish(2, batch)] == ["duplicate"] * 3
    (first_entry, _), (second_entry, _) = await _stream(redis_client)
    assert first_entry == entry < second_entry
    assert await _control_ids(redis_client) == [1, 2]


async def test_control_from_an_older_leader_is_fenced(redis_client: aioredis.Redis) -> None:
    """After a newer leader claimed the fence, an older one writes no control."""
    publisher = Publisher(redis_client)
    assert await publisher.claim_fence(5)
    results = await publisher.publish(4, [Event(CONTROL_MARKER, DISCONNECT, 9)])
    assert [r.status for r in results] == ["fenced"]
    assert not await redis_client.exists(CONTROL_STREAM)


async def test_controls_after_script_flush_and_with_wait_for_replicas(
    redis_client: aioredis.Redis,
) -> None:
    """A flushed script cache and a trailing WAIT leave each reply with its own call."""
    await Publisher(redis_client).publish(1, [Event("a", b"0", 1)])
    await redis_client.script_flush()
    acked: list[int] = []
    publisher = Publisher(
        redis_client,
        min_replicas=1,
        replica_timeout=0.01,
        replica_policy="degrade",
        on_replicas=lambda count, short, accepted: acked.append(count),
    )
    batch = [Event(CONTROL_MARKER, DISCONNECT, 2), Event("a", b"3", 3)]
    results = await publisher.publish(1, batch)
    assert [(r.status, r.offset) for r in results] == [("published", None), ("published", 2)]
    assert acked == [0]  # no replica here: WAIT's answer, accepted under policy degrade
    assert len(await _stream(redis_client)) == 1
    assert await _control_ids(redis_client) == [2]
