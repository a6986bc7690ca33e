"""A real listener and the wake-up protocol: awake it is polled into silence, asleep it is woken.

Every test watches the wake-up channel with a spy connection; a marker NOTIFY on a
channel of its own bounds what the spy may still receive (test_sql_wakeup.Spy).
Poll intervals are set far above the deadlines where a delivery must prove the NOTIFY
path (or the awake polling), not the safety-net poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout
from tests.integration.listener_support import Listener, Listeners, history, wait_until
from tests.integration.test_sql_wakeup import WAKE_LOCK_SQL, Spy

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

SLOW_POLL = "30"  # seconds: nothing in these tests may rely on the safety-net poll


@pytest.fixture
def listeners(database_url: str, redis_url: str) -> Iterator[Listeners]:
    made = Listeners(database_url, redis_url)
    yield made
    made.stop_all()


@pytest.fixture
async def spy(database_url: str) -> AsyncIterator[Spy]:
    conn = await asyncpg.connect(database_url)
    yield await Spy(conn).start()
    await conn.close()


async def _leading(listener: Listener) -> None:
    await wait_until(lambda: listener.role() == "leader", "the listener leads")


async def _asleep(listener: Listener) -> None:
    await wait_until(lambda: listener.metric("pgcast_listener_awake") == 0, "the leader sleeps")


async def _count(redis: aioredis.Redis, channel: str, expected: int) -> None:
    async def arrived() -> bool:
        return int(await redis.xlen(SINGLE.channel_keys(channel).history)) >= expected

    await wait_until(arrived, f"{expected} events on {channel}", deadline_s=10)


async def test_burst_while_awake_sends_no_notify_and_arrives_exactly_once(
    listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    spy: Spy,
    database_url: str,
) -> None:
    """Awake leader: 4 concurrent writers and a bulk trigger insert send no NOTIFY at all,
    and every event lands once, in order per writer."""
    listener = listeners.start(PGCAST_AWAKE_LINGER="60", PGCAST_POLL_INTERVAL=SLOW_POLL)
    await _leading(listener)
    await pg.execute("""
        CREATE TABLE items (id bigint PRIMARY KEY);
        CREATE TRIGGER pgcast AFTER INSERT ON items FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('items');
    """)
    writers = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        for i in range(100):
            for w, writer in enumerate(writers):
                await writer.execute("SELECT pgcast.publish($1, to_jsonb($2::int))", f"b:{w}", i)
        await pg.execute("INSERT INTO items SELECT generate_series(1, 300)")
    finally:
        for writer in writers:
            await writer.close()
    await _count(redis_client, "items", 300)
    for w in range(4):
        await _count(redis_client, f"b:{w}", 100)
        got: list[object] = list(await history(redis_client, f"b:{w}"))
        assert got == [(i + 1, i) for i in range(100)]
    ids = [data["id"] for _, data in await history(redis_client, "items")]
    assert ids == list(range(1, 301))
    assert await spy.seen(pg) == []
    assert listener.metric("pgcast_listener_wakeups_total") == 0
    assert listener.metric("pgcast_listener_awake") == 1


async def test_idle_leader_sleeps_and_a_notify_delivers_promptly(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis, spy: Spy
) -> None:
    """Idle past the linger, the leader holds the wake lock; one publish NOTIFYs once and
    is delivered long before the poll interval."""
    listener = listeners.start(PGCAST_AWAKE_LINGER="0.05", PGCAST_POLL_INTERVAL=SLOW_POLL)
    await _leading(listener)
    await _asleep(listener)
    holders = [row["pid"] for row in await pg.fetch(WAKE_LOCK_SQL)]
    assert len(holders) == 1
    await pg.execute("""SELECT pgcast.publish('lone', '"hi"')""")
    await _count(redis_client, "lone", 1)
    assert await spy.seen(pg) == [""]
    assert listener.metric("pgcast_listener_wakeups_total") == 1
    assert listener.metric("pgcast_listener_awake") == 0  # a lone NOTIFY does not wake it


async def test_dense_notifies_wake_the_leader_and_idleness_puts_it_back_to_sleep(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Rows at the wake rate (a wake gap of 1 s over a 50 ms window: two rows) wake the
    leader (it polls); idle again past the linger, it sleeps."""
    listener = listeners.start(
        PGCAST_WAKE_GAP="1.0", PGCAST_AWAKE_LINGER="0.05", PGCAST_POLL_INTERVAL=SLOW_POLL
    )
    await _leading(listener)
    await _asleep(listener)
    for i in range(3):
        await pg.execute("SELECT pgcast.publish('dense', to_jsonb($1::int))", i)
    await _count(redis_client, "dense", 3)
    await wait_until(lambda: listener.metric("pgcast_listener_wakes_total") >= 1, "a wake-up")
    await _asleep(listener)
    assert listener.metric("pgcast_listener_sleeps_total", 'result="slept"') >= 2
    values: list[object] = [data for _, data in await history(redis_client, "dense")]
    assert values == [0, 1, 2]


async def test_open_write_transaction_keeps_the_leader_awake_and_others_flow(
    listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    spy: Spy,
    database_url: str,
) -> None:
    """A transaction that skipped the NOTIFY and stays open refuses the leader's sleep; other
    writers' events still arrive by polling; at its commit its own event arrives too."""
    slow = await asyncpg.connect(database_url)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute("""SELECT pgcast.publish('slow', '"late"')""")
        listener = listeners.start(PGCAST_AWAKE_LINGER="0.05", PGCAST_POLL_INTERVAL=SLOW_POLL)
        await _leading(listener)
        await wait_until(
            lambda: listener.metric("pgcast_listener_sleeps_total", 'result="refused"') >= 2,
            "refused sleeps",
        )
        for i in range(5):
            await pg.execute("SELECT pgcast.publish('fast', to_jsonb($1::int))", i)
            await _count(redis_client, "fast", i + 1)
        assert listener.metric("pgcast_listener_awake") == 1
        await tx.commit()
    finally:
        await slow.close()
    await _count(redis_client, "slow", 1)
    await _asleep(listener)
    assert await spy.seen(pg) == []


async def test_notify_mode_sleeps_for_good_and_every_writer_notifies(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis, spy: Spy
) -> None:
    """PGCAST_NOTIFY_MODE=notify: asleep at once and for good; each publish NOTIFYs."""
    listener = listeners.start(PGCAST_NOTIFY_MODE="notify", PGCAST_POLL_INTERVAL=SLOW_POLL)
    await _leading(listener)
    await _asleep(listener)
    for i in range(3):
        await pg.execute("SELECT pgcast.publish('n', to_jsonb($1::int))", i)
    await _count(redis_client, "n", 3)
    assert await spy.seen(pg) == ["", "", ""]
    assert listener.metric("pgcast_listener_wakes_total") == 0


async def test_poll_mode_takes_no_wake_lock_so_default_writers_skip_notify(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis, spy: Spy
) -> None:
    """PGCAST_NOTIFY_MODE=poll never sleeps: writers in the default mode send no NOTIFY."""
    listener = listeners.start(PGCAST_NOTIFY_MODE="poll", PGCAST_POLL_INTERVAL="0.1")
    await _leading(listener)
    await pg.execute("""SELECT pgcast.publish('p', '1')""")
    await _count(redis_client, "p", 1)
    assert await pg.fetch(WAKE_LOCK_SQL) == []
    assert await spy.seen(pg) == []
    assert listener.metric("pgcast_listener_awake") == 1
