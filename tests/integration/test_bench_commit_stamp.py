"""The benchmark's latency clock starts at COMMIT: bench/env.py's ingest triggers, on real
Postgres. A transaction that stays open after its INSERT publishes an event stamped when it
commits, not when it inserted, for pgcast and for the peers' classic NOTIFY alike."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson

from bench.env import SCHEMA, ingest_trigger_sql

HELD = 0.3  # seconds between the INSERT and the COMMIT


async def _ingest(conn: asyncpg.Connection, ingest: str) -> None:
    await conn.execute(SCHEMA)
    await conn.execute(ingest_trigger_sql(ingest))


async def _insert_and_hold(conn: asyncpg.Connection) -> tuple[float, float]:
    """(the writer's clock before its INSERT, just before its COMMIT)."""
    async with conn.transaction():
        inserted = time.time()
        body = orjson.dumps({"bseq": 1, "bts": inserted, "pad": "x"}).decode()
        await conn.execute("INSERT INTO bench_event (channel, body) VALUES ('c', $1::jsonb)", body)
        await asyncio.sleep(HELD)
        committing = time.time()
    return inserted, committing


async def test_pgcast_events_are_stamped_at_commit(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _ingest(conn, "pgcast")
        inserted, committing = await _insert_and_hold(conn)
        data = orjson.loads(await conn.fetchval("SELECT data::text FROM pgcast.outbox"))
    finally:
        await conn.close()
    assert data["bseq"] == 1
    assert data["bts"] >= committing - 0.05  # the database's clock at COMMIT
    assert data["bts"] - inserted >= HELD - 0.05


async def test_classic_notify_payloads_are_stamped_at_commit(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    listener = await asyncpg.connect(database_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("bench_classic", lambda *args: got.put_nowait(args[3]))
        await _ingest(conn, "classic")
        inserted, committing = await _insert_and_hold(conn)
        async with asyncio.timeout(10):
            payload = orjson.loads(await got.get())
    finally:
        await listener.close()
        await conn.close()
    assert payload["channel"] == "c"
    assert payload["data"]["bts"] >= committing - 0.05
    assert payload["data"]["bts"] - inserted >= HELD - 0.05
