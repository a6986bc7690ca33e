"""sql/: pgcast.publish(), the wake-up per transaction, poll mode, and pgcast-migrate."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import orjson

from listener.migrate import migrate, migrations
from tests.conftest import with_database
from tests.integration.test_sql_wakeup import Spy


async def test_publish_inserts_an_outbox_row_visible_after_commit_only(
    pg: asyncpg.Connection, database_url: str
) -> None:
    """publish() returns the outbox id; the row is invisible before commit, gone on rollback."""
    other = await asyncpg.connect(database_url)
    try:
        async with pg.transaction():
            new_id = await pg.fetchval("SELECT pgcast.publish('c', '{\"a\": 1}')")
            assert await other.fetchval("SELECT count(*) FROM pgcast.outbox") == 0
        row = await other.fetchrow("SELECT id, channel, data::text FROM pgcast.outbox")
        assert (row["id"], row["channel"], orjson.loads(row["data"])) == (new_id, "c", {"a": 1})
        tx = pg.transaction()
        await tx.start()
        await pg.execute("SELECT pgcast.publish('c', '2')")
        await tx.rollback()
        assert await other.fetchval("SELECT count(*) FROM pgcast.outbox") == 1
    finally:
        await other.close()


async def test_one_wakeup_per_transaction(pg: asyncpg.Connection, database_url: str) -> None:
    """A transaction publishing many events wakes a sleeping listener with ONE empty NOTIFY."""
    listener = await asyncpg.connect(database_url)
    try:
        spy = await Spy(listener).start()
        assert await listener.fetchval("SELECT pgcast.listener_sleep()")
        async with pg.transaction():
            for i in range(50):
                await pg.execute("SELECT pgcast.publish('c', $1::jsonb)", str(i))
        await pg.execute("SELECT pgcast.publish('c', '1')")
        assert await spy.seen(pg) == ["", ""]
    finally:
        await listener.close()


async def test_poll_mode_sends_no_notify(pg: asyncpg.Connection, database_url: str) -> None:
    """With pgcast.notify = off the outbox still fills, but nothing is NOTIFYed."""
    listener = await asyncpg.connect(database_url)
    try:
        spy = await Spy(listener).start()
        await pg.execute("SET pgcast.notify = 'off'")
        await pg.execute("SELECT pgcast.publish('c', '1')")
        assert await spy.seen(pg) == []
        assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 1
    finally:
        await listener.close()


async def test_poll_mode_for_a_whole_database(database_url: str) -> None:
    """ALTER DATABASE ... SET pgcast.notify = 'off' switches new sessions to poll mode."""
    listener = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        spy = await Spy(listener).start()
        dbname = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{dbname}\" SET pgcast.notify = 'off'")
        writer = await asyncpg.connect(database_url)
        await writer.execute("SELECT pgcast.publish('c', '1')")
        await writer.close()
        assert await spy.seen(admin) == []
    finally:
        await listener.close()
        await admin.close()


async def test_event_larger_than_notify_limit_is_stored_whole(pg: asyncpg.Connection) -> None:
    """A 100 KB event goes into the outbox intact (NOTIFY only carries the wake-up)."""
    data = orjson.dumps({"blob": "x" * 100_000})
    await pg.execute("SELECT pgcast.publish('c', $1::jsonb)", data.decode())
    stored = await pg.fetchval("SELECT data::text FROM pgcast.outbox")
    assert orjson.loads(stored) == orjson.loads(data)


async def test_migrate_is_idempotent(database_url: str) -> None:
    """Running migrate on a migrated database applies nothing."""
    assert await migrate(database_url) == []


async def test_migrate_concurrently_from_many_replicas(servers: object, database_url: str) -> None:
    """Eight simultaneous migrations of an empty database apply each file exactly once."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("CREATE DATABASE pgcast_concurrent_migrate")
    finally:
        await admin.close()
    target = with_database(database_url, "pgcast_concurrent_migrate")
    try:
        results = await asyncio.gather(*(migrate(target) for _ in range(8)))
        applied = sorted(name for result in results for name in result)
        assert applied == [m.name for m in migrations()]
        conn = await asyncpg.connect(target)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pgcast.migrations") == len(applied)
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("DROP DATABASE pgcast_concurrent_migrate WITH (FORCE)")
        finally:
            await admin.close()


async def test_changed_migration_is_applied_again(
    pg: asyncpg.Connection, database_url: str
) -> None:
    """A file whose checksum changed is re-applied (every file is idempotent)."""
    await pg.execute(
        "UPDATE pgcast.migrations SET checksum = 'old' WHERE name = $1", "001_outbox.sql"
    )
    assert await migrate(database_url) == ["001_outbox.sql"]


def _run_migrate(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from listener.migrate import main; sys.exit(main())"],
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_cli_bad_dsn_and_unreachable_server() -> None:
    """pgcast-migrate exits non-zero with one line for a bad DSN or an unreachable server."""
    bad = _run_migrate("mysql://localhost/db")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "DATABASE_URL" in bad.stderr
    down = _run_migrate("postgresql://u:hunter2@127.0.0.1:1/db")
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0
    assert "cannot migrate" in down.stderr
    assert "hunter2" not in down.stderr


def test_migrate_cli_succeeds_on_a_migrated_database(database_url: str) -> None:
    """pgcast-migrate exits 0 and says the schema is up to date."""
    result = _run_migrate(database_url)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
