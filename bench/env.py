"""The benchmark's private servers and the table every system is fed from.

One private Postgres (durable: fsync, synchronous_commit and full_page_writes
on, as in production) and one private Redis per run, started from the local
binaries through tests/servers.py and destroyed afterwards. The shared servers
on 5432/6379 are never touched. ``bench_event`` is the application table; an
ingest trigger on it feeds whichever system is under test.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

import asyncpg

from tests.servers import PgInstance, RedisInstance

DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
    "max_connections": "300",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_event (
    id bigserial PRIMARY KEY, channel text NOT NULL, body jsonb NOT NULL);
-- The ingest triggers run deferred, at COMMIT (before its WAL flush), and stamp the event's
-- "bts" with the database's clock there: latency at the client is commit -> receive.
CREATE OR REPLACE FUNCTION bench_commit_stamp(body jsonb) RETURNS jsonb LANGUAGE sql AS $$
SELECT jsonb_set(body, '{bts}', to_jsonb(extract(epoch FROM clock_timestamp()))) $$;
-- pgcast: the row's body is the event (pgcast.publish from a user trigger).
CREATE OR REPLACE FUNCTION bench_ingest_pgcast() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pgcast.publish(NEW.channel, bench_commit_stamp(NEW.body)); RETURN NULL; END $$;
-- the peers: the classic per-row pg_notify bridge.
CREATE OR REPLACE FUNCTION bench_ingest_classic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('bench_classic', json_build_object('channel', NEW.channel,
                                                       'data', bench_commit_stamp(NEW.body))::text);
  RETURN NULL;
END $$;
"""

INGEST_FUNCTIONS = {"pgcast": "bench_ingest_pgcast", "classic": "bench_ingest_classic"}


def ingest_trigger_sql(ingest: str) -> str:
    """The ingest trigger on bench_event, deferred to COMMIT (see SCHEMA)."""
    return (
        "CREATE CONSTRAINT TRIGGER bench_ingest AFTER INSERT ON bench_event "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        f"EXECUTE FUNCTION {INGEST_FUNCTIONS[ingest]}()"
    )


def migrate(dsn: str) -> None:
    """pgcast-migrate against ``dsn``, in a process of its own (as operators run it)."""
    subprocess.run(
        [sys.executable, "-c", "import sys; from listener.migrate import main; sys.exit(main())"],
        env={**os.environ, "DATABASE_URL": dsn, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
        timeout=120,
    )


@dataclass
class BenchEnv:
    """Private Postgres + Redis, a token secret, and how to reset them between runs."""

    pg: PgInstance = field(default_factory=lambda: PgInstance(extra_conf=dict(DURABLE)))
    redis: RedisInstance = field(default_factory=RedisInstance)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def dsn(self) -> str:
        return self.pg.dsn

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def start(self) -> BenchEnv:
        self.pg.init()
        self.pg.start()
        self.redis.start()
        migrate(self.dsn)
        return self

    def destroy(self) -> None:
        self.redis.destroy()
        self.pg.destroy()

    async def prepare(self, ingest: str | None) -> None:
        """Empty table, outbox and Redis; point the ingest trigger at ``ingest``."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(SCHEMA)
            await conn.execute("DROP TRIGGER IF EXISTS bench_ingest ON bench_event")
            await conn.execute("TRUNCATE bench_event")
            await conn.execute("DELETE FROM pgcast.outbox")
            # A run with PGCAST_CAPTURE=wal leaves its slot (it would replay its tail into
            # the next run's emptied Redis) and the WAL mode behind: start from neither.
            await conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE NOT active AND database = current_database()"
            )
            await conn.execute("SELECT pgcast.set_capture('outbox')")
            if ingest is not None:
                await conn.execute(ingest_trigger_sql(ingest))
        finally:
            await conn.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            await client.flushall()
        finally:
            await client.aclose()  # type: ignore[attr-defined, unused-ignore]  # old stubs lack aclose
