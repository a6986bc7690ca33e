"""Postgres restarted (cleanly, then by SIGKILL) under write load: the listener recovers alone.

Writers record each event in a ledger table in the same transaction as
``pgcast.publish()``, so the ledger is the ground truth of what committed (a
write cut by the restart may or may not have). Redis must hold exactly the
ledger: nothing lost, nothing duplicated. (With synchronous_commit=off a crash
forgets commits the listener already published: the ledger then has fewer rows
than Redis. That is asynchronous commit's contract, documented in SECURITY.md.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout, offset_of_stream_id
from tests.servers import PgInstance
from tests.soak.harness import Listener, RedisClient
from tests.waiting import eventually

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

CHANNEL = "restart"


class LedgerWriter:
    """Commits numbered events with a ledger row, reconnecting through restarts."""

    def __init__(self, dsn: str, writer: int) -> None:
        self.dsn = dsn
        self.writer = writer
        self.attempted = 0
        self.failures = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                await self._write_one(conn)
            except Exception:  # the server went away mid-write: reconnect (this is the test)
                self.failures += 1
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.1)  # pacing while the server is down
            await asyncio.sleep(0.01)  # pacing: a bounded write rate
        if conn is not None:
            await conn.close()

    async def _write_one(self, conn: asyncpg.Connection) -> None:
        i = self.attempted
        self.attempted += 1
        data = orjson.dumps({"w": self.writer, "i": i}).decode()
        async with asyncio.timeout(5), conn.transaction():
            await conn.execute("INSERT INTO ledger VALUES ($1, $2)", self.writer, i)
            await conn.execute("SELECT pgcast.publish($1, $2::jsonb)", CHANNEL, data)


async def published(client: RedisClient) -> list[tuple[int, int]]:
    """The (writer, i) of every history entry, after checking offsets run 1, 2, 3 ..."""
    entries = await client.xrange(SINGLE.channel_keys(CHANNEL).history)
    assert [offset_of_stream_id(entry_id) for entry_id, _ in entries] == list(
        range(1, len(entries) + 1)
    )
    events = [orjson.loads(fields[b"f"])["data"] for _, fields in entries]
    return [(event["w"], event["i"]) for event in events]


@pytest.mark.slow
async def test_postgres_restarts_under_write_load_lose_nothing(
    private_pg: Callable[..., PgInstance], redis_url: str
) -> None:
    """Restart and SIGKILL of Postgres while writing: Redis ends up equal to the ledger."""
    # The default, which the test servers turn off for speed: with asynchronous commit a
    # crash forgets transactions that others (the listener) already saw committed.
    pg = private_pg(synchronous_commit="on")
    setup = await asyncpg.connect(pg.dsn)
    await setup.execute("CREATE TABLE ledger (w int, i int, PRIMARY KEY (w, i))")
    await setup.close()
    client: RedisClient = aioredis.Redis.from_url(redis_url)
    listener = Listener(pg.dsn, redis_url).start()
    writers = [LedgerWriter(pg.dsn, w) for w in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in writers]
    try:
        await eventually(lambda: _published_at_least(client, 50), 20, "events flow")
        await asyncio.to_thread(pg.restart)
        await eventually(lambda: _published_at_least(client, 150), 30, "flow after restart")
        await asyncio.to_thread(pg.kill9)
        await asyncio.to_thread(pg.start)
        await eventually(lambda: _published_at_least(client, 250), 30, "flow after SIGKILL")
    finally:
        for w in writers:
            w.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    try:
        check = await asyncpg.connect(pg.dsn)
        ledger = sorted(tuple(r) for r in await check.fetch("SELECT w, i FROM ledger"))
        await check.close()
        await eventually(lambda: _published_at_least(client, len(ledger)), 20, "all published")
        events = await published(client)
        assert len(events) == len(set(events)), "an event was published twice"
        assert sorted(events) == ledger
        assert sum(w.failures for w in writers) > 0, "the restarts did interrupt the writers"
        assert "Traceback" not in listener.log()
    finally:
        listener.stop()
        await client.aclose()


async def _published_at_least(client: RedisClient, n: int) -> bool:
    return int(await client.xlen(SINGLE.channel_keys(CHANNEL).history)) >= n
