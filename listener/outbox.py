"""The outbox queries the leader runs on its one connection: read a batch, delete it.

Every statement is a single autocommit statement: no transaction is ever open
across a Redis call, so the listening backend keeps consuming the NOTIFY queue.
Knows asyncpg, not redis. Rows leave the outbox only after they were published,
so a row committed out of id order is simply picked up by a later batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

# Each row comes with its channel's watermark (sql/004_watermark.sql), unless that is
# older than the history TTL ($2 seconds): Redis expired such a history on its own.
_BATCH = """
SELECT o.id, o.channel, o.data::text AS data, w.epoch, w.top
FROM (SELECT id, channel, data FROM pgcast.outbox ORDER BY id LIMIT $1) AS o
LEFT JOIN pgcast.watermark AS w
       ON w.channel = o.channel AND w.updated_at > now() - make_interval(secs => $2)
ORDER BY o.id
"""
FETCH_SQL = _BATCH
# The watermarks of the published rows' channels, written where the rows are deleted.
_MARK = """
INSERT INTO pgcast.watermark AS w (channel, epoch, top, updated_at)
SELECT m.channel, m.epoch, m.top, now()
FROM unnest($3::text[], $4::text[], $5::bigint[]) AS m(channel, epoch, top)
ON CONFLICT (channel) DO UPDATE
SET epoch = excluded.epoch, top = excluded.top, updated_at = excluded.updated_at
"""
# Delete the published batch, record its watermarks and read the next batch in one
# statement. All parts see the statement's snapshot, in which the deleted rows still exist
# (the caller reads that many more rows and drops them: a filter in SQL would steer the
# planner away from the primary key's order) and the watermarks are the old ones (the
# caller's own marks of its last publish take precedence).
# S608: composed of this module's constant texts only; every value is a $n parameter.
FETCH_AFTER_DELETE_SQL = (
    "WITH published AS (DELETE FROM pgcast.outbox WHERE id = ANY($6::bigint[])),\n"  # noqa: S608
    "marked AS (" + _MARK + ")" + _BATCH
)
DELETE_SQL = (
    "WITH published AS (DELETE FROM pgcast.outbox WHERE id = ANY($1::bigint[]))"  # noqa: S608
    + _MARK.replace("$3", "$2").replace("$4", "$3").replace("$5", "$4")
)
REDIS_IDENTITY_SQL = "SELECT redis_identity FROM pgcast.leader"
RECORD_REDIS_IDENTITY_SQL = "UPDATE pgcast.leader SET redis_identity = $1"
MAX_ID_SQL = "SELECT coalesce(max(id), 0) FROM pgcast.outbox"
# The current watermarks of some channels (WAL capture: events come without them).
WATERMARKS_SQL = """
SELECT channel, epoch, top FROM pgcast.watermark
WHERE channel = ANY($1::text[]) AND updated_at > now() - make_interval(secs => $2)
"""
# Watermarks past the history TTL check nothing any more (see _BATCH).
PRUNE_SQL = "DELETE FROM pgcast.watermark WHERE updated_at < now() - make_interval(secs => $1)"

# The liveness query also samples what /metrics reports; the oldest row by id is
# (nearly always) the oldest by time, and the primary key finds it without a scan.
HEALTH_SQL = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - (
           SELECT created_at FROM pgcast.outbox ORDER BY id LIMIT 1)), 0)::float8 AS lag,
       pg_notification_queue_usage()::float8 AS queue_usage
"""
EPOCH_SQL = """
INSERT INTO pgcast.leader AS l (singleton, epoch, holder, acquired_at) VALUES (true, 1, $1, now())
ON CONFLICT (singleton) DO UPDATE
SET epoch = l.epoch + 1, holder = excluded.holder, acquired_at = excluded.acquired_at
RETURNING epoch
"""
SCHEMA_SQL = """
SELECT to_regclass('pgcast.outbox') IS NOT NULL AND to_regclass('pgcast.leader') IS NOT NULL
       AND to_regprocedure('pgcast.listener_sleep()') IS NOT NULL
       AND to_regclass('pgcast.watermark') IS NOT NULL
       AND to_regprocedure('pgcast.set_capture(text)') IS NOT NULL
"""
# SKIP_LOCKED: never wait behind an autovacuum of the same table (it does the same job).
VACUUM_SQL = "VACUUM (SKIP_LOCKED) pgcast.outbox"
# The wake-up protocol's listener side (sql/001_outbox.sql): try-locks, never a wait.
SLEEP_SQL = "SELECT pgcast.listener_sleep()"
WAKE_SQL = "SELECT pgcast.listener_wake()"


class OutboxRow(NamedTuple):
    """One row as FETCH_SQL selects it (built per event: a tuple, made from the record).
    An event decoded from the WAL travels as one too, its id the de-duplication id
    ``"<commit lsn>.<n>"`` (listener/batches.py)."""

    id: int | str
    channel: str
    data: str  # jsonb as text: spliced into the frame without re-encoding
    mark_epoch: str | None = None  # the channel's watermark, when one is current
    mark_top: int | None = None


class Published(NamedTuple):
    """A published batch, to delete: its outbox ids, and per channel Redis' state after it."""

    ids: list[int]
    marks: dict[str, tuple[str, int]]

    def args(self) -> tuple[list[int], list[str], list[str], list[int]]:
        return (
            self.ids,
            list(self.marks),
            [epoch for epoch, _ in self.marks.values()],
            [top for _, top in self.marks.values()],
        )


NOTHING_PUBLISHED = Published([], {})


@dataclass(frozen=True, slots=True)
class Health:
    lag: float
    queue_usage: float


async def fetch_batch(
    conn: asyncpg.Connection,
    limit: int,
    query_timeout: float,
    published: Published = NOTHING_PUBLISHED,
    mark_ttl: float = 86400.0,
) -> list[OutboxRow]:
    """The ``limit`` oldest rows by id, after deleting the ``published`` ones."""
    if not published.ids:
        rows = await conn.fetch(FETCH_SQL, limit, mark_ttl, timeout=query_timeout)
        return list(map(OutboxRow._make, rows))  # a record iterates its columns in order
    gone = set(published.ids)
    ids, channels, epochs, tops = published.args()
    rows = await conn.fetch(
        FETCH_AFTER_DELETE_SQL,
        limit + len(gone),
        mark_ttl,
        channels,
        epochs,
        tops,
        ids,
        timeout=query_timeout,
    )
    kept = [OutboxRow._make(r) for r in rows if r[0] not in gone]
    return kept[:limit]


async def delete(conn: asyncpg.Connection, published: Published, query_timeout: float) -> None:
    if published.ids:
        await conn.execute(DELETE_SQL, *published.args(), timeout=query_timeout)


async def health(conn: asyncpg.Connection, query_timeout: float) -> Health:
    """Liveness query: proves the connection answers, and samples lag and queue usage."""
    row = await conn.fetchrow(HEALTH_SQL, timeout=query_timeout)
    return Health(float(row["lag"]), float(row["queue_usage"]))


async def next_epoch(conn: asyncpg.Connection, holder: str, query_timeout: float) -> int:
    """Take a new leader epoch (call only while holding the leader lock)."""
    epoch: int = await conn.fetchval(EPOCH_SQL, holder, timeout=query_timeout)
    return epoch


async def schema_ready(conn: asyncpg.Connection, query_timeout: float) -> bool:
    """Whether pgcast-migrate has created the tables the listener needs."""
    return bool(await conn.fetchval(SCHEMA_SQL, timeout=query_timeout))


class Outbox:
    """The leader connection's outbox operations, one at a time (asyncpg allows no overlap)."""

    def __init__(
        self, conn: asyncpg.Connection, query_timeout: float, mark_ttl: float = 86400.0
    ) -> None:
        self.conn = conn
        self.query_timeout = query_timeout
        self.mark_ttl = mark_ttl
        self._lock = asyncio.Lock()

    async def fetch_batch(
        self, limit: int, published: Published = NOTHING_PUBLISHED
    ) -> list[OutboxRow]:
        async with self._lock:
            return await fetch_batch(self.conn, limit, self.query_timeout, published, self.mark_ttl)

    async def delete(self, published: Published) -> None:
        async with self._lock:
            await delete(self.conn, published, self.query_timeout)

    async def record(self, published: Published) -> None:
        """Delete the published rows (if any) and record the watermarks (WAL capture: the
        events came from the WAL, some rows from the outbox)."""
        if published.ids or published.marks:
            async with self._lock:
                await self.conn.execute(DELETE_SQL, *published.args(), timeout=self.query_timeout)

    async def redis_identity(self) -> str | None:
        """The Redis identity the last leader recorded (sql/004_watermark.sql)."""
        async with self._lock:
            value: str | None = await self.conn.fetchval(
                REDIS_IDENTITY_SQL, timeout=self.query_timeout
            )
            return value

    async def record_redis_identity(self, identity: str) -> None:
        async with self._lock:
            await self.conn.execute(RECORD_REDIS_IDENTITY_SQL, identity, timeout=self.query_timeout)

    async def max_id(self) -> int:
        """The newest outbox id now (0 when empty)."""
        async with self._lock:
            value: int = await self.conn.fetchval(MAX_ID_SQL, timeout=self.query_timeout)
            return value

    async def watermarks(self, channels: list[str]) -> dict[str, tuple[str, int]]:
        """The current watermarks of ``channels`` (those that have one)."""
        async with self._lock:
            rows = await self.conn.fetch(
                WATERMARKS_SQL, channels, self.mark_ttl, timeout=self.query_timeout
            )
        return {r["channel"]: (r["epoch"], r["top"]) for r in rows}

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Another statement on the leader's connection, in turn with the others."""
        async with self._lock:
            rows: list[asyncpg.Record] = await self.conn.fetch(
                sql, *args, timeout=self.query_timeout
            )
            return rows

    async def prune_watermarks(self) -> None:
        """Forget watermarks past the history TTL (they check nothing any more)."""
        async with self._lock:
            await self.conn.execute(PRUNE_SQL, self.mark_ttl, timeout=self.query_timeout)

    async def health(self) -> Health:
        async with self._lock:
            return await health(self.conn, self.query_timeout)

    async def vacuum(self) -> None:
        """Reclaim deleted rows and their index entries (a few ms per 20,000 rows)."""
        async with self._lock:
            await self.conn.execute(VACUUM_SQL, timeout=self.query_timeout)

    async def sleep(self) -> bool:
        """Take the wake lock (writers NOTIFY from now on); False while a skipping writer runs."""
        async with self._lock:
            return bool(await self.conn.fetchval(SLEEP_SQL, timeout=self.query_timeout))

    async def wake(self) -> None:
        """Release the wake lock: writers skip the NOTIFY, so the caller must poll."""
        async with self._lock:
            await self.conn.fetchval(WAKE_SQL, timeout=self.query_timeout)
