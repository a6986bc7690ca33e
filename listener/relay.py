"""The leader's drain: outbox rows -> Redis, in id order, deleted only once published.

``Drainer.run()`` claims the Redis fence for its epoch, drains at once (catch-up
after an acquisition), then whenever its WakeCycle says (a NOTIFY, a poll): read a
batch, publish it (retrying while Redis is down, rows kept), delete it (with the
next read, or at once before a long wait). Rows
whose channel name is invalid are logged, counted and deleted so they cannot
wedge the drain; so are control rows (channel CONTROL_MARKER, listener/control.py)
that no gateway could apply, the others are published in their place in the batch.
A fenced publish means a newer leader exists: raise Fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeVar

from listener.control import InvalidControl, parse_control
from listener.leader import LeadershipEnded
from listener.metrics import ListenerMetrics
from listener.outbox import NOTHING_PUBLISHED, Outbox, OutboxRow, Published
from listener.publisher import Event, Mark, PublishResult, ReplicasBehindError
from listener.wakeup import WakeCycle
from pgcast import redis_connect
from pgcast.backoff import Backoff
from pgcast.cancellation import raise_if_cancelled
from pgcast.channels import channel_error
from pgcast.keys import CONTROL_MARKER

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Stopping, how long the leader tries to delete the rows it published last.
STOP_DELETE_TIMEOUT = 1.0


class _Batch(NamedTuple):
    """Outbox rows as published: events (controls among them, in their place), each
    control's index in events and op, the channels seen and their watermarks."""

    events: list[Event]
    controls: list[tuple[int, str]]
    channels: dict[str, str | None]  # channel -> why it is invalid, None when valid
    watermarks: dict[str, Mark]


class Fenced(LeadershipEnded):
    """A newer leader has raised the Redis fence past this leader's epoch."""


class PublisherLike(Protocol):
    async def claim_fence(self, leader_epoch: int) -> bool: ...

    async def publish(
        self,
        leader_epoch: int,
        events: Sequence[Event],
        watermarks: Mapping[str, Mark] | None = None,
        renew: Collection[str] = (),
    ) -> list[PublishResult]: ...

    def mark(self, channel: str) -> Mark | None: ...

    async def identity(self) -> str | None: ...


class RetryingPublisher:
    """Publishes for one epoch; a failed Redis call is retried with backoff until it works."""

    def __init__(
        self, publisher: PublisherLike, epoch: int, metrics: ListenerMetrics, backoff_max: float
    ) -> None:
        self.publisher = publisher
        self.epoch = epoch
        self.metrics = metrics
        self.backoff = Backoff(base=min(0.05, backoff_max), cap=backoff_max)
        self.failing = False
        # Runs before each retry after a failure (the connection may lead elsewhere now).
        self.before_retry: Callable[[], Awaitable[None]] | None = None

    async def claim(self) -> None:
        if not await self._retried(lambda: self.publisher.claim_fence(self.epoch)):
            raise Fenced(f"epoch {self.epoch} is older than the Redis fence")

    async def publish(
        self,
        events: Sequence[Event],
        watermarks: Mapping[str, Mark] | None = None,
        renew: Collection[str] = (),
    ) -> list[PublishResult]:
        return await self._retried(lambda: self._timed_publish(events, watermarks, renew))

    def mark(self, channel: str) -> Mark | None:
        return self.publisher.mark(channel)

    async def identity(self) -> str | None:
        return await self._retried(self.publisher.identity)

    async def _timed_publish(
        self,
        events: Sequence[Event],
        watermarks: Mapping[str, Mark] | None,
        renew: Collection[str],
    ) -> list[PublishResult]:
        with self.metrics.batches.time():
            return await self.publisher.publish(self.epoch, events, watermarks, renew)

    async def _retried(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` until it works (Redis unreachable: keep the lock and the events).

        Every Redis call of a leader passes here, so this is where a cancellation that
        redis-py swallowed or swapped for an error is raised (pgcast.cancellation).
        """
        while True:
            try:
                if self.failing and self.before_retry is not None:
                    await self.before_retry()
                result = await call()
            except Exception as exc:
                raise_if_cancelled()
                await self._failed(exc)
                continue
            raise_if_cancelled()
            self._recovered()
            return result

    async def _failed(self, exc: Exception) -> None:
        replicas = isinstance(exc, ReplicasBehindError)
        self.metrics.errors.labels("replicas" if replicas else "redis").inc()
        delay = self.backoff.next()
        if not self.failing:
            what = (
                "Redis replicas are behind; holding the batch"
                if replicas
                else "Redis publish failed"
            )
            log.warning("%s, retrying until it works: %s", what, redis_connect.reason(exc))
        else:
            log.debug(
                "Redis still failing (%s); next try in %.2fs", redis_connect.reason(exc), delay
            )
        self.failing = True
        await asyncio.sleep(delay)

    def _recovered(self) -> None:
        if self.failing:
            log.info("Redis publishing works again")
        self.failing = False
        self.backoff.reset()


class Drainer:
    """Moves outbox rows to Redis for the leader of one epoch, paced by its WakeCycle."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: RetryingPublisher,
        metrics: ListenerMetrics,
        cycle: WakeCycle,
        *,
        batch_size: int,
        vacuum_every: int = 0,
        hold_batch: float = 0.0,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.metrics = metrics
        self.cycle = cycle
        self.batch_size = batch_size
        self.vacuum_every = vacuum_every
        self.hold_batch = hold_batch
        self.deleted = 0  # rows deleted since the last VACUUM
        # The last batch, published but not yet deleted: the next fetch deletes it and
        # records its channels' watermarks in the same statement (one round trip less per
        # poll). Should the leader die first, its successor publishes it again and the Redis
        # script skips it as duplicates.
        self.published = NOTHING_PUBLISHED
        # Rows up to this id were waiting when this leader found another Redis than its
        # predecessor recorded: their channels start new epochs (see _adopt_redis).
        self.renew_upto = 0
        self.redis_identity: str | None = None
        # Whether Redis may have gone back behind what an earlier leader recorded (another
        # Redis than recorded, or one that cannot say): only then are Postgres' watermarks
        # worth reading for events that come without them (WAL capture).
        self.redis_changed = True

    def wake_up(self) -> None:
        """Called from the (sync) LISTEN callback: never blocks, never awaits."""
        self.metrics.wakeups.inc()
        self.cycle.notified()

    async def start(self) -> None:
        """Claim the Redis fence for this epoch and adopt Redis (before any publish)."""
        await self.publisher.claim()
        await self._adopt_redis()
        self.publisher.before_retry = self._follow_redis

    async def run(self) -> None:
        await self.start()
        await self.serve()

    async def serve(self) -> None:
        """Drain whenever the WakeCycle says, forever (after start); stopped, it deletes what
        it published (else the next leader publishes it again, de-duplicated, for nothing)."""
        try:
            while True:
                self.cycle.clear()
                drained = await self.drain()
                if await self.cycle.settle(drained):
                    await self.drain()
                # What this drain published is deleted by the next one (IDLE_DELETE at most).
                await self.cycle.wait(rows_to_delete=bool(self.published.ids))
        finally:
            if self.published.ids:
                # Best effort: the connection may be lost or busy with a cancelled query.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_DELETE_TIMEOUT):
                        await self.delete_published()

    async def _adopt_redis(self) -> None:
        """A new leader checks that Redis is the one its predecessor last published to.

        Another one (restarted, failed over, restored) may have lost the batch the
        predecessor had in flight, and publishing those rows again could number them in
        another order than clients saw (a row of a lower id may have committed since): so
        the channels of every row waiting now start new epochs, and clients are told.
        """
        current = await self.publisher.identity()
        if current is None:
            return  # INFO is not allowed here: nothing to compare
        recorded = await self.outbox.redis_identity()
        if recorded is not None and recorded != current:
            self.renew_upto = await self.outbox.max_id()
            if self.renew_upto:
                log.warning(
                    "Redis is not the one the last leader published to (%s, was %s): the"
                    " channels of outbox rows up to id %d start new epochs",
                    current,
                    recorded,
                    self.renew_upto,
                )
        if recorded != current:
            await self.outbox.record_redis_identity(current)
        self.redis_identity = current
        self.redis_changed = recorded is not None and recorded != current

    def _to_renew(self, events: list[Event]) -> set[str]:
        """Channels of the rows that were waiting when this leader found another Redis."""
        if not self.renew_upto:
            return set()  # the common case: nothing to look at
        first = events[0].dedupe_id if events else None
        if isinstance(first, int) and first > self.renew_upto:
            self.renew_upto = 0  # ordered by id: every row waiting then is published
            return set()
        upto = self.renew_upto
        return {e.channel for e in events if isinstance(e.dedupe_id, int) and e.dedupe_id <= upto}

    async def _follow_redis(self) -> None:
        """Before a retry: record which Redis this leader publishes to now (a failover), so
        that a successor can tell (this leader itself retries its batch as it was)."""
        current = await self.publisher.publisher.identity()
        if current is not None and current != self.redis_identity:
            await self.outbox.record_redis_identity(current)
            self.redis_identity = current
            self.redis_changed = True

    async def drain(self) -> int:
        """Publish until the outbox is empty; returns how many rows left it."""
        total = 0
        while True:
            rows = await self.outbox.fetch_batch(self.batch_size, self.published)
            self.published = NOTHING_PUBLISHED
            if rows:
                await self._publish_batch(rows)
                total += len(rows)
            if len(rows) < self.batch_size:
                if total:
                    log.debug("drained %d outbox rows", total)
                await self._vacuum(total)
                return total

    async def delete_published(self) -> None:
        if self.published.ids:
            await self.outbox.delete(self.published)
            self.published = NOTHING_PUBLISHED

    async def _vacuum(self, deleted: int) -> None:
        """VACUUM the outbox every ``vacuum_every`` deleted rows. Every poll reads the oldest
        rows by id, and dead index entries there make each poll slower until a vacuum
        (autovacuum may come only once a minute: 600,000 dead rows at 10,000 events/s)."""
        self.deleted += deleted
        if self.vacuum_every and self.deleted >= self.vacuum_every:
            self.deleted = 0
            await self.delete_published()
            await self.outbox.vacuum()
            await self.outbox.prune_watermarks()

    async def _publish_batch(self, rows: list[OutboxRow]) -> None:
        marks = await self.publish_rows(rows)
        self.published = Published([row.id for row in rows if isinstance(row.id, int)], marks)

    async def publish_rows(self, rows: list[OutboxRow]) -> dict[str, tuple[str, int]]:
        """Publish ``rows`` (outbox rows, or events decoded from the WAL) in order; returns
        Redis' state of their channels after it, for the watermarks."""
        batch = self._events(rows)
        if self.hold_batch > 0:
            # Test hook (PGCAST_DEBUG_HOLD_BATCH): a batch read but not yet published.
            log.info(
                "holding a batch of %d rows for %.2fs before publishing", len(rows), self.hold_batch
            )
            await asyncio.sleep(self.hold_batch)
        events = batch.events
        renew = self._to_renew(events)
        results = await self.publisher.publish(events, batch.watermarks, renew) if events else []
        self._count(batch, results)
        marks = {}
        for channel in batch.channels:
            mark = self.publisher.mark(channel)
            if mark is not None:
                marks[channel] = (mark.epoch, mark.top)
        return marks

    def _events(self, rows: list[OutboxRow]) -> _Batch:
        """The rows to publish, in id order; invalid ones are logged, counted and left out."""
        batch = _Batch([], [], {}, {})
        checked = batch.channels  # a batch holds few distinct channels
        for row in rows:
            if row.channel in checked:
                reason = checked[row.channel]
            else:
                reason = checked[row.channel] = channel_error(row.channel)
                if row.mark_epoch is not None and row.mark_top is not None:
                    batch.watermarks[row.channel] = Mark(row.mark_epoch, row.mark_top)
            if reason is None:
                batch.events.append(Event(row.channel, row.data.encode(), row.id))
            elif row.channel == CONTROL_MARKER:
                self._add_control(row, batch)
            else:
                self._invalid(row.id, f"invalid channel {row.channel[:300]!r}: {reason}")
        return batch

    def _count(self, batch: _Batch, results: list[PublishResult]) -> None:
        """Count the results (controls by op, not as events); raise Fenced when fenced."""
        statuses = Counter(result.status for result in results)
        fenced = statuses["fenced"]
        for index, op in batch.controls:
            status = results[index].status
            statuses[status] -= 1
            if status == "published":
                self.metrics.controls.labels(op).inc()
                log.debug("published control %s, id %s", op, batch.events[index].dedupe_id)
        for status, count in statuses.items():
            if count:
                self.metrics.events.labels(status).inc(count)
        if fenced:
            log.error(
                "publish refused: fenced (a newer leader holds epoch > %d)", self.publisher.epoch
            )
            raise Fenced(f"epoch {self.publisher.epoch} was fenced by a newer leader")

    def _add_control(self, row: OutboxRow, batch: _Batch) -> None:
        try:
            control = parse_control(row.data)
        except InvalidControl as exc:
            self._invalid(row.id, f"invalid control: {exc}")
            return
        batch.controls.append((len(batch.events), control.op))
        batch.events.append(Event(CONTROL_MARKER, control.json, row.id))

    def _invalid(self, row_id: int | str, why: str) -> None:
        self.metrics.events.labels("invalid").inc()
        log.warning("dropping event %s: %s", row_id, why)
