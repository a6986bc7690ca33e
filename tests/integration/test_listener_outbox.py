"""The leader's outbox statements on a real Postgres: read, delete-with-the-next-read, VACUUM."""

from __future__ import annotations

import asyncpg

from listener.outbox import Outbox


async def test_next_read_deletes_the_published_batch_in_the_same_statement(
    pg: asyncpg.Connection,
) -> None:
    """The published ids leave the outbox and are not read again; the rest comes in id order."""
    await pg.execute("SELECT pgcast.publish('c', to_jsonb(n)) FROM generate_series(1, 5) n")
    outbox = Outbox(pg, query_timeout=5)
    first = await outbox.fetch_batch(2)
    assert [row.data for row in first] == ["1", "2"]
    second = await outbox.fetch_batch(2, [row.id for row in first])
    assert [row.data for row in second] == ["3", "4"]
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 3
    rest = await outbox.fetch_batch(10, [row.id for row in second])
    assert [row.data for row in rest] == ["5"]
    await outbox.delete([row.id for row in rest])
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def test_vacuum_runs_outside_a_transaction_and_frees_dead_rows(
    pg: asyncpg.Connection,
) -> None:
    """VACUUM (SKIP_LOCKED) on the leader's autocommit connection reclaims deleted rows."""
    await pg.execute("SELECT pgcast.publish('c', to_jsonb(n)) FROM generate_series(1, 200) n")
    await pg.execute("DELETE FROM pgcast.outbox")
    outbox = Outbox(pg, query_timeout=5)
    await outbox.vacuum()
    dead = await pg.fetchval(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgcast.outbox'::regclass"
    )
    assert dead == 0
