"""The leader's outbox statements on a real Postgres: read, delete-with-the-next-read, VACUUM."""

from __future__ import annotations

import asyncpg

from listener.outbox import Outbox, Published


async def test_next_read_deletes_the_published_batch_in_the_same_statement(
    pg: asyncpg.Connection,
) -> None:
    """The published ids leave the outbox and are not read again; the rest comes in id order."""
    await pg.execute("SELECT pgcast.publish('c', to_jsonb(n)) FROM generate_series(1, 5) n")
    outbox = Outbox(pg, query_timeout=5)
    first = await outbox.fetch_batch(2)
    assert [row.data for row in first] == ["1", "2"]
    second = await outbox.fetch_batch(2, Published([row.id for row in first], {}))
    assert [row.data for row in second] == ["3", "4"]
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 3
    rest = await outbox.fetch_batch(10, Published([row.id for row in second], {}))
    assert [row.data for row in rest] == ["5"]
    await outbox.delete(Published([row.id for row in rest], {}))
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def test_watermarks_are_written_with_the_delete_and_read_with_the_next_batch(
    pg: asyncpg.Connection,
) -> None:
    """The published batch's (epoch, top) per channel lands in pgcast.watermark in the
    statement that deletes it, and later rows of that channel come with it."""
    await pg.execute("SELECT pgcast.publish(c, '1') FROM unnest('{a,b,a,a}'::text[]) c")
    outbox = Outbox(pg, query_timeout=5)
    first = await outbox.fetch_batch(2)
    assert [(row.channel, row.mark_epoch) for row in first] == [("a", None), ("b", None)]
    published = Published([row.id for row in first], {"a": ("e1", 1), "b": ("e2", 1)})
    second = await outbox.fetch_batch(1, published)
    # The statement's snapshot: the rows read with the delete see the old watermark.
    assert [(row.channel, row.mark_epoch) for row in second] == [("a", None)]
    third = await outbox.fetch_batch(1, Published([row.id for row in second], {"a": ("e1", 2)}))
    # ... and one batch later, the committed one (the leader knows its own newer marks).
    assert [(row.channel, row.mark_epoch, row.mark_top) for row in third] == [("a", "e1", 1)]
    await outbox.delete(Published([row.id for row in third], {"a": ("e1", 3)}))
    marks = await pg.fetch("SELECT channel, epoch, top FROM pgcast.watermark ORDER BY channel")
    assert [tuple(m) for m in marks] == [("a", "e1", 3), ("b", "e2", 1)]


async def test_watermarks_past_the_history_ttl_are_not_read_and_are_pruned(
    pg: asyncpg.Connection,
) -> None:
    """A watermark older than the history TTL checks nothing (Redis expired that history)."""
    await pg.execute(
        "INSERT INTO pgcast.watermark VALUES ('old', 'e', 5, now() - interval '2 hours'),"
        " ('new', 'e', 7, now())"
    )
    await pg.execute("SELECT pgcast.publish(c, '1') FROM unnest('{old,new}'::text[]) c")
    outbox = Outbox(pg, query_timeout=5, mark_ttl=3600)
    rows = await outbox.fetch_batch(10)
    assert [(row.channel, row.mark_top) for row in rows] == [("old", None), ("new", 7)]
    await outbox.prune_watermarks()
    assert await pg.fetchval("SELECT array_agg(channel) FROM pgcast.watermark") == ["new"]


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
