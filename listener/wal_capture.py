"""The leader's capture from the WAL (PGCAST_CAPTURE=wal): committed changes -> Redis.

``WalCapture.run()`` claims the Redis fence and adopts Redis as the drain does, switches
Postgres to WAL capture (``pgcast.set_capture('wal')``: the watched tables' triggers off,
the tables in the publication), claims the slot (listener/wal_slot.py; a slot Postgres
invalidated is replaced and every channel starts a new epoch, listener/channel_reset.py),
drains what the outbox still holds, then streams.

Transactions arrive whole, in commit order (pgoutput v1), each once it committed. Events
are published in batches of whatever has arrived (a big transaction in several): event n
of the transaction whose commit record is at LSN L (its Begin says L) is de-duplicated by
the id ``"L.n"``, so when a successor decodes it again (the slot
replays from its confirmed position) Redis publishes nothing twice, at the same offsets.
Every PGCAST_WAL_CONFIRM_INTERVAL the leader writes the published channels' watermarks
(for a successor that finds Redis gone back in time) and deletes the outbox rows it
decoded, then confirms the end of the last published commit: only then may Postgres
recycle that WAL. Nothing is acknowledged that Redis does not hold.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field

import asyncpg

from listener import pgconn, pgoutput
from listener.channel_reset import reset_all
from listener.config import ListenerSettings
from listener.metrics import ListenerMetrics
from listener.outbox import Outbox, OutboxRow, Published
from listener.publisher import Publisher
from listener.relay import Drainer
from listener.replication import ReplicationStream
from listener.replication_wire import ReplicationError, XLogData, format_lsn
from listener.wal_events import WATCHED_SQL, EventBuilder, Invalid, load_watches
from listener.wal_slot import PUBLICATIONS, claim_slot
from pgcast.backoff import Backoff
from pgcast.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

BEGIN, COMMIT = ord("B"), ord("C")
_LSN = struct.Struct("!Q")
_COMMIT = struct.Struct("!BQQq")  # flags, commit lsn, end lsn, commit time
PG_EPOCH_UNIX = 946_684_800  # Postgres' timestamps count from 2000-01-01
WATCH_PREFIX = "pgcast.watch"  # a logical message: pgcast.watched changed (sql/006_capture.sql)
_PRESENT_SQL = "SELECT id FROM pgcast.outbox WHERE id = ANY($1::bigint[])"
_SLOT_STATUS_SQL = """
SELECT wal_status, active_pid FROM pg_replication_slots
WHERE slot_name = $1 AND database = current_database()
"""
_OLDER_WRITERS_SQL = """
SELECT 1 FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < $1
  AND backend_type = 'client backend' LIMIT 1
"""
# Whole transactions up to $2, about $3 changes at a time (peek: the slot moves only with
# the advance, after Redis has them).
_PEEK_SQL = """
SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3,
    'proto_version', '1', 'publication_names', 'pgcast,pgcast_outbox', 'messages', 'true')
"""
_ADVANCE_SQL = "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)"
PEEK_CHUNK = 5000
_LAG_SQL = """
SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::float8
FROM pg_replication_slots WHERE slot_name = $1
"""


@dataclass
class _Unconfirmed:
    """Published but not yet confirmed to Postgres."""

    lsn: int = 0  # the end of the last published commit
    committed_at: float = 0.0  # its commit time (Unix seconds), for the lag metric
    outbox_ids: list[int] = field(default_factory=list)
    marks: dict[str, tuple[str, int]] = field(default_factory=dict)


class WalCapture:
    """Streams one leadership's changes from the slot to Redis (see the module docstring)."""

    def __init__(
        self,
        epoch: int,
        outbox: Outbox,
        drainer: Drainer,
        publisher: Publisher,
        settings: ListenerSettings,
        metrics: ListenerMetrics,
    ) -> None:
        self.epoch = epoch
        self.outbox = outbox
        self.drainer = drainer
        self.publisher = publisher  # the plain one: resets go through it
        self.settings = settings
        self.metrics = metrics
        self.builder = EventBuilder({})
        self.stream: ReplicationStream | None = None
        # Inside a transaction: its commit LSN (Begin says it) and how many events so far.
        self.txn_lsn: int | None = None
        self.txn_events = 0
        self.ready: list[OutboxRow] = []  # decoded, not yet published (in commit order)
        self.ready_lsn = 0
        self.ready_at = 0.0
        self.ready_outbox_ids: list[int] = []
        self.unconfirmed = _Unconfirmed()
        self.confirmed = 0

    async def run(self) -> None:
        settings, timeout = self.settings, self.settings.query_timeout
        await self.drainer.start()
        # The slot first: publish() writes messages from the switch on, the slot must hold
        # them. On a connection of its own: making a slot waits for every transaction in
        # progress, and the leader's connection must keep answering the liveness query.
        helper = await pgconn.connect(settings)
        try:
            slot = await claim_slot(helper, settings.wal_slot, timeout)
        finally:
            await pgconn.close(helper)
        await self.outbox.fetch("SELECT pgcast.set_capture('wal')")
        if slot.invalidated:
            count = await reset_all(self.publisher, self.epoch)
            self.metrics.wal_resets.inc()
            log.warning("%d channels start new epochs after the slot was invalidated", count)
        await self.drainer.drain()  # rows committed before the switch (or left by a leader)
        await self.drainer.delete_published()
        await self._load_watches()
        backoff = Backoff(base=0.05, cap=settings.backoff_max)
        while True:
            try:
                self.stream = await ReplicationStream.start(
                    settings.database_url,
                    settings.wal_slot,
                    PUBLICATIONS,
                    connect_timeout=settings.connect_timeout,
                    conninfo=pgconn.libpq_keepalives(settings),
                )
            except ReplicationError as exc:
                if exc.kind != "connection":
                    raise
                raise_if_cancelled()
                delay = backoff.next()
                log.warning("replication stream: %s; retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._confirm_loop(), name="wal-confirm")
                    await self._stream_loop()
            except* ReplicationError as group:
                lost = group.exceptions[0]
                if not isinstance(lost, ReplicationError) or lost.kind != "connection":
                    raise
                log.warning("replication stream lost: %s; reconnecting", lost)
            finally:
                await self.stream.close()
                self.stream = None
            # Whatever was received but not published is decoded again from the slot.
            self.txn_lsn, self.ready, self.ready_outbox_ids = None, [], []
            backoff.reset()

    # -- back to the outbox ------------------------------------------------------------
    async def hand_back(self) -> None:
        """PGCAST_CAPTURE=outbox and a slot a WAL leader left: publish what it holds up to
        the switch, in commit order, then drop it (a forgotten slot keeps every WAL segment
        from then on). The caller has claimed the fence and called set_capture('outbox')."""
        settings = self.settings
        rows = await self.outbox.fetch(_SLOT_STATUS_SQL, settings.wal_slot)
        if not rows:
            return
        deadline = time.monotonic() + self.settings.query_timeout
        while rows[0]["active_pid"] is not None:  # a deposed WAL leader's walsender
            await self.outbox.fetch("SELECT pg_terminate_backend($1)", rows[0]["active_pid"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"replication slot {settings.wal_slot} stays in use")
            await asyncio.sleep(0.05)
            rows = await self.outbox.fetch(_SLOT_STATUS_SQL, settings.wal_slot)
            if not rows:
                return
        log.info("a WAL capture's slot %s remains: publishing what it holds", settings.wal_slot)
        if rows[0]["wal_status"] == "lost":
            count = await reset_all(self.publisher, self.epoch)
            self.metrics.wal_resets.inc()
            log.warning("slot %s was invalidated: %d channels reset", settings.wal_slot, count)
        else:
            await self._wait_for_writers_before(await self.outbox.fetch("SELECT now()"))
            end = (await self.outbox.fetch("SELECT pg_current_wal_lsn()::text"))[0][0]
            await self._load_watches()
            while await self._peek(end):
                pass
        await self.outbox.fetch("SELECT pg_drop_replication_slot($1)", settings.wal_slot)
        log.info("dropped the replication slot %s (capture: outbox)", settings.wal_slot)

    async def _wait_for_writers_before(self, now: list[asyncpg.Record]) -> None:
        """Transactions that began before the switch may still publish as logical messages:
        wait (bounded) until they ended, so the slot holds all of them."""
        deadline = time.monotonic() + self.settings.query_timeout
        while await self.outbox.fetch(_OLDER_WRITERS_SQL, now[0][0]):
            if time.monotonic() > deadline:
                log.warning("transactions older than the switch to outbox still run: going on")
                return
            await asyncio.sleep(0.05)

    async def _peek(self, end: str) -> bool:
        """Publish one chunk of the slot's changes up to ``end``; False when none is left."""
        rows = await self.outbox.fetch(_PEEK_SQL, self.settings.wal_slot, end, PEEK_CHUNK)
        if not rows:
            return False
        for row in rows:
            await self._take(bytes(row["data"]))
        await self._publish()
        pending, self.unconfirmed = self.unconfirmed, _Unconfirmed()
        await self.outbox.record(Published(pending.outbox_ids, pending.marks))
        await self.outbox.fetch(_ADVANCE_SQL, self.settings.wal_slot, format_lsn(pending.lsn))
        return True

    async def _load_watches(self) -> None:
        rows = await self.outbox.fetch(WATCHED_SQL)
        self.builder.set_watches(load_watches(tuple(r) for r in rows))

    # -- the stream -------------------------------------------------------------------
    async def _stream_loop(self) -> None:
        stream = self.stream
        assert stream is not None
        limit = self.settings.batch_size
        while True:
            frame: XLogData | None = await stream.read()
            while frame is not None:
                await self._take(frame.payload)
                if len(self.ready) >= limit:  # a big transaction goes out in batches
                    break
                frame = stream.pending()
            if self.ready or self.ready_lsn > self.unconfirmed.lsn:
                await self._publish()
            if self.txn_lsn is None and stream.sent_end > self.unconfirmed.lsn:
                # Every frame before the server's last keepalive is handled and published.
                self.unconfirmed.lsn = stream.sent_end

    async def _take(self, payload: bytes) -> None:
        """One pgoutput message. Begin and Commit, two of every transaction's three or more
        messages, are read in place (decoding them into objects was a tenth of the
        listener's time); the others are decoded and built into events."""
        kind = payload[0]
        if kind == BEGIN:
            self.txn_lsn, self.txn_events = _LSN.unpack_from(payload, 1)[0], 0
            return
        if kind == COMMIT:
            _flags, _commit_lsn, end_lsn, commit_ts = _COMMIT.unpack_from(payload, 1)
            self.txn_lsn, self.ready_lsn = None, end_lsn
            self.ready_at = commit_ts / 1e6 + PG_EPOCH_UNIX
            return
        message = pgoutput.decode(payload)
        if isinstance(message, pgoutput.LogicalMessage) and message.prefix == WATCH_PREFIX:
            await self._load_watches()  # declarations changed in this transaction
            return
        if isinstance(message, pgoutput.Relation):
            await self._load_watches()  # a table's columns may have changed ("changed")
        items = self.builder.feed(message)
        if not items:
            return
        if self.txn_lsn is None:
            raise pgoutput.DecodeError("a change outside a transaction")
        for item in items:
            if isinstance(item, Invalid):
                self.metrics.events.labels("invalid").inc()
                log.warning("dropping a WAL change: %s", item.reason)
                continue
            if item.outbox_id is not None:  # a row of pgcast.outbox: its id, as drained
                self.ready.append(OutboxRow(item.outbox_id, item.channel, item.data.decode()))
                self.ready_outbox_ids.append(item.outbox_id)
                continue
            # The id names the event for good: its commit's LSN and its place in it, fixed
            # width so that Redis compares them as text (publish.lua).
            event_id = f"{self.txn_lsn:020d}.{self.txn_events:010d}"
            self.txn_events += 1
            self.ready.append(OutboxRow(event_id, item.channel, item.data.decode()))

    async def _publish(self) -> None:
        rows = await self._with_watermarks(await self._unpublished(self.ready))
        marks = await self.drainer.publish_rows(rows) if rows else {}
        pending = self.unconfirmed
        pending.marks.update(marks)
        pending.outbox_ids.extend(self.ready_outbox_ids)
        pending.lsn, pending.committed_at = self.ready_lsn, self.ready_at
        self.ready, self.ready_outbox_ids = [], []

    async def _unpublished(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Without the outbox rows that have left the table: a row leaves it only once
        published (by this capture, its predecessor, or an outbox leader between two WAL
        leaders), however long ago; Redis' ids zset remembers only the recent ones."""
        ids = [r.id for r in rows if isinstance(r.id, int)]
        if not ids:
            return rows
        present = {r[0] for r in await self.outbox.fetch(_PRESENT_SQL, ids)}
        if len(present) < len(ids):
            self.metrics.events.labels("duplicate").inc(len(ids) - len(present))
        return [r for r in rows if not isinstance(r.id, int) or r.id in present]

    async def _with_watermarks(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Each row with its channel's watermark from Postgres, where this leader has not
        published to the channel yet (its own knowledge is newer)."""
        if not self.drainer.redis_changed:
            return rows  # the Redis the last leader recorded: it cannot be behind its marks
        unknown = {r.channel for r in rows if self.publisher.mark(r.channel) is None}
        if not unknown:
            return rows
        found = await self.outbox.watermarks(sorted(unknown))
        if not found:
            return rows
        return [
            r._replace(mark_epoch=found[r.channel][0], mark_top=found[r.channel][1])
            if r.channel in found
            else r
            for r in rows
        ]

    # -- confirmation -----------------------------------------------------------------
    async def _confirm_loop(self) -> None:
        interval = self.settings.wal_confirm_interval
        while True:
            await asyncio.sleep(interval)
            await self.confirm()

    async def confirm(self) -> None:
        """Record what Redis holds (watermarks, decoded outbox rows deleted), then let the
        slot move past it."""
        pending = self.unconfirmed
        if pending.lsn <= self.confirmed or self.stream is None:
            self._lag(pending)
            return
        self.unconfirmed = _Unconfirmed(pending.lsn, pending.committed_at)
        await self.outbox.record(Published(pending.outbox_ids, pending.marks))
        self.stream.confirm(pending.lsn)
        self.confirmed = pending.lsn
        self._lag(pending)

    def _lag(self, pending: _Unconfirmed) -> None:
        if pending.committed_at:
            self.metrics.wal_lag_seconds.set(max(0.0, time.time() - pending.committed_at))

    async def sample_lag(self) -> None:
        """Slot lag in bytes for /metrics (the liveness loop calls it)."""
        rows = await self.outbox.fetch(_LAG_SQL, self.settings.wal_slot)
        self.metrics.wal_lag_bytes.set(float(rows[0][0]) if rows else 0.0)
