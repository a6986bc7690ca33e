"""A real pgcast-listener process moves committed events from Postgres into Redis."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Iterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from listener.publisher import Event, Publisher
from pgcast.keys import Layout, decode_live
from tests.integration.listener_support import (
    Listener,
    Listeners,
    history,
    leader_of,
    wait_until,
)

SINGLE = Layout()  # the key names of one Redis (and Sentinel)


@pytest.fixture
def listeners(database_url: str, redis_url: str) -> Iterator[Listeners]:
    made = Listeners(database_url, redis_url)
    yield made
    made.stop_all()


async def _live_messages(pubsub: aioredis.client.PubSub, count: int) -> list[dict[str, object]]:
    """The next ``count`` live payloads as decoded frames (fails after 10 s)."""
    frames: list[dict[str, object]] = []
    async with asyncio.timeout(10):
        while len(frames) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                live = decode_live(message["data"])
                frame = orjson.loads(live.frame)
                assert frame["offset"] == str(live.offset)
                frames.append(frame)
    return frames


async def test_committed_event_lands_once_rolled_back_never_and_100kb_intact(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Commit: once in history and on pub/sub. Rollback: never. 100 KB: intact."""
    listeners.start()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(SINGLE.channel_keys("news").live)
    try:
        await pg.execute("""SELECT pgcast.publish('news', '{"n": 1}')""")
        tx = pg.transaction()
        await tx.start()
        await pg.execute("""SELECT pgcast.publish('news', '{"n": "rolled back"}')""")
        await tx.rollback()
        big = {"n": 3, "blob": "é" * 50_000}  # 100 KB of UTF-8
        await pg.execute("SELECT pgcast.publish('news', $1::jsonb)", orjson.dumps(big).decode())
        live = await _live_messages(pubsub, 2)
        assert [(m["offset"], m["data"]) for m in live] == [("1", {"n": 1}), ("2", big)]
        assert await history(redis_client, "news") == [(1, {"n": 1}), (2, big)]
        await wait_until(
            lambda: pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"), "outbox drained"
        )
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        await pubsub.aclose()


async def test_trigger_delivers_insert_update_delete_to_each_channel(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Row changes reach every templated channel's history, in order."""
    listeners.start()
    await pg.execute("""
        CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text);
        CREATE TRIGGER pgcast AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('orders', 'user:{customer}');
        INSERT INTO orders VALUES (10, 42, 'new');
        UPDATE orders SET status = 'paid';
        DELETE FROM orders;
    """)
    expected = [
        (1, {"table": "orders", "op": "INSERT", "id": 10}),
        (2, {"table": "orders", "op": "UPDATE", "id": 10, "changed": ["status"]}),
        (3, {"table": "orders", "op": "DELETE", "id": 10}),
    ]

    async def delivered() -> bool:
        return len(await history(redis_client, "user:42")) == 3

    await wait_until(delivered, "three events on user:42")
    assert await history(redis_client, "user:42") == expected
    assert await history(redis_client, "orders") == expected


async def test_events_committed_while_no_listener_runs_are_published_at_start(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """The outbox keeps events until a listener starts; catch-up publishes them all."""
    await pg.execute("SELECT pgcast.publish('later', to_jsonb(n)) FROM generate_series(1, 1200) n")
    listeners.start(PGCAST_BATCH_SIZE="500", PGCAST_POLL_INTERVAL="30", PGCAST_HISTORY_SIZE="2000")

    async def all_there() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("later").history) == 1200

    await wait_until(all_there, "1200 events published")
    assert [data for _, data in await history(redis_client, "later")] == list(range(1, 1201))


async def test_invalid_channel_is_counted_and_dropped_without_wedging_the_drain(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """An event on an invalid channel is logged, counted and deleted; later events flow."""
    listener = listeners.start()
    await pg.execute("""SELECT pgcast.publish('bad*glob', '1'), pgcast.publish(E'ctl\\x01', '2')""")
    await pg.execute("SELECT pgcast.publish('good', '3')")

    async def good_arrived() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("good").history) == 1

    await wait_until(good_arrived, "the valid event")
    await wait_until(
        lambda: pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"), "the outbox emptied"
    )
    assert listener.metric("pgcast_listener_events_total", 'result="invalid"') == 2
    assert not await redis_client.exists(SINGLE.channel_keys("bad*glob").history)
    assert "invalid channel 'bad*glob'" in listener.service.log()


async def test_relayed_notify_channel_and_malformed_payload(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Plain NOTIFY on a relayed channel is published; a non-JSON payload is counted."""
    listener = listeners.start(PGCAST_RELAY_CHANNELS="legacy,other")
    await leader_of([listener])

    # Relaying is best effort: a NOTIFY sent before the new leader's LISTEN is lost. The
    # malformed one, sent until it is counted, proves the LISTEN is in place.
    async def malformed_counted() -> bool:
        await pg.execute("NOTIFY legacy, 'not json'")
        try:
            return listener.metric("pgcast_listener_relayed_total", 'result="malformed"') >= 1
        except KeyError:  # not counted yet
            return False

    await wait_until(malformed_counted, "the malformed notification counted", interval=0.2)
    await pg.execute("""NOTIFY legacy, '{"hello": "world"}'""")

    async def relayed() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("legacy").history) == 1

    await wait_until(relayed, "the relayed notification")
    assert await history(redis_client, "legacy") == [(1, {"hello": "world"})]
    await wait_until(  # counted once the EVAL reply is read, after Redis shows the entry
        lambda: listener.metric("pgcast_listener_relayed_total", 'result="published"') == 1,
        "the relay counted",
    )


async def test_poll_mode_publishes_without_any_notify(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Poll mode: no NOTIFY sent, no LISTEN; the poll interval delivers the events."""
    listener = listeners.start(PGCAST_NOTIFY_MODE="poll", PGCAST_POLL_INTERVAL="0.1")
    await pg.execute("SET pgcast.notify = 'off'")
    await pg.execute("SELECT pgcast.publish('polled', '1')")

    async def arrived() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("polled").history) == 1

    await wait_until(arrived, "the polled event")
    assert listener.metric("pgcast_listener_wakeups_total") == 0


async def test_healthz_metrics_and_clean_sigterm(
    listeners: Listeners, pg: asyncpg.Connection
) -> None:
    """Probes report role, epoch, lag and queue usage; SIGTERM exits 0 and frees the lock."""
    first = listeners.start()
    await wait_until(lambda: first.role() == "leader", "first listener leads")
    second = listeners.start()
    assert second.role() == "standby"
    health = orjson.loads(first.get("/healthz"))
    assert health["status"] == "ok"
    assert health["epoch"] >= 1
    assert first.metric("pgcast_listener_role", 'role="leader"') == 1
    assert second.metric("pgcast_listener_role", 'role="standby"') == 1
    for name in ("pgcast_listener_publish_lag_seconds", "pgcast_listener_notification_queue_usage"):
        assert first.metric(name) >= 0
    assert first.service.terminate(10) == 0
    await wait_until(lambda: second.role() == "leader", "standby takes over after SIGTERM", 5)
    assert "received SIGTERM" in first.service.log()


async def test_sigterm_right_after_a_publish_leaves_no_published_row(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """The leader deletes what it published with its next drain (50 ms later when idle):
    a SIGTERM in between still deletes it on the way out, so the next leader finds
    nothing to publish again."""
    leader = await leader_of([listeners.start()])
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(SINGLE.channel_keys("last").live)
    try:
        await pg.execute("""SELECT pgcast.publish('last', '"bye"')""")
        assert [f["data"] for f in await _live_messages(pubsub, 1)] == ["bye"]
        assert leader.service.terminate(10) == 0
    finally:
        await pubsub.aclose()
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def _publish_until(dsn: str, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            await conn.execute("SELECT pgcast.publish('busy', '1')")
    finally:
        await conn.close()


async def _sigterm_mid_publish(leader: Listener) -> int | None:
    """SIGTERM ``leader`` once it publishes steadily; its exit code (None: ignored)."""
    await wait_until(
        lambda: leader.metric("pgcast_listener_events_total", 'result="published"') > 20,
        "events flowing through the leader",
    )
    await asyncio.sleep(random.uniform(0.0, 0.3))
    try:
        return await asyncio.to_thread(leader.service.terminate, 5)
    except subprocess.TimeoutExpired:
        return None  # it ignored the SIGTERM and was killed


@pytest.mark.slow
async def test_sigterm_while_publishing_steadily_exits_every_time(
    listeners: Listeners, database_url: str
) -> None:
    """SIGTERM lands mid-publish: the leader still stops, exit 0, every time.

    On Python 3.11 redis-py's send (asyncio.wait_for) could swallow the cancellation:
    before pgcast.cancellation the leader ignored SIGTERM in 11 of 27 such tries.
    """
    stop = asyncio.Event()
    writer = asyncio.create_task(_publish_until(database_url, stop))
    try:
        for round_ in range(8):
            leader = await leader_of([listeners.start()])
            code = await _sigterm_mid_publish(leader)
            assert code == 0, f"round {round_}: exit {code}\n{leader.service.log()[-2000:]}"
    finally:
        stop.set()
        await writer


async def test_batch_published_by_a_crashed_leader_is_not_published_again(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Rows a dead leader published but never deleted are skipped as duplicates."""
    await pg.execute("SELECT pgcast.publish('crash', to_jsonb(n)) FROM generate_series(1, 5) n")
    # The crashed leader: epoch 1, published rows 1-3, died before its DELETE.
    epoch = await pg.fetchval("UPDATE pgcast.leader SET epoch = epoch + 1 RETURNING epoch")
    rows = await pg.fetch("SELECT id, channel, data::text FROM pgcast.outbox ORDER BY id LIMIT 3")
    crashed = Publisher(redis_client)
    assert await crashed.claim_fence(epoch)
    await crashed.publish(epoch, [Event(r["channel"], r["data"].encode(), r["id"]) for r in rows])
    listener = listeners.start()

    async def all_five() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("crash").history) == 5

    await wait_until(all_five, "the remaining rows published")
    await wait_until(
        lambda: pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"), "the outbox emptied"
    )
    assert await history(redis_client, "crash") == [(n, n) for n in range(1, 6)]
    assert listener.metric("pgcast_listener_events_total", 'result="duplicate"') == 3
    assert listener.metric("pgcast_listener_events_total", 'result="published"') == 2


async def test_leader_vacuums_the_outbox_every_n_deleted_rows(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """PGCAST_VACUUM_EVERY: dead outbox rows are reclaimed by the leader, not left for a
    once-a-minute autovacuum (every poll reads the oldest rows, dead ones included)."""
    listeners.start(PGCAST_VACUUM_EVERY="100")
    await pg.execute("SELECT pgcast.publish('vac', to_jsonb(n)) FROM generate_series(1, 250) n")

    async def all_there() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("vac").history) == 250

    async def vacuumed() -> bool:
        count = await pg.fetchval(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgcast.outbox'::regclass"
        )
        return bool(count and count >= 1)

    await wait_until(all_there, "250 events published")
    await wait_until(vacuumed, "a VACUUM of pgcast.outbox by the leader")
