"""sql/: the wake-up protocol's races, with real connections standing in for listener and writers.

The "listener" here is a plain connection calling pgcast.listener_sleep()/listener_wake()
as the real one does. A marker NOTIFY (on a channel of its own) sent after a writer
committed proves that every notification of that writer was delivered before it (one
queue, delivered in commit order), so "no NOTIFY" is asserted without waiting out a window.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.listener_support import wait_until

WAKE_LOCK_SQL = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock'
  AND classid = 1885824887 AND objid = 1 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
MARKER_CHANNEL = "pgcast_test_marker"  # not the wake-up channel: a listener never sees it
_markers = itertools.count()


class Spy:
    """A LISTEN connection on the wake-up channel (the role of the listener's LISTEN)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> Spy:
        for channel in ("pgcast", MARKER_CHANNEL):
            await self.conn.add_listener(channel, lambda *args: self.queue.put_nowait(args[3]))
        return self

    async def seen(self, sender: asyncpg.Connection) -> list[str]:
        """Payloads of every wake-up committed before this call (``sender`` must be idle)."""
        marker = f"marker-{next(_markers)}"
        await sender.execute(f"NOTIFY {MARKER_CHANNEL}, '{marker}'")
        got = []
        async with asyncio.timeout(10):
            while (payload := await self.queue.get()) != marker:
                got.append(payload)
        return got


@pytest.fixture
async def conns(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Four connections: listener, spy, and two writers."""
    made = [await asyncpg.connect(database_url) for _ in range(4)]
    yield made
    for conn in made:
        await conn.close()


async def _sleep(listener: asyncpg.Connection) -> bool:
    async with asyncio.timeout(5):  # a try-lock: it must answer at once, whatever writers do
        return bool(await listener.fetchval("SELECT pgcast.listener_sleep()"))


async def _outbox(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM pgcast.outbox"))


async def test_awake_writer_skips_notify_and_holds_off_sleep_until_it_commits(
    conns: list[asyncpg.Connection],
) -> None:
    """A writer that saw the listener awake sends no NOTIFY; the listener cannot sleep before
    that writer commits, and once asleep its final drain sees the row."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    tx = writer.transaction()
    await tx.start()
    await writer.execute("SELECT pgcast.publish('c', '1')")
    assert not await _sleep(listener)
    assert not await _sleep(listener)  # refused as long as the writer is in flight
    await tx.commit()
    assert await _sleep(listener)
    assert await _outbox(listener) == 1  # the drain after falling asleep finds the row
    assert await spy.seen(writer) == []
    assert await listener.fetch(WAKE_LOCK_SQL) == [(listener.get_server_pid(),)]


async def test_writer_wakes_a_sleeping_listener(conns: list[asyncpg.Connection]) -> None:
    """While the listener sleeps, each publishing transaction NOTIFYs once."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    assert await _sleep(listener)
    async with writer.transaction():
        for i in range(20):
            await writer.execute("SELECT pgcast.publish('c', $1::jsonb)", str(i))
    await writer.execute("SELECT pgcast.publish('c', '1')")
    assert await spy.seen(writer) == ["", ""]


async def test_notifying_writer_does_not_hold_off_the_listener(
    conns: list[asyncpg.Connection],
) -> None:
    """A writer that found the listener asleep NOTIFYs at commit even if the listener woke
    meanwhile, and holds nothing that stops the listener from sleeping again."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    assert await _sleep(listener)
    tx = writer.transaction()
    await tx.start()
    await writer.execute("SELECT pgcast.publish('c', '1')")
    assert await listener.fetchval("SELECT pgcast.listener_wake()")
    assert await _sleep(listener)  # the notifying writer, still open, holds no lock
    await tx.commit()
    assert await spy.seen(writer) == [""]


async def test_long_write_transaction_never_blocks_the_listener(
    conns: list[asyncpg.Connection],
) -> None:
    """An open transaction that skipped the NOTIFY only keeps the listener awake: every
    listener statement answers at once, and other writers' rows are seen meanwhile."""
    listener, spy_conn, slow, fast = conns
    spy = await Spy(spy_conn).start()
    tx = slow.transaction()
    await tx.start()
    await slow.execute("SELECT pgcast.publish('slow', '1')")
    for i in range(3):
        await fast.execute("SELECT pgcast.publish('fast', $1::jsonb)", str(i))
        assert not await _sleep(listener)
        async with asyncio.timeout(5):
            deleted = await listener.execute("DELETE FROM pgcast.outbox WHERE channel = 'fast'")
        assert deleted == "DELETE 1"
    await tx.rollback()
    assert await _sleep(listener)
    assert await _outbox(listener) == 0
    assert await spy.seen(fast) == []


async def test_rolled_back_savepoint_releases_the_writer_hold(
    conns: list[asyncpg.Connection],
) -> None:
    """The writer's hold belongs to the (sub)transaction that wrote the row: rolled back
    together, so the listener may sleep, and a later publish in that transaction NOTIFYs."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    await writer.execute("BEGIN")
    await writer.execute("SAVEPOINT s")
    await writer.execute("SELECT pgcast.publish('c', '1')")
    assert not await _sleep(listener)
    await writer.execute("ROLLBACK TO SAVEPOINT s")
    assert await _sleep(listener)
    await writer.execute("SELECT pgcast.publish('c', '2')")
    await writer.execute("COMMIT")
    assert await spy.seen(writer) == [""]
    assert await _outbox(listener) == 1


async def test_no_listener_means_no_notify(conns: list[asyncpg.Connection]) -> None:
    """A listener that dies asleep takes its lock along: writers skip the NOTIFY (the next
    leader starts awake and catches up), and nothing stays held."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    assert await _sleep(listener)
    await writer.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())

    async def lock_gone() -> bool:
        return len(await writer.fetch(WAKE_LOCK_SQL)) == 0

    await wait_until(lock_gone, "the dead listener's wake lock released")
    await writer.execute("SELECT pgcast.publish('c', '1')")
    assert await spy.seen(writer) == []


@pytest.mark.parametrize(
    "call",
    [
        "SELECT pgcast.publish('c', '1')",
        "SELECT pgcast.wake_listener()",  # for SQL callers: wake_needed(), acted on
        "DO $$ BEGIN IF pgcast.wake_needed() THEN PERFORM pg_notify('pgcast', ''); END IF; END $$",
    ],
    ids=["publish", "wake_listener", "wake_needed"],
)
@pytest.mark.parametrize(
    ("mode", "asleep", "notifies"),
    [
        ("on", False, 1),  # always NOTIFY, even to an awake listener
        ("off", True, 0),  # never, even to a sleeping one (poll mode)
        ("false", True, 0),
        ("0", True, 0),
        ("sometimes", False, 1),  # an unknown value takes the safe side
        ("auto", True, 1),
        ("auto", False, 0),
        ("", True, 1),  # empty: the default, auto
        ("", False, 0),
    ],
)
async def test_session_modes(
    conns: list[asyncpg.Connection], mode: str, asleep: bool, notifies: int, call: str
) -> None:
    """pgcast.notify = on | off | auto (the default) decides per session."""
    listener, spy_conn, writer, _ = conns
    spy = await Spy(spy_conn).start()
    if asleep:
        assert await _sleep(listener)
    await writer.execute(f"SET pgcast.notify = '{mode}'")
    await writer.execute(call)
    assert await spy.seen(writer) == [""] * notifies


async def test_trigger_burst_from_concurrent_writers_sends_no_notify(
    conns: list[asyncpg.Connection], database_url: str
) -> None:
    """Concurrent bulk and one-row trigger writes while the listener is awake: no NOTIFY at
    all, no sleep until the last one commits, then every row is there."""
    listener, spy_conn, setup, _ = conns
    spy = await Spy(spy_conn).start()
    await setup.execute("""
        CREATE TABLE items (id bigint PRIMARY KEY, owner int);
        CREATE TRIGGER pgcast AFTER INSERT ON items FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('items', 'user:{owner}');
    """)
    writers = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        txs = [w.transaction() for w in writers]
        for tx in txs:
            await tx.start()
        await writers[0].execute("INSERT INTO items SELECT n, n % 7 FROM generate_series(1, 200) n")
        for w, writer in enumerate(writers[1:], start=1):
            for i in range(10):
                await writer.execute("INSERT INTO items VALUES ($1, 1)", 1000 * w + i)
        for tx in txs:
            assert not await _sleep(listener)
            await tx.commit()
        assert await _sleep(listener)
        assert await _outbox(listener) == 2 * (200 + 30)
        assert await spy.seen(setup) == []
    finally:
        for writer in writers:
            await writer.close()
