"""PGCAST_CAPTURE=wal end to end, what it delivers: a real listener decodes the WAL of a
real Postgres (wal_level=logical) into Redis. The trigger path's events, row for row;
publish() as a logical message (no outbox row, never after a rollback, any size); a big
transaction in batches, once; controls and outbox rows in commit order. The slot's life:
test_listener_wal_slot.py."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import orjson
import redis.asyncio as aioredis

from pgcast.keys import Layout
from tests.integration.listener_support import (
    Listeners,
    capturing,
    history,
    history_length,
    wait_until,
    wal_env,
    wal_listeners,
)

SINGLE = Layout()


async def _histories(redis: aioredis.Redis, *channels: str) -> dict[str, list[object]]:
    return {c: [data for _, data in await history(redis, c)] for c in channels}


async def test_watched_table_changes_arrive_as_the_trigger_would_make_them(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """INSERT/UPDATE/DELETE of a watched table: the same events on the same channels as the
    trigger path (the old channel when a template's value changed), and no trigger fired."""
    await pg.execute("""
        CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text);
        ALTER TABLE orders REPLICA IDENTITY FULL;
        SELECT pgcast.watch('orders', ARRAY['orders', 'user:{customer}']);
    """)
    wal_listeners.start()
    await capturing(pg, wal_env)
    await pg.execute("""
        INSERT INTO orders VALUES (10, 42, 'new'), (11, NULL, 'new');
        UPDATE orders SET status = 'paid' WHERE id = 10;
        UPDATE orders SET customer = 43 WHERE id = 10;
        DELETE FROM orders WHERE id = 10;
        DELETE FROM orders WHERE id = 11;
    """)
    insert = {"table": "orders", "op": "INSERT", "id": 10}
    paid = {"table": "orders", "op": "UPDATE", "id": 10, "changed": ["status"]}
    moved = {"table": "orders", "op": "UPDATE", "id": 10, "changed": ["customer"]}

    async def delivered() -> bool:
        return await history_length(redis_client, "orders") == 6

    await wait_until(delivered, "six events on orders")
    got = await _histories(redis_client, "orders", "user:42", "user:43")
    assert got == {
        "orders": [
            insert,
            {"table": "orders", "op": "INSERT", "id": 11},
            paid,
            moved,
            {"table": "orders", "op": "DELETE", "id": 10},
            {"table": "orders", "op": "DELETE", "id": 11},
        ],
        "user:42": [insert, paid, moved],  # NULL customer: no user channel; moved: the old one
        "user:43": [moved, {"table": "orders", "op": "DELETE", "id": 10}],
    }
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0  # no trigger fired


async def test_publish_is_a_logical_message_committed_once_rolled_back_never_any_size(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    wal_listeners.start()
    await capturing(pg, wal_env)
    await pg.execute("""SELECT pgcast.publish('news', '{"n": 1}')""")
    async with contextlib.AsyncExitStack() as stack:
        tx = pg.transaction()
        await tx.start()
        stack.push_async_callback(tx.rollback)
        await pg.execute("""SELECT pgcast.publish('news', '{"n": "rolled back"}')""")
    big = {"n": 3, "blob": "é" * 500_000}  # 1 MB of UTF-8
    returned = await pg.fetchval(
        "SELECT pgcast.publish('news', $1::jsonb)", orjson.dumps(big).decode()
    )
    assert returned is None  # no outbox row, no id
    await wait_until(
        lambda: redis_client.xlen(SINGLE.channel_keys("news").history), "the first event"
    )

    async def both() -> bool:
        return await history_length(redis_client, "news") == 2

    await wait_until(both, "the 1 MB event")
    assert await history(redis_client, "news") == [(1, {"n": 1}), (2, big)]
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def test_a_big_transaction_goes_out_in_batches_once_in_order(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """3,000 events of one transaction, 100 per batch: not held whole in memory; after a
    SIGKILL mid-way the successor decodes the transaction again and publishes only the
    rest (the ids are its commit LSN and the event's place in it)."""
    env = {"PGCAST_BATCH_SIZE": "100", "PGCAST_HISTORY_SIZE": "5000"}
    first = wal_listeners.start(**env)
    wal_listeners.start(**env)
    await capturing(pg, wal_env)
    await pg.execute("SELECT pgcast.publish('big', to_jsonb(n)) FROM generate_series(1, 3000) n")

    async def some() -> bool:
        return await history_length(redis_client, "big") >= 100

    await wait_until(some, "the first batches")
    first.service.kill9()

    async def all_there() -> bool:
        return await history_length(redis_client, "big") >= 3000

    await wait_until(all_there, "3,000 events", 30)
    await asyncio.sleep(0.3)  # a late duplicate would show here
    assert [data for _, data in await history(redis_client, "big")] == list(range(1, 3001))


async def test_outbox_rows_are_decoded_in_commit_order_and_deleted(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """Rows that still reach pgcast.outbox (a hand-made notify_trigger, a control) come
    through the WAL in their transaction's place; the leader deletes them afterwards."""
    wal_listeners.start()
    await capturing(pg, wal_env)
    await pg.execute("""
        CREATE TABLE legacy (id int PRIMARY KEY);
        CREATE TRIGGER pgcast AFTER INSERT ON legacy FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('mixed');
    """)
    async with pg.transaction():
        await pg.execute("""SELECT pgcast.publish('mixed', '{"n": 1}')""")
        await pg.execute("INSERT INTO legacy VALUES (7)")
        await pg.execute("""SELECT pgcast.publish('mixed', '{"n": 3}')""")
        await pg.execute("SELECT pgcast.disconnect('42', 'banned')")

    async def three() -> bool:
        return await history_length(redis_client, "mixed") == 3

    await wait_until(three, "three events on mixed")
    assert [d for _, d in await history(redis_client, "mixed")] == [
        {"n": 1},
        {"table": "legacy", "op": "INSERT", "id": 7},
        {"n": 3},
    ]
    controls = await redis_client.xrange(SINGLE.control_keys()[0])
    assert [orjson.loads(f[b"f"]) for _, f in controls] == [
        {"op": "disconnect", "sub": "42", "reason": "banned"}
    ]
    await wait_until(
        lambda: pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"), "decoded rows deleted"
    )


async def test_events_committed_before_the_switch_are_drained_then_the_wal_takes_over(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """Outbox rows written while no WAL leader ran are published first, once, in order."""
    await pg.execute("SELECT pgcast.publish('later', to_jsonb(n)) FROM generate_series(1, 700) n")
    wal_listeners.start(PGCAST_HISTORY_SIZE="2000")
    await capturing(pg, wal_env)
    await pg.execute("SELECT pgcast.publish('later', to_jsonb(n)) FROM generate_series(701, 900) n")

    async def all_there() -> bool:
        return await history_length(redis_client, "later") == 900

    await wait_until(all_there, "900 events published")
    assert [data for _, data in await history(redis_client, "later")] == list(range(1, 901))


__all__ = ["wal_env", "wal_listeners"]  # fixtures, imported
